"""`harness sweep FILE`: run algorithms x seeds x presets (x a grid) until all have finished."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_command(
        spec_file: Path = typer.Argument(..., help="sweep YAML (see docs/scaling.md)"),
        workers: int = typer.Option(None, "--workers", "-w", help="runs at a time (local executor)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and their state only"),
    ) -> None:
        """Run every (algorithm, seed, preset, grid point) of SPEC_FILE that has not finished yet."""
        from harness.app.sweep import expand, load_spec, run_sweep

        spec = load_spec(spec_file)
        if workers:
            spec.workers = workers
        if dry_run:
            for job in expand(spec):
                done = (Path(spec.output_dir) / job.run_id / "summary.json").exists()
                print(f"{'finished' if done else 'to run  '}  {job.run_id}  {' '.join(job.command(spec.output_dir)[3:])}")
            return
        outcome = run_sweep(spec, echo=print)
        print(f"finished {len(outcome['finished'])}, already done {len(outcome['skipped'])}, "
              f"failed {len(outcome['failed'])}")
        if outcome["failed"]:
            print("re-run the same command to retry the failed runs")
            raise typer.Exit(1)
