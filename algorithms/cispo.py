"""CISPO: Clipped IS-weight Policy Optimization (MiniMax-M1, 2025), K samples per prompt.

PPO's clip drops the gradient of every token whose ratio leaves the trust region; CISPO keeps every token's
gradient and clips only its importance weight, as a constant:
    w_t  = sg( clip(rho_t, 1 - eps_low, 1 + eps_high) ),    rho_t = pi_theta(y_t) / pi_t(y_t)
    A_i  = (r_i - mean_j r_j) / (std_j r_j + eps)           r = the backbone's reward (the score: no KL)
    loss = - sum_{i,t} w_t A_i logp_theta(y_t) / sum_i |y_i|      token-level over the batch (TRL "cispo")
The gradient is -w A grad logp (REINFORCE weighted by the clipped ratio). Paper: no lower bound (eps_low large:
1 - eps_low <= 0), only the upper one tuned; eps_high 4 gives TRL's and ScaleRL's recommended weight cap 5. No KL.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.batch import Batch, PolicyOutput
from harness.objective import (AGGREGATIONS, REWARD_SCALES, aggregate, check_choice, group_advantages,
                               masked_token_mean)


def cispo_token_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, eps_low: float,
                     eps_high: float) -> tuple[Tensor, Tensor]:
    """Per-token -sg(clip(rho)) * A * logp_new and where the weight was clipped; advantages broadcast to logp."""
    ratio = torch.exp(logp_new - logp_old).detach()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    return -weight * advantages * logp_new, weight != ratio


@register("cispo")
@dataclass
class CISPO(Algorithm):
    """CISPO: stop-gradient clipped importance weights times advantage times log-prob, token-level loss"""

    samples_per_prompt: int = 4
    epochs: int = 1
    minibatches: int = 1
    kl_placement: str = "loss"
    kl_estimator: str = "k3"
    kl_coef: float | None = 0.0
    eps_low: float = 1.0
    """weight clipped below at 1 - eps_low (1: no lower bound)"""
    eps_high: float = 4.0
    """weight clipped above at 1 + eps_high"""
    loss_aggregation: str = "token_mean"
    scale_rewards: str = "group"
    std_eps: float = 1e-4
    length_normaliser: float | None = None
    """L of seq_mean_token_sum_norm (None: Lr)"""

    def __post_init__(self):
        check_choice("loss_aggregation", self.loss_aggregation, AGGREGATIONS)
        check_choice("scale_rewards", self.scale_rewards, REWARD_SCALES)
        if self.samples_per_prompt < 2:
            raise ValueError("cispo compares the responses of a group: samples_per_prompt must be >= 2")
        if not (self.eps_low >= 0 and self.eps_high >= 0 and self.std_eps > 0):
            raise ValueError("need eps_low >= 0, eps_high >= 0, std_eps > 0")

    def prepare(self, batch: Batch) -> dict[str, Tensor]:
        return {"advantages": group_advantages(batch.reward, self.scale_rewards, self.std_eps, batch.sum_over_ranks)}

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        mask = batch.counted_mask
        per_token, clipped = cispo_token_loss(new.logp_tokens, batch.logp_old, batch.extras["advantages"][..., None],
                                              self.eps_low, self.eps_high)
        loss = aggregate(per_token, mask, self.loss_aggregation, batch.token_share, self.length_normaliser)
        return loss, {"cispo/clipfrac": masked_token_mean(clipped, mask)}
