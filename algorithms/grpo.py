"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath), K samples per prompt, no critic.

    A_i   = (r_i - mean_j r_j) / (std_j r_j + eps)       r = the backbone's reward: the score, as the KL is in the loss
    rho_t = pi_theta(y_t) / pi_t(y_t)                    per token, against the rollout policy's log-probs
    l_t   = max(-A_i rho_t, -A_i clip(rho_t, 1 - eps_low, 1 + eps_high))
    loss  = mean_i (1/|y_i|) sum_t l_t  +  beta * the same mean of k3_t     (TRL loss_type="grpo")
The KL term is the backbone's (harness/core/train.py `Trainer.objective`, kl_placement "loss", estimator k3 as the paper
and TRL; `--set algo.kl_placement=reward` moves it into r instead). Paper: eps 0.2, beta 0.04, one update per
batch (mu = 1); K = 4 here (the paper samples 64). Settings: loss_aggregation (harness/core/objective.py),
scale_rewards ("group", "batch", "none"), kl_ratio_correction (DeepSeek-V3.2; TRL 1.16's default, off here as
in the paper).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import (AGGREGATIONS, REWARD_SCALES, aggregate, check_choice, clipped_surrogate,
                               group_advantages, masked_token_mean, sum_norm_length)


@register("grpo")
@dataclass
class GRPO(Algorithm):
    """GRPO: group-normalised advantages, clipped per-token ratio, k3 KL to the reference in the loss"""

    samples_per_prompt: int = 4
    """K, the group size"""
    epochs: int = 1
    """mu = 1 in the paper: one update per batch (the ratio is then 1 and the clip inactive)"""
    minibatches: int = 1
    kl_placement: str = "loss"
    kl_estimator: str = "k3"
    kl_coef: float | None = 0.04
    eps_low: float = 0.2
    """ratio clip below: 1 - eps_low"""
    eps_high: float = 0.2
    """ratio clip above: 1 + eps_high"""
    loss_aggregation: str = "seq_mean_token_mean"
    scale_rewards: str = "group"
    """divide centred rewards by the std of the group, of the batch, or not at all"""
    std_eps: float = 1e-4
    length_normaliser: float | None = None
    """L of seq_mean_token_sum_norm (None: Lr, the batch's longest response)"""

    def __post_init__(self):
        check_choice("loss_aggregation", self.loss_aggregation, AGGREGATIONS)
        check_choice("scale_rewards", self.scale_rewards, REWARD_SCALES)
        if self.samples_per_prompt < 2:
            raise ValueError(f"{self.name} compares the responses of a group: samples_per_prompt must be >= 2")
        if not (0 <= self.eps_low <= 1 and self.eps_high >= 0 and self.std_eps > 0):
            raise ValueError("need 0 <= eps_low <= 1, eps_high >= 0, std_eps > 0")
        if self.length_normaliser is not None and self.length_normaliser <= 0:
            raise ValueError("length_normaliser must be positive")

    def rewards(self, batch: Batch) -> Tensor:
        """[P, K] the reward the advantages are taken of (subclasses shape it)."""
        return batch.reward

    def prepare(self, batch: Batch) -> Advantages:
        return Advantages(group_advantages(self.rewards(batch), self.scale_rewards, self.std_eps, batch.sum_over_ranks),
                          sum_norm_length(self.loss_aggregation, self.length_normaliser, batch.response.shape[-1],
                                          batch.sum_over_ranks))

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        mask, prepared = batch.counted_mask, batch.prepared(Advantages)
        ratio = torch.exp(new.logp_tokens - batch.logp_old)
        per_token, clipped = clipped_surrogate(ratio, prepared.advantages[..., None], self.eps_low, self.eps_high)
        loss = aggregate(per_token, mask, self.loss_aggregation, batch.token_share, prepared.length)
        return loss, {f"{self.name}/clipfrac": masked_token_mean(clipped, mask)}
