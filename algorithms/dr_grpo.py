"""Dr. GRPO: GRPO done right (Liu et al. 2025, "Understanding R1-Zero-Like Training"), K samples per prompt.

GRPO's two biases removed: no division by the group std (question-difficulty bias) and no division by each
response's own length (length bias): token sums are divided by one constant L for every response.
    A_i  = r_i - mean_j r_j                                r = the reward-model score (no KL: beta 0)
    l_t  = max(-A_i rho_t, -A_i clip(rho_t, 1 - eps, 1 + eps))
    loss = mean_i (1/L) sum_t l_t                          L = length_normaliser, or Lr (the batch's longest
                                                           response) when unset; TRL loss_type="dr_grpo"
Paper: no KL term, eps 0.2, one update per batch. Every GRPO setting applies (algorithms/grpo.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from algorithms.base import register
from algorithms.grpo import GRPO


@register("dr_grpo")
@dataclass
class DrGRPO(GRPO):
    """Dr. GRPO: centred (unscaled) group advantages, token sums over a constant length normaliser"""

    kl_coef: float | None = 0.0
    loss_aggregation: str = "seq_mean_token_sum_norm"
    scale_rewards: str = "none"
