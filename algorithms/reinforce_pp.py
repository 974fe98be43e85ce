"""REINFORCE++ (Hu 2025): PPO's token-level machinery without a critic, one sample per prompt.

Per-token reward (the backbone's `batch.token_reward`: KL in the reward, k1 with beta = train.kl_coef by default):
    r_t = -beta * (logp_t - logp_ref)_t,  plus the score at EOS
    G_t = sum_{s >= t} gamma^(s - t) r_s                    the return (gamma 1: the reward-to-go)
    A_t = (G_t - mean G) / std G                            over ALL counted tokens of the batch, every rank's
                                                            (global, not per prompt: no group, no critic)
    loss = token mean of max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)),   rho_t = pi_theta / pi_t
Paper (OpenRLHF): eps 0.2, gamma 1, one sample per prompt, token-level loss (loss_aggregation selectable).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import (AGGREGATIONS, aggregate, check_choice, clipped_surrogate, masked_token_mean,
                               reward_to_go, sum_norm_length, whiten)


@register("reinforce_pp")
@dataclass
class ReinforcePP(Algorithm):
    """REINFORCE++: token-level KL reward, reward-to-go whitened over the whole batch, PPO clip on token ratios"""

    samples_per_prompt: int = 1
    epochs: int = 1
    minibatches: int = 1
    gamma: float = 1.0
    clip: float = 0.2
    loss_aggregation: str = "token_mean"
    length_normaliser: float | None = None
    """L of seq_mean_token_sum_norm (None: Lr)"""

    def __post_init__(self):
        check_choice("loss_aggregation", self.loss_aggregation, AGGREGATIONS)
        if not (0 <= self.gamma <= 1 and 0 <= self.clip < 1):
            raise ValueError("need 0 <= gamma <= 1 and 0 <= clip < 1")

    def prepare(self, batch: Batch) -> Advantages:
        mask = batch.counted_mask
        returns = reward_to_go(batch.token_reward * mask, self.gamma)
        return Advantages(whiten(returns, mask, eps_on="std", sum_over_ranks=batch.sum_over_ranks),
                          sum_norm_length(self.loss_aggregation, self.length_normaliser, mask.shape[-1],
                                          batch.sum_over_ranks))

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        mask = batch.counted_mask
        ratio = torch.exp(new.logp_tokens - batch.logp_old)
        prepared = batch.prepared(Advantages)
        per_token, clipped = clipped_surrogate(ratio, prepared.advantages, self.clip, self.clip)
        loss = aggregate(per_token, mask, self.loss_aggregation, batch.token_share, prepared.length)
        return loss, {"reinforce_pp/clipfrac": masked_token_mean(clipped, mask)}
