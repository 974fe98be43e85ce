"""The objective matrix's pure math, shared by every optimizer: per-token KL estimators, the KL term of the loss,
group-normalised advantages, the clipped surrogate and loss aggregation. Plain tensor arithmetic on [P, K, Lr]
(or [..., Lr]) tensors, no model. docs/objective.md says which optimizer uses what by default.

KL estimators (Schulman, "Approximating KL divergence", 2020), per token, on a token y_t sampled from pi,
with log r = logp_ref - logp (so r = pi_ref / pi):
    k1 = -log r = logp - logp_ref                 unbiased for KL(pi || pi_ref), high variance, can be negative
    k2 = 0.5 * (log r)^2                          biased (exact to second order near pi = pi_ref), >= 0
    k3 = (r - 1) - log r                          unbiased (E_pi[r] = 1), >= 0, lower variance: TRL's GRPOTrainer
As a LOSS term on samples of pi_t, the gradient is what matters: k1's expected gradient is zero (E_pi[grad log pi]
= 0), k2's is the gradient of the reverse KL, k3's is the gradient of the forward KL(pi_ref || pi) at pi_theta =
pi_t, not of KL(pi || pi_ref): the known bias of GRPO's term; weighting k3 by the ratio (kl_ratio_correction)
gives the reverse-KL gradient. tests/test_objective.py checks the values against an exact KL on a tiny model.
Group-normalised advantages over the K responses of a prompt (GRPO, Shao et al. 2024; TRL `scale_rewards`):
    A_i = (r_i - mean_j r_j) / (std + eps)        std: of the group ("group"), of the whole batch ("batch");
    A_i = r_i - mean_j r_j                        "none" (Dr. GRPO). std is Bessel-corrected and eps = 1e-4, as TRL.
Clipped surrogate (PPO; DAPO's asymmetric "clip-higher"), rho = pi_theta / pi_t:
    l = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))
Aggregation of a per-token loss l[s, t] with mask m[s, t] over sequences s (all leading axes) and tokens t:
    "token_mean"               sum_{s,t} m l / N          N = the batch's counted tokens (TRL "bnpo"/"dapo")
    "seq_mean_token_mean"      mean_s (sum_t m l / sum_t m)   (TRL "grpo")
    "seq_mean_token_sum"       mean_s sum_t m l
    "seq_mean_token_sum_norm"  mean_s (sum_t m l / L)     L a constant, the max response length Lr by default
                                                          (TRL "dr_grpo" with L = max_completion_length)
Invariance (tests/test_objective.py): harness/train.py weighs each micro-batch's loss by its share of the
minibatch's PROMPTS and averages gradients over data-parallel ranks, so every sequence-mean mode is invariant to
micro-batching and ranks; "token_mean" is made invariant by `Batch.token_share` (each prompt's share of the batch's
counted tokens over all ranks), which turns its denominator into a per-prompt constant. Batch-wide statistics
(the batch std, global whitening) sum over ranks with `Batch.sum_over_ranks`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")
REWARD_SCALES = ("group", "batch", "none")
SumOverRanks = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]  # Batch.sum_over_ranks
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")


def _identity(parts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return parts


def check_choice(setting: str, value, choices) -> None:
    """ValueError (one line through algorithms.base.make) unless value is one of choices."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def kl_per_token(logp: Tensor, logp_ref: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) at tokens sampled from pi; same shape as logp (0 where both are 0)."""
    log_r = logp_ref - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.exp(log_r) - log_r - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


