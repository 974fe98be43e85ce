"""SAPO: Soft Adaptive Policy Optimization (Gao et al. 2025, arXiv 2511.20347), K samples per prompt, no critic.

PPO's hard clip zeroes the gradient of every token whose ratio leaves [1 - eps, 1 + eps]; SAPO replaces it by a
smooth, temperature-gated trust region:
    rho_t = pi_theta(y_t) / pi_t(y_t)
    f_t   = (4 / tau) sigmoid(tau (rho_t - 1)),      tau = tau_pos if A_i > 0 else tau_neg
    l_t   = - f_t A_i                                loss = mean_i (1/|y_i|) sum_t l_t     (TRL loss_type="sapo")
d l_t / d rho_t = -A_i 4 s (1 - s), s = sigmoid(tau (rho_t - 1)): exactly -A_i at rho = 1 (the on-policy gradient,
as GRPO's), decaying smoothly as rho moves away, faster for negative advantages (tau_neg > tau_pos), so a stale or
mismatched token is damped instead of cut off. Temperatures 1.0 / 1.05 are TRL 1.16's defaults
(sapo_temperature_pos / _neg); kl_coef 0 is TRL's default beta. Advantages and every GRPO setting as algorithms/grpo.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import register
from algorithms.grpo import GRPO
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import aggregate, masked_token_mean


def sapo_token_loss(ratio: Tensor, advantages: Tensor, tau_pos: float, tau_neg: float) -> Tensor:
    """Per-token -(4 / tau) sigmoid(tau (rho - 1)) A, tau by the advantage's sign; advantages broadcast to ratio."""
    tau = torch.where(advantages > 0, torch.as_tensor(tau_pos), torch.as_tensor(tau_neg))
    return -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * advantages


@register("sapo")
@dataclass
class SAPO(GRPO):
    """SAPO: GRPO with a smooth sigmoid gate on the ratio in place of the hard clip"""

    kl_coef: float | None = 0.0
    tau_pos: float = 1.0
    """gate temperature of tokens with a positive advantage"""
    tau_neg: float = 1.05
    """gate temperature of the others (faster decay)"""

    def __post_init__(self):
        super().__post_init__()
        if self.tau_pos <= 0 or self.tau_neg <= 0:
            raise ValueError("sapo's temperatures tau_pos and tau_neg must be positive")

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        mask, prepared = batch.counted_mask, batch.prepared(Advantages)
        ratio = torch.exp(new.logp_tokens - batch.logp_old)
        per_token = sapo_token_loss(ratio, prepared.advantages[..., None], self.tau_pos, self.tau_neg)
        loss = aggregate(per_token, mask, self.loss_aggregation, batch.token_share, prepared.length)
        # how far the gate has closed: the share of tokens whose gradient weight 4 s (1 - s) is below a half
        s = torch.sigmoid(self.tau_pos * (ratio.detach() - 1))
        return loss, {"sapo/damped_frac": masked_token_mean(4 * s * (1 - s) < 0.5, mask)}
