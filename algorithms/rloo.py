"""RLOO: REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024), k samples per prompt.

    A_i = r_i - mean_{j != i} r_j        (r = score - beta * kl, the backbone's sequence-level reward)
    loss = mean( max(-A_i rho_i, -A_i clip(rho_i, 1 - eps, 1 + eps)) ),   rho_i = pi_theta(y_i) / pi_t(y_i)
The ratio is 1 on the first pass over a batch, where this is plain -A_i * logp_theta(y_i) in value and gradient;
the clip matters from the second epoch (or minibatch) on. `rloo` has k = 2; `rloo_k4` (or algo.samples_per_prompt=4)
has k = 4. One update per batch by default: the paper's hyperparameter table lists inner epochs (4) only for PPO,
iterative DPO and REBEL; `--set algo.epochs=4` is the clipped multi-epoch variant (docs/fidelity.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import clipped_surrogate


def leave_one_out_advantages(reward: Tensor) -> Tensor:
    """[P, k] rewards -> [P, k] advantages r_i - (sum_j r_j - r_i) / (k - 1)."""
    k = reward.shape[1]
    return reward - (reward.sum(1, keepdim=True) - reward) / (k - 1)


def clipped_sequence_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """PPO-style clipped surrogate on sequence-level ratios; [P, k] inputs -> (loss, clip fraction)."""
    loss, clipped = clipped_surrogate(torch.exp(logp_new - logp_old), advantages, clip, clip)
    return loss.mean(), clipped.float().mean()


@register("rloo")
@dataclass
class RLOO(Algorithm):
    """RLOO (k = 2): leave-one-out baseline over k samples per prompt, clipped sequence ratio"""

    samples_per_prompt: int = 2
    """k"""
    epochs: int = 1
    """one update per batch (paper table); more epochs make the clip matter"""
    minibatches: int = 1
    clip: float = 0.2

    def __post_init__(self):
        if self.samples_per_prompt < 2:
            raise ValueError("RLOO's leave-one-out baseline needs samples_per_prompt >= 2")

    def prepare(self, batch: Batch) -> Advantages:
        return Advantages(leave_one_out_advantages(batch.reward))

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        loss, clipfrac = clipped_sequence_loss(new.logp, batch.logp_old_sum, batch.prepared(Advantages).advantages,
                                               self.clip)
        return loss, {"rloo/clipfrac": clipfrac.item()}


@register("rloo_k4")
@dataclass
class RLOOk4(RLOO):
    """RLOO (k = 4): leave-one-out baseline over 4 samples per prompt, clipped sequence ratio"""

    samples_per_prompt: int = 4
