"""Work done in one process's share of a run (harness.core.distributed.Runtime), on the tiny-test preset.

Run plainly it is one process; tests/test_distributed.py also runs it under `accelerate launch` with the shipped
DDP and FSDP configs (2 CPU processes, gloo) and compares what each rank wrote.
  dpo_step: one DPO iteration on fixed preference pairs (nothing sampled), so the data-parallel step must equal the
            one-process step on the same global batch;
  round_trip: PPO (critic, 4 epochs) iteration 1, checkpoint, iteration 2; then fresh models restored from the
            checkpoint redo iteration 2, which must give the same numbers.
Usage: python -m tests.distributed.worker CACHE_DIR OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from algorithms.base import make
from harness.core import checkpoint
from harness.app.config import resolve
from harness.core.distributed import Runtime
from harness.core.experience import Budget
from harness.core.models import load_models
from harness.tasks import resolve_paths
from harness.tasks.tldr import load_task
from harness.core.train import Trainer


def trainer_for(algo: str, cache: str, runtime: Runtime, data, **train) -> Trainer:
    cfg = resolve("tiny-test", {"algo": algo, "model": {"cache_dir": cache},
                                "train": {"prompts_per_iteration": 16, "iterations": 2, **train}})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None),
                         needs_critic=make(algo).needs_critic, device=runtime.device)
    runtime.prepare_models(models)
    examples = data.pref_train if algo == "dpo" else data.sft_train
    return Trainer(cfg, make(algo), models, examples, Budget(), runtime)


def dpo_step(cache: str, out: Path, runtime: Runtime, data) -> None:
    trainer = trainer_for("dpo", cache, runtime, data, lr=1e-3, iterations=1)
    seen: list[str] = []
    next_prompts = trainer.next_prompts
    trainer.next_prompts = lambda: [seen.append(ex.prompt) or ex for ex in next_prompts()]
    line = trainer.iteration(1)
    weights = runtime.full_state_dict(trainer.models.policy)  # FSDP: gathered on rank 0 only
    out.mkdir(parents=True, exist_ok=True)
    if weights:
        torch.save({k: v.detach().clone() for k, v in weights.items()}, out / f"weights-{runtime.rank}.pt")
    (out / f"dpo-{runtime.rank}.json").write_text(json.dumps({"line": line, "prompts": seen,
                                                              "world_size": runtime.world_size}))


def round_trip(cache: str, out: Path, runtime: Runtime, data) -> None:
    first = trainer_for("ppo", cache, runtime, data)
    first.iteration(1)
    checkpoint.save(out / "checkpoints", 1, first, runtime)
    straight = first.iteration(2)
    second = trainer_for("ppo", cache, runtime, data)
    start = checkpoint.restore(out / "checkpoints", second, runtime)
    resumed = second.iteration(2)
    (out / f"round-trip-{runtime.rank}.json").write_text(json.dumps({"start": start, "straight": straight,
                                                                     "resumed": resumed}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    runtime, data = Runtime.from_environment(), load_task("synthetic")
    dpo_step(sys.argv[1], Path(sys.argv[2]), runtime, data)
    round_trip(sys.argv[1], Path(sys.argv[2]), runtime, data)
