"""One DPO iteration on the tiny-test preset, in this process's share of the run (harness.distributed.Runtime).

Run plainly it is one process; tests/test_distributed.py also runs it under
`accelerate launch --multi_gpu --num_processes 2` (gloo on CPU) and compares. DPO reads fixed preference pairs
(nothing is sampled), so the data-parallel step must equal the one-process step on the same global batch.
Usage: python -m tests.distributed.dpo_step CACHE_DIR OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from algorithms.base import make
from harness.config import resolve
from harness.distributed import Runtime
from harness.experience import Budget
from harness.models import load_models
from harness.tasks.tldr import load_task
from harness.train import Trainer


def dpo_step(cache: str, out: Path, runtime: Runtime) -> None:
    cfg = resolve("tiny-test", {"algo": "dpo", "model": {"cache_dir": cache},
                                "train": {"prompts_per_iteration": 16, "lr": 1e-3, "iterations": 1}})
    models = load_models(cfg.model, log=lambda *a: None, device=runtime.device)
    trainer = Trainer(cfg, make("dpo"), models, load_task("synthetic").pref_train, Budget(), runtime)
    seen: list[str] = []
    next_prompts = trainer.next_prompts
    trainer.next_prompts = lambda: [seen.append(ex.prompt) or ex for ex in next_prompts()]
    line = trainer.iteration(1)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({n: p.detach().clone() for n, p in models.policy.named_parameters()}, out / f"weights-{runtime.rank}.pt")
    (out / f"rank-{runtime.rank}.json").write_text(json.dumps({"line": line, "prompts": seen,
                                                               "world_size": runtime.world_size}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    dpo_step(sys.argv[1], Path(sys.argv[2]), Runtime.from_environment())
