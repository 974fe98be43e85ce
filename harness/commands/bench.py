"""`harness bench`: time and memory of every optimizer (and of TRL's RLOO, GRPO and DPO trainers) on one preset."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.app.config import parse_overrides, resolve


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_command(
        preset: str = typer.Option("tiny", "--preset", "-p", help="model/data preset (see `harness list`)"),
        iterations: int = typer.Option(3, "--iterations", "-n", min=1, help="timed iterations per optimizer"),
        warmup: int = typer.Option(2, "--warmup", min=1, help="untimed (memory-profiled) iterations before timing"),
        prompts: Optional[int] = typer.Option(None, "--prompts", min=1, help="prompts per iteration (default: preset)"),
        out: Path = typer.Option(Path("results/bench"), "--out", "-o", help="where bench.json and bench.png go"),
        algo: list[str] = typer.Option([], "--algo", "-a", help="only these optimizers (repeatable or "
                                       "comma-separated; default: all; with --scaling: rebel,rloo,dpo)"),
        trl: bool = typer.Option(True, "--trl/--no-trl", help="also time TRL's RLOOTrainer, GRPOTrainer and DPOTrainer"),
        rounds: int = typer.Option(2, "--rounds", min=1, help="alternated rounds of ours vs TRL"),
        checkpointing: Optional[str] = typer.Option(None, "--checkpointing", help="activation checkpointing in the "
                                                    "TRL comparison, for both contenders: off, on or both (default: "
                                                    "both; with --scaling: off, and both is not offered)"),
        scaling: Optional[str] = typer.Option(None, "--scaling", help="how cost grows: 'sizes' (seconds and memory "
                                              "per iteration vs model size) or 'prompts' (vs prompts per iteration); "
                                              "writes bench_scaling.json/.md/.png"),
        sizes: Optional[str] = typer.Option(None, "--sizes", help="with --scaling: model sizes, comma-separated: tiny "
                                            "(the preset's), 5m, 20m or HIDDENxLAYERS (random init; default "
                                            "tiny,5m,20m; prompts mode: the first one)"),
        prompt_counts: Optional[str] = typer.Option(None, "--prompt-counts", help="with --scaling prompts: "
                                                    "prompts per iteration, comma-separated (default 8,16,32,64)"),
        no_optimizers: bool = typer.Option(False, "--trl-only", help="only the TRL comparison (no per-optimizer table)"),
        off_policy: bool = typer.Option(False, "--off-policy", help="also time GRPO with stale rollouts and each "
                                        "rollout correction, against on-policy GRPO (docs/objective.md)"),
        threads: int = typer.Option(2, "--threads", min=1, help="torch CPU threads"),
        set_: list[str] = typer.Option([], "--set", help="override any config key: generation.max_new_tokens=53"),
    ) -> None:
        """Seconds per iteration (generation / scoring / update) and peak memory per optimizer, in one process;
        with --scaling, how they grow with the model size or the prompts per iteration (docs/bench.md)."""
        import torch
        from rich.console import Console

        from algorithms.base import make
        from harness.app.bench import CHECKPOINTING, run_bench, table
        from harness.core.errors import UserError

        torch.set_num_threads(threads)
        overrides = parse_overrides(set_)
        overrides.setdefault("train", {})["iterations"] = iterations + warmup
        if prompts is not None:
            overrides["train"]["prompts_per_iteration"] = prompts
        cfg = resolve(preset, overrides)
        algo = [a.strip() for item in algo for a in item.split(",") if a.strip()]
        for name in algo:
            make(name)  # unknown names fail here, in one line
        checkpointing = checkpointing or ("off" if scaling else "both")
        if checkpointing not in CHECKPOINTING:
            raise UserError(f"--checkpointing must be one of {', '.join(CHECKPOINTING)}, got {checkpointing!r}")
        if scaling is None and (sizes or prompt_counts):
            raise UserError("--sizes and --prompt-counts belong to --scaling sizes|prompts")
        console = Console(stderr=True)
        if scaling is not None:
            from harness.app.scaling import run_from_cli

            run_from_cli(cfg, scaling, sizes, prompt_counts, algo, trl, iterations, warmup, rounds, checkpointing,
                         out, console)
            return
        result = run_bench(cfg, iterations, warmup, [] if no_optimizers else list(algo) or None, trl, out,
                           log=console.print, rounds=rounds, checkpointing=checkpointing, off_policy=off_policy)
        Console(width=max(220, Console().width)).print(table(result))
        console.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
