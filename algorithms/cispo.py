"""CISPO: Clipped IS-weight Policy Optimization (MiniMax-M1, 2025), K samples per prompt.

PPO's clip drops the gradient of every token whose ratio leaves the trust region; CISPO keeps every token's
gradient and clips only its importance weight, as a constant:
    w_t  = sg( clip(rho_t, 1 - eps_low, 1 + eps_high) ),    rho_t = pi_theta(y_t) / pi_t(y_t)
    A_i  = (r_i - mean_j r_j) / (std_j r_j + eps)           r = the backbone's reward (the score: no KL)
    loss = - sum_{i,t} w_t A_i logp_theta(y_t) / sum_i |y_i|      token-level over the batch (TRL "cispo")
The gradient is -w A grad logp (REINFORCE weighted by the clipped ratio). Paper: no lower bound (eps_low 1:
1 - eps_low = 0), only the upper one tuned; eps_high 4 gives TRL's and ScaleRL's recommended weight cap 5. No KL.
Every GRPO setting applies (algorithms/grpo.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import register
from algorithms.grpo import GRPO
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import aggregate, masked_token_mean


def cispo_token_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, eps_low: float,
                     eps_high: float) -> tuple[Tensor, Tensor]:
    """Per-token -sg(clip(rho)) * A * logp_new and where the weight was clipped; advantages broadcast to logp."""
    ratio = torch.exp(logp_new - logp_old).detach()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    return -weight * advantages * logp_new, weight != ratio


@register("cispo")
@dataclass
class CISPO(GRPO):
    """CISPO: stop-gradient clipped importance weights times advantage times log-prob, token-level loss"""

    kl_coef: float | None = 0.0
    eps_low: float = 1.0
    """weight clipped below at 1 - eps_low (1: no lower bound)"""
    eps_high: float = 4.0
    """weight clipped above at 1 + eps_high"""
    loss_aggregation: str = "token_mean"

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        mask, prepared = batch.counted_mask, batch.prepared(Advantages)
        per_token, clipped = cispo_token_loss(new.logp_tokens, batch.logp_old, prepared.advantages[..., None],
                                              self.eps_low, self.eps_high)
        loss = aggregate(per_token, mask, self.loss_aggregation, batch.token_share, prepared.length)
        return loss, {"cispo/clipfrac": masked_token_mean(clipped, mask)}
