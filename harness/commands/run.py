"""`harness run`: train one optimizer on one task and evaluate it."""
from __future__ import annotations

from typing import Optional

import typer

from harness.app.config import parse_overrides, resolve


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        algo: str = typer.Option("rebel", "--algo", "-a", help="optimizer name (see `harness list`)"),
        task: Optional[str] = typer.Option(None, "--task", "-t", help="task name (default: the preset's)"),
        preset: Optional[str] = typer.Option(None, "--preset", "-p", help="model/data preset (see `harness list`; "
                                             "default: the task's own, tiny for tldr, arith for arith and gsm8k)"),
        seed: int = typer.Option(0, "--seed", "-s"),
        iterations: Optional[int] = typer.Option(None, "--iterations", "-n", help="training iterations"),
        source: Optional[str] = typer.Option(None, "--source", help="data: auto | hub | synthetic | synthetic-hard | DIR"),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="parent of the run directory"),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="name of the run directory"),
        set_: list[str] = typer.Option([], "--set", help="override any config key: train.lr=1e-4, algo.eta=0.5"),
        dry_run: bool = typer.Option(False, "--dry-run", help="resolve, check availability, estimate memory; no training"),
    ) -> None:
        """Train ALGO on TASK with PRESET and evaluate it; writes a run directory."""
        from harness.app.runner import run

        overrides = parse_overrides(set_)
        overrides.update({"algo": algo, "seed": seed})
        if task is not None:
            overrides.setdefault("task", {})["name"] = task
        if iterations is not None:
            overrides.setdefault("train", {})["iterations"] = iterations
        if source is not None:
            overrides.setdefault("task", {})["source"] = source
        if output_dir is not None:
            overrides["output_dir"] = output_dir
        if run_id is not None:
            overrides["run_id"] = run_id
        from harness.app import image_config

        if image_config.is_image_preset(preset) or (preset is None and task is not None and _image_task(task)):
            from harness.app.image_run import command  # the image task's own runs (docs/image.md)

            raise typer.Exit(command(preset or "image-tiny", overrides, source, dry_run))
        if preset is None:
            from harness import tasks

            preset = tasks.get(task).preset if task is not None else "tiny"
        cfg = resolve(preset, overrides)
        if dry_run:
            from harness.app.plan import dry_run as make_plan, render

            plan = make_plan(cfg)
            print(render(cfg, plan))
            raise typer.Exit(1 if plan.problems else 0)
        run(cfg)


def _image_task(name: str) -> bool:
    from harness import tasks

    task = tasks.find(name)
    return task is not None and task.suite == "image"
