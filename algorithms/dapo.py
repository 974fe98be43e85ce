"""DAPO: Decoupled clip and Dynamic sAmpling Policy Optimization (Yu et al. 2025), K samples per prompt.

    r_i   = s_i + R_len(|y_i|)                      score plus the soft overlong punishment:
    R_len = 0 if |y| <= L_max - L_cache;  ((L_max - L_cache) - |y|) / L_cache if |y| <= L_max;  -1 beyond
    A_i   = (r_i - mean_j r_j) / (std_j r_j + eps)
    l_t   = max(-A_i rho_t, -A_i clip(rho_t, 1 - eps_low, 1 + eps_high))      "clip-higher": 0.2 / 0.28
    loss  = sum_{i,t} l_t / sum_i |y_i|             token-level over all tokens of the batch (TRL "dapo")
Dynamic sampling is the backbone's (harness/core/train.py `Trainer.collect`): groups whose K scores are all equal carry
no signal; they are dropped and replaced by newly sampled prompts, for at most `dynamic_sampling` more rounds,
every sampled response counted in the budget (`groups_dropped` too). No KL term. Paper: L_max 20480 with L_cache
4096 (0.2 of it), 16 samples and 16 updates per batch; here K = 4, one update, L_max = the generation cap.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from algorithms.base import register
from algorithms.grpo import GRPO
from harness.core.batch import Batch


def overlong_penalty(length: Tensor, max_length: float, cache: float) -> Tensor:
    """DAPO's soft overlong punishment of responses of `length` tokens: 0 up to max_length - cache, then linear
    down to -1 at max_length, -1 beyond."""
    return ((max_length - cache - length) / cache).clamp(-1.0, 0.0)


@register("dapo")
@dataclass
class DAPO(GRPO):
    """DAPO: clip-higher, token-level loss over the batch, overlong shaping, groups with equal scores resampled"""

    eps_low: float = 0.2
    eps_high: float = 0.28
    kl_coef: float | None = 0.0
    loss_aggregation: str = "token_mean"
    overlong_max_length: int | None = None
    """L_max in tokens, the EOS counted (None: the generation cap, generation.max_new_tokens; 0: no shaping)"""
    overlong_cache: float = 0.2
    """L_cache as a fraction of L_max (paper 4096 / 20480)"""
    dynamic_sampling: int = 3
    """refill rounds at most for groups with equal scores (0: keep them, as plain GRPO)"""

    def __post_init__(self):
        super().__post_init__()
        if (self.overlong_max_length or 0) < 0 or not 0 < self.overlong_cache <= 1 or self.dynamic_sampling < 0:
            raise ValueError("need overlong_max_length >= 0, 0 < overlong_cache <= 1, dynamic_sampling >= 0")

    def rewards(self, batch: Batch) -> Tensor:
        max_length = batch.max_new_tokens if self.overlong_max_length is None else self.overlong_max_length
        if not max_length:
            return batch.reward
        length = batch.mask.sum(-1).to(batch.reward.dtype)
        return batch.reward + overlong_penalty(length, max_length, self.overlong_cache * max_length)
