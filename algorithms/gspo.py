"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, Qwen), K samples per prompt.

One importance ratio per response, length-normalised (the geometric mean of its token ratios), clipped per
response, with GRPO's group-normalised advantages:
    s_i  = (pi_theta(y_i) / pi_t(y_i))^(1/|y_i|) = exp( mean_t (logp_theta_t - logp_t_t) )
    A_i  = (r_i - mean_j r_j) / (std_j r_j + eps)            r = the backbone's reward (the score: no KL)
    loss = mean_i max(-A_i s_i, -A_i clip(s_i, 1 - eps_low, 1 + eps_high))
(TRL: importance_sampling_level="sequence" with loss_type="grpo"). Paper: eps_low 3e-4, eps_high 4e-4 (a
sequence ratio moves far less than a token ratio), no KL term (kl_coef 0; a KL set with kl_coef goes in the loss
as TRL's, a sequence mean of token means). K = 4 and one update per batch here, where s = 1. Every GRPO setting
applies (algorithms/grpo.py); loss_aggregation only shapes a KL term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import register
from algorithms.grpo import GRPO
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import clipped_surrogate, masked_mean


def sequence_ratio(logp_new: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """[..., Lr] per-token log-probs -> [...] exp of the masked mean log-ratio (GSPO's s_i)."""
    return torch.exp(masked_mean(logp_new - logp_old, mask, dim=-1))


@register("gspo")
@dataclass
class GSPO(GRPO):
    """GSPO: length-normalised sequence-level importance ratio clipped per response, group-normalised advantages"""

    kl_coef: float | None = 0.0
    eps_low: float = 3e-4
    eps_high: float = 4e-4

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        s = sequence_ratio(new.logp_tokens, batch.logp_old, batch.counted_mask)
        per_seq, clipped = clipped_surrogate(s, batch.prepared(Advantages).advantages, self.eps_low,
                                             self.eps_high)
        return per_seq.mean(), {"gspo/clipfrac": clipped.float().mean().item(),
                                "gspo/ratio_dev": (s.detach() - 1).abs().mean().item()}
