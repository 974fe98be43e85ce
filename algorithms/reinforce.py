"""REINFORCE with a moving-average baseline (Williams 1992), the whole response as one action.

    A = r(x, y) - b,   loss = mean( -A * logp_theta(y) ),   r = score - beta * kl (the backbone's reward)
b is an exponential moving average of the mean rewards of past batches (the first batch, having no past, uses its
own mean), updated after the advantages of each batch are taken. One sample per prompt, one epoch per batch.
The batch's mean reward is over every rank's batch (batch_statistics "global", the default; "per_process": each
process's own shard, whose baseline then differs by process).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.contract import RECORDED_WHEN_SET
from harness.core.objective import BATCH_STATISTICS, check_choice, masked_mean, scope


@register("reinforce")
@dataclass
class Reinforce(Algorithm):
    """REINFORCE: sequence-level policy gradient with a moving-average reward baseline"""

    samples_per_prompt: int = 1
    epochs: int = 1
    minibatches: int = 1
    baseline_decay: float = 0.9
    """b <- decay * b + (1 - decay) * mean reward of the batch"""
    batch_statistics: str = field(default="global", metadata=RECORDED_WHEN_SET)
    """the batch's mean reward over every rank's batch (global), or over each process's shard (per_process)"""

    def __post_init__(self):
        check_choice("batch_statistics", self.batch_statistics, BATCH_STATISTICS)
        self.baseline: float | None = None  # state, not a setting

    def prepare(self, batch: Batch) -> Advantages:
        mean = masked_mean(batch.reward, sum_over_ranks=scope(self.batch_statistics, batch.sum_over_ranks)).item()
        baseline = mean if self.baseline is None else self.baseline
        self.baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * mean
        return Advantages(batch.reward - baseline)

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        advantages = batch.prepared(Advantages).advantages  # [P, 1]
        return -(advantages * new.logp).mean(), {"reinforce/baseline": self.baseline,
                                                  "reinforce/advantage_abs": advantages.abs().mean().item()}