def batch_mean_std(x: Tensor, sum_over_ranks: SumOverRanks = _identity,
                   mask: Tensor | None = None, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and std of x's (masked) elements over every rank's batch (sums reduced by `sum_over_ranks`)."""
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    n, s = sum_over_ranks((m.sum(), (x * m).sum()))
    mean = s / n.clamp(min=1)
    ss, = sum_over_ranks(((((x - mean) * m) ** 2).sum(),))
    var = ss / ((n - 1) if unbiased else n).clamp(min=1)
    return mean, var.sqrt()


def group_advantages(reward: Tensor, scale: str = "group", eps: float = 1e-4,
                     sum_over_ranks: SumOverRanks = _identity) -> Tensor:
    """[P, K] rewards -> [P, K] advantages: minus the group mean, divided by the group's (or batch's) std + eps."""
    centred = reward - reward.mean(1, keepdim=True)
    if scale == "none":
        return centred
    if scale == "group":
        std = reward.std(1, keepdim=True) if reward.shape[1] > 1 else torch.zeros_like(reward)
    elif scale == "batch":
        std = batch_mean_std(reward, sum_over_ranks)[1]
    else:
        raise ValueError(f"unknown reward scale {scale!r}; valid: {', '.join(REWARD_SCALES)}")
    return centred / (std + eps)


def whiten_over_batch(x: Tensor, mask: Tensor, sum_over_ranks: SumOverRanks = _identity) -> Tensor:
    """(x - mean) / std over the counted elements of every rank's batch (population variance), zero elsewhere."""
    mean, std = batch_mean_std(x, sum_over_ranks, mask, unbiased=False)
    return (x - mean) / (std + 1e-8) * mask


def clipped_surrogate(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)) elementwise, and where the clipped branch is taken."""
    pg1, pg2 = -advantages * ratio, -advantages * ratio.clamp(1 - eps_low, 1 + eps_high)
    return torch.max(pg1, pg2), pg2 > pg1


def token_share(mask: Tensor, sum_over_ranks: SumOverRanks = _identity) -> Tensor:
    """[P, ...] mask -> [P]: the counted tokens of every rank's batch spread evenly over all its prompts."""
    tokens, prompts = sum_over_ranks((mask.sum().float(), torch.tensor(float(mask.shape[0]))))
    return torch.full((mask.shape[0],), (tokens / prompts).item(), dtype=torch.float32, device=mask.device)


def aggregate(loss_tokens: Tensor, mask: Tensor, mode: str, tokens: Tensor | None = None,
              length: float | None = None) -> Tensor:
    """A per-token loss [..., Lr] -> scalar by `mode` (module docstring).

    tokens ("token_mean"): per-prompt shares of the batch's token count (`Batch.token_share`); the denominator is
    their sum over the prompts present (None: the counted tokens here). length ("seq_mean_token_sum_norm"): the
    constant L (None: Lr, the last axis)."""
    m = mask.to(loss_tokens.dtype)
    summed = (loss_tokens * m).sum(-1)  # [...] per-sequence token sums
    if mode == "token_mean":
        n = m.sum() if tokens is None else tokens.sum()
        return summed.sum() / n.clamp(min=1)
    if mode == "seq_mean_token_mean":
        return (summed / m.sum(-1).clamp(min=1)).mean()
    if mode == "seq_mean_token_sum":
        return summed.mean()
    if mode == "seq_mean_token_sum_norm":
        return summed.mean() / (loss_tokens.shape[-1] if length is None else length)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGGREGATIONS)}")


def kl_loss(logp: Tensor, logp_old: Tensor, logp_ref: Tensor, mask: Tensor, coef: float, estimator: str,
            aggregation: str, tokens: Tensor | None = None, length: float | None = None,
            ratio_correction: bool = False) -> tuple[Tensor, float]:
    """The KL term of the loss placement: coef * aggregate(KL_t) of pi_theta's per-token log-probs `logp` (with
    gradients), optionally times the token ratio pi_theta / pi_t; and the mean per-token KL (a statistic)."""
    kl = kl_per_token(logp, logp_ref, estimator)
    term = kl * torch.exp(logp - logp_old) if ratio_correction else kl
    return coef * aggregate(term, mask, aggregation, tokens, length), masked_token_mean(kl.detach(), mask)


def masked_token_mean(x: Tensor, mask: Tensor) -> float:
    """A detached statistic: mean of x over the counted tokens."""
    m = mask.to(torch.float32)
    return ((x.float() * m).sum() / m.sum().clamp(min=1)).item()
