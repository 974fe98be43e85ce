"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, Qwen), K samples per prompt.

One importance ratio per response, length-normalised (the geometric mean of its token ratios), clipped per
response, with GRPO's group-normalised advantages:
    s_i  = (pi_theta(y_i) / pi_t(y_i))^(1/|y_i|) = exp( mean_t (logp_theta_t - logp_t_t) )
    A_i  = (r_i - mean_j r_j) / (std_j r_j + eps)            r = the backbone's reward (the score: no KL)
    loss = mean_i max(-A_i s_i, -A_i clip(s_i, 1 - eps_low, 1 + eps_high))
(TRL: importance_sampling_level="sequence" with loss_type="grpo"). Paper: eps_low 3e-4, eps_high 4e-4 (a
sequence ratio moves far less than a token ratio), no KL term (kl_coef 0; a KL set with kl_coef goes in the loss
as TRL's, a sequence mean of token means). K = 4 and one update per batch here, where s = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.batch import Batch, PolicyOutput
from harness.objective import REWARD_SCALES, check_choice, clipped_surrogate, group_advantages


def sequence_ratio(logp_new: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """[..., Lr] per-token log-probs -> [...] exp of the masked mean log-ratio (GSPO's s_i)."""
    m = mask.to(logp_new.dtype)
    return torch.exp(((logp_new - logp_old) * m).sum(-1) / m.sum(-1).clamp(min=1))


@register("gspo")
@dataclass
class GSPO(Algorithm):
    """GSPO: length-normalised sequence-level importance ratio clipped per response, group-normalised advantages"""

    samples_per_prompt: int = 4
    epochs: int = 1
    minibatches: int = 1
    kl_placement: str = "loss"
    kl_estimator: str = "k3"
    kl_coef: float | None = 0.0
    eps_low: float = 3e-4
    eps_high: float = 4e-4
    scale_rewards: str = "group"
    std_eps: float = 1e-4

    loss_aggregation = "seq_mean_token_mean"  # of a KL term in the loss (TRL)

    def __post_init__(self):
        check_choice("scale_rewards", self.scale_rewards, REWARD_SCALES)
        if self.samples_per_prompt < 2:
            raise ValueError("gspo compares the responses of a group: samples_per_prompt must be >= 2")
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0 and self.std_eps > 0):
            raise ValueError("need 0 <= eps_low < 1, eps_high >= 0, std_eps > 0")

    def prepare(self, batch: Batch) -> dict[str, Tensor]:
        return {"advantages": group_advantages(batch.reward, self.scale_rewards, self.std_eps, batch.sum_over_ranks)}

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        s = sequence_ratio(new.logp_tokens, batch.logp_old, batch.counted_mask)
        per_seq, clipped = clipped_surrogate(s, batch.extras["advantages"], self.eps_low, self.eps_high)
        return per_seq.mean(), {"gspo/clipfrac": clipped.float().mean().item(),
                                "gspo/ratio_dev": (s.detach() - 1).abs().mean().item()}
