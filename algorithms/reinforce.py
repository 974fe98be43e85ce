"""REINFORCE with a moving-average baseline (Williams 1992), the whole response as one action.

    A = r(x, y) - b,   loss = mean( -A * logp_theta(y) ),   r = score - beta * kl (the backbone's reward)
b is an exponential moving average of the mean rewards of past batches (the first batch, having no past, uses its
own mean), updated after the advantages of each batch are taken. One sample per prompt, one epoch per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from algorithms.base import Algorithm, register
from harness.batch import Batch, PolicyOutput


@register("reinforce")
@dataclass
class Reinforce(Algorithm):
    """REINFORCE: sequence-level policy gradient with a moving-average reward baseline"""

    samples_per_prompt: int = 1
    epochs: int = 1
    minibatches: int = 1
    baseline_decay: float = 0.9
    """b <- decay * b + (1 - decay) * mean reward of the batch"""

    def __post_init__(self):
        self.baseline: float | None = None  # state, not a setting

    def prepare(self, batch: Batch) -> dict[str, Tensor]:
        mean = batch.reward.mean().item()
        baseline = mean if self.baseline is None else self.baseline
        self.baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * mean
        return {"advantages": batch.reward - baseline}

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        advantages = batch.extras["advantages"]  # [P, 1]
        return -(advantages * new.logp).mean(), {"reinforce/baseline": self.baseline,
                                                  "reinforce/advantage_abs": advantages.abs().mean().item()}
