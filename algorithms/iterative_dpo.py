"""Iterative (online) DPO (Algorithm 2 of the REBEL paper; Guo et al. 2024, Xu et al. 2023).

Each iteration samples two responses per prompt from pi_t and labels them by s = sign(r(y) - r(y')); the DPO loss
uses pi_t itself as the reference:
    h = [logp_theta(y) - logp_t(y)] - [logp_theta(y') - logp_t(y')],   loss = mean( -log sigmoid(beta s h) )
Pairs with equal rewards (s = 0) carry no label and are left out of the mean, whose denominator is the labelled
pairs of the whole batch (every rank's, spread over its prompts), whatever the micro-batch. It differs from REBEL
only in regressing on the sign of the reward difference instead of its value.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Batch, PolicyOutput, Prepared
from harness.core.objective import count_share, masked_mean


@dataclass
class LabelledPairs(Prepared):
    share: Tensor  # [P] the labelled pairs of the whole batch (every rank's) spread evenly over its prompts


def iterative_dpo_loss(logp_new: Tensor, logp_old: Tensor, reward: Tensor, beta: float,
                       share: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shapes: [P, 2] summed log-probs and rewards -> ([], signed margins beta * s * h [P]). The mean over the
    labelled pairs divides by the sum of `share` (`LabelledPairs`; None: the pairs labelled here)."""
    sign = (reward[:, 0] - reward[:, 1]).sign()
    log_ratio = logp_new - logp_old
    margin = beta * sign * (log_ratio[:, 0] - log_ratio[:, 1])
    return masked_mean(-F.logsigmoid(margin), sign != 0, count=None if share is None else share.sum()), margin


@register("iterative_dpo")
@dataclass
class IterativeDPO(Algorithm):
    """Iterative DPO: two on-policy samples labelled by the sign of the reward difference, reference = pi_t"""

    samples_per_prompt: int = 2
    epochs: int = 4
    minibatches: int = 1
    beta: float = 0.05

    def __post_init__(self):
        if self.samples_per_prompt != 2:
            raise ValueError("iterative DPO labels pairs: samples_per_prompt must be 2")

    def prepare(self, batch: Batch) -> LabelledPairs:
        return LabelledPairs(count_share(batch.reward[:, 0] != batch.reward[:, 1], batch.sum_over_ranks))

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        loss, margin = iterative_dpo_loss(new.logp, batch.logp_old_sum, batch.reward, self.beta,
                                          batch.prepared(LabelledPairs).share)
        return loss, {"iterative_dpo/margin": margin.mean().item()}
