"""`harness bench`: time and memory of every optimizer (and of TRL's RLOO and DPO trainers) on one preset."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.config import parse_overrides, resolve


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_command(
        preset: str = typer.Option("tiny", "--preset", "-p", help="model/data preset (see `harness list`)"),
        iterations: int = typer.Option(3, "--iterations", "-n", min=1, help="timed iterations per optimizer"),
        warmup: int = typer.Option(2, "--warmup", min=1, help="untimed (memory-profiled) iterations before timing"),
        prompts: Optional[int] = typer.Option(None, "--prompts", min=1, help="prompts per iteration (default: preset)"),
        out: Path = typer.Option(Path("results/bench"), "--out", "-o", help="where bench.json and bench.png go"),
        algo: list[str] = typer.Option([], "--algo", "-a", help="only these optimizers (repeatable; default: all)"),
        trl: bool = typer.Option(True, "--trl/--no-trl", help="also time TRL's RLOOTrainer and DPOTrainer"),
        rounds: int = typer.Option(2, "--rounds", min=1, help="alternated rounds of ours vs TRL"),
        checkpointing: str = typer.Option("both", "--checkpointing", help="activation checkpointing in the TRL "
                                          "comparison, for both contenders: off, on or both"),
        no_optimizers: bool = typer.Option(False, "--trl-only", help="only the TRL comparison (no per-optimizer table)"),
        threads: int = typer.Option(2, "--threads", min=1, help="torch CPU threads"),
        set_: list[str] = typer.Option([], "--set", help="override any config key: generation.max_new_tokens=53"),
    ) -> None:
        """Seconds per iteration (generation / scoring / update) and peak memory per optimizer, in one process."""
        import torch
        from rich.console import Console

        from algorithms.base import make
        from harness.app.bench import CHECKPOINTING, run_bench, table
        from harness.errors import UserError

        torch.set_num_threads(threads)
        overrides = parse_overrides(set_)
        overrides.setdefault("train", {})["iterations"] = iterations + warmup
        if prompts is not None:
            overrides["train"]["prompts_per_iteration"] = prompts
        cfg = resolve(preset, overrides)
        for name in algo:
            make(name)  # unknown names fail here, in one line
        if checkpointing not in CHECKPOINTING:
            raise UserError(f"--checkpointing must be one of {', '.join(CHECKPOINTING)}, got {checkpointing!r}")
        console = Console(stderr=True)
        result = run_bench(cfg, iterations, warmup, [] if no_optimizers else list(algo) or None, trl, out,
                           log=console.print, rounds=rounds, checkpointing=checkpointing)
        Console(width=max(220, Console().width)).print(table(result))
        console.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
