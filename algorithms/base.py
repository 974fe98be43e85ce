"""The optimizer contract and registry.

An optimizer declares what it needs from the backbone and computes only what is unique to it:
  - `samples_per_prompt`, `epochs`, `minibatches`: how the backbone samples and iterates;
  - `data`: "online" (K samples from pi_t), "online_with_reference" (K samples from pi_t, then the data set's
    human reference as response K+1, scored like a sample) or "preference_pairs" (the task's offline
    (chosen, rejected) pairs, nothing sampled);
  - `needs_critic`: the backbone loads a critic (from the reward model) and passes its values;
  - `needs_preference`: the backbone fills `batch.preference[p, i, j] = P(y_i > y_j)` from its preference model;
  - `mask_post_eos`: True counts log-probs (and values) up to the first EOS; False counts every generated token
    (the sampled tokens after EOS too, as in the REBEL authors' PPO); `batch.counted_mask` says which;
  - `logprob_temperature`: None means the sampling temperature (online), 1.0 for offline losses such as DPO;
  - `prepare(batch)`: once per iteration, before the epochs (advantages, baselines, labels), returns tensors
    indexed by prompt that travel with the batch through shuffling as `batch.extras`;
  - `loss(batch, new)`: the optimizer's math on a minibatch; returns (scalar loss, detached float stats);
  - state kept across iterations (a moving baseline) lives in plain attributes set in `__post_init__`: checkpoints
    save and restore them (`state_dict`), so nothing else is needed for exact resume.
Generation, log-probs, rewards, KL, masks and budgets are the backbone's; an optimizer never computes them
(tests/algorithms/test_contract.py enforces it). The helpers below are plain tensor arithmetic shared by losses.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
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
    data: ClassVar[Literal["online", "online_with_reference", "preference_pairs"]] = "online"
    needs_critic: ClassVar[bool] = False
    needs_preference: ClassVar[bool] = False
    mask_post_eos: ClassVar[bool] = True
    logprob_temperature: ClassVar[float | None] = None

    def prepare(self, batch: Batch) -> dict[str, Tensor]:
        return {}

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return dataclasses.asdict(self)

    def state_dict(self) -> dict:
        """State an optimizer keeps across iterations (plain attributes that are not settings, such as a moving
        baseline): saved in checkpoints so that a resumed run continues exactly."""
        settings = {f.name for f in dataclasses.fields(self)}
        return {k: v for k, v in vars(self).items() if k not in settings}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over the True positions of mask (same shape)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the True positions of mask (population variance); shift_mean=False keeps the mean."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    white = (x - mean) * torch.rsqrt(var + eps)
    return white if shift_mean else white + mean


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
