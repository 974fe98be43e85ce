"""The optimizer contract and registry.

An optimizer declares what it needs from the backbone and computes only what is unique to it:
  - `samples_per_prompt`, `epochs`, `minibatches`: how the backbone samples and iterates;
  - `data`: "online" (sampled from pi_t) or "preference_pairs" (the task's offline (chosen, rejected) pairs);
  - `needs_critic`: the backbone loads a critic (from the reward model) and passes its values;
  - `logprob_temperature`: None means the sampling temperature (online), 1.0 for offline losses such as DPO;
  - `prepare(batch)`: once per iteration, before the epochs (advantages, baselines, labels), returns tensors
    indexed by prompt that travel with the batch through shuffling as `batch.extras`;
  - `loss(batch, new)`: the optimizer's math on a minibatch; returns (scalar loss, detached float stats).
Generation, log-probs, rewards, KL, masks and budgets are the backbone's; an optimizer never computes them.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from harness.batch import Batch, PolicyOutput
from harness.errors import UserError

REGISTRY: dict[str, type["Algorithm"]] = {}


@dataclass
class Algorithm:
    samples_per_prompt: int = 1
    """responses sampled per prompt (pairs and groups are kept together)"""
    epochs: int = 1
    """passes over each iteration's batch, each with a fresh permutation of prompts"""
    minibatches: int = 1
    """optimizer steps per epoch"""

    name: ClassVar[str] = ""
    data: ClassVar[Literal["online", "preference_pairs"]] = "online"
    needs_critic: ClassVar[bool] = False
    logprob_temperature: ClassVar[float | None] = None

    def prepare(self, batch: Batch) -> dict[str, Tensor]:
        return {}

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return dataclasses.asdict(self)


def register(name: str):
    def add(cls: type[Algorithm]) -> type[Algorithm]:
        if name in REGISTRY:
            raise ValueError(f"algorithm {name!r} is registered twice ({REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def _discover() -> None:
    import algorithms

    for info in pkgutil.iter_modules(algorithms.__path__):
        if info.name != "base":
            importlib.import_module(f"algorithms.{info.name}")


def names() -> list[str]:
    _discover()
    return sorted(REGISTRY)


def make(name: str, args: dict | None = None) -> Algorithm:
    """The named optimizer with `args` overriding its defaults; one-line errors for unknown names and keys."""
    valid = names()
    if name not in REGISTRY:
        raise UserError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(valid)}")
    cls = REGISTRY[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(args or {}) - known)
    if unknown:
        raise UserError(f"algorithm {name!r} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}")
    try:
        return cls(**(args or {}))
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid settings for {name!r}: {e}") from None
