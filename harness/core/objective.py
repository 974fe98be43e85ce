"""The loss math every optimizer shares, in one place: masked means, whitening, per-token KL estimators, the KL
term of the loss, group-normalised advantages, reward-to-go, GAE, the clipped surrogate and loss aggregation.
Plain tensor arithmetic on [P, K, Lr] (or [..., Lr]) tensors, no model. docs/objective.md says which optimizer uses
what by default.

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
Whitening over the counted elements (population variance; the mean added back with shift_mean=False):
    (x - mean) * rsqrt(var + eps)                 TRL's and the REBEL authors' `whiten` (PPO), eps = 1e-8
    (x - mean) / (std + eps)                      REINFORCE++ here (eps_on="std")
Reward-to-go and GAE over the last axis (zero past the end):
    G_t = r_t + gamma G_{t+1};   delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1}
Clipped surrogate (PPO; DAPO's asymmetric "clip-higher"), rho = pi_theta / pi_t (per token or per sequence):
    l = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))
Aggregation of a per-token loss l[s, t] with mask m[s, t] over sequences s (all leading axes) and tokens t:
    "token_mean"               sum_{s,t} m l / N          N = the batch's counted tokens (TRL "bnpo"/"dapo")
    "seq_mean_token_mean"      mean_s (sum_t m l / sum_t m)   (TRL "grpo")
    "seq_mean_token_sum"       mean_s sum_t m l
    "seq_mean_token_sum_norm"  mean_s (sum_t m l / L)     L a constant, the max response length Lr by default
                                                          (TRL "dr_grpo" with L = max_completion_length)

Ranks. With several data-parallel processes each rank holds a shard of the batch, harness/core/train.py weighs each
micro-batch's loss by its share of the minibatch's PROMPTS, and the gradients are averaged over ranks
(harness/core/distributed.py). So every mean over prompts (the sequence-mean modes) is invariant to micro-batching and
ranks as it stands, and every other statistic a loss depends on must be the whole batch's:
  - batch statistics (a whitening's mean and std, the batch std, REINFORCE's mean reward) sum their parts over the
    ranks with `sum_over_ranks` (`Batch.sum_over_ranks`: an all-reduce over torch.distributed's group in a run,
    `local` by default here);
  - a count that normalises a loss (the tokens of "token_mean", PPO's masked means, iterative DPO's labelled
    pairs) becomes a per-prompt share of the whole batch's count (`count_share`, `Batch.token_share`), so the
    denominator of any micro-batch on any rank is its prompts' part of the global count;
  - a maximum (the width Lr of "seq_mean_token_sum_norm") is taken over ranks with `max_over_ranks`.
tests/test_objective.py checks each function by hand and under a simulated all-reduce; tests/test_invariance.py
runs every registered optimizer on 1 and 2 gloo processes, with and without micro-batches.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")
REWARD_SCALES = ("group", "batch", "none")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
BATCH_STATISTICS = ("global", "per_process")  # the scope of PPO's whitening and REINFORCE's baseline
SumOverRanks = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]  # Batch.sum_over_ranks


def local(parts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The sums of one process: its own parts (the default of every `sum_over_ranks`)."""
    return parts


def max_over_ranks(x: Tensor, sum_over_ranks: SumOverRanks = local) -> Tensor:
    """The maximum of a scalar over the ranks `sum_over_ranks` sums over: x itself for `local`, else an all-reduce
    over torch.distributed's default group (the group harness/core/distributed.py's sums use)."""
    if sum_over_ranks is local or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    out = x.detach().float().reshape(1).clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    return out[0].to(x.dtype)


def check_choice(setting: str, value, choices) -> None:
    """ValueError (one line through algorithms.base.make) unless value is one of choices."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def scope(batch_statistics: str, sum_over_ranks: SumOverRanks) -> SumOverRanks:
    """The sums a batch statistic takes: over every rank ("global") or over this process's shard ("per_process",
    the REBEL authors' accelerate scripts)."""
    return sum_over_ranks if batch_statistics == "global" else local


# --- masked means and batch statistics -------------------------------------------------------------------------------

def masked_mean(x: Tensor, mask: Tensor | None = None, dim: int | None = None, count: Tensor | None = None,
                sum_over_ranks: SumOverRanks = local) -> Tensor:
    """Mean of x over the True positions of mask (None: every element); along `dim` (per sequence: -1) or over
    everything. count: the denominator instead of the counted positions (a share of the whole batch's count,
    `count_share`); sum_over_ranks: the numerator and the count summed over ranks (a detached statistic)."""
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    if dim is not None:
        total, n = (x * m).sum(dim), m.sum(dim)
    else:
        total, n = sum_over_ranks(((x * m).sum(), m.sum() if count is None else count))
    return total / n.clamp(min=torch.finfo(n.dtype).tiny)


def masked_token_mean(x: Tensor, mask: Tensor) -> float:
    """A detached statistic: mean of x over the counted tokens."""
    return masked_mean(x.float(), mask).item()


def batch_mean_var(x: Tensor, mask: Tensor | None = None, sum_over_ranks: SumOverRanks = local,
                   unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and variance of x's (masked) elements over every rank's batch (two reductions by `sum_over_ranks`:
    counts and sums, then squared deviations about the global mean)."""
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    n, s = sum_over_ranks((m.sum(), (x * m).sum()))
    mean = s / n.clamp(min=1)
    ss, = sum_over_ranks(((((x - mean) * m) ** 2).sum(),))
    return mean, ss / ((n - 1) if unbiased else n).clamp(min=1)


def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8,
           eps_on: str = "var", sum_over_ranks: SumOverRanks = local) -> Tensor:
    """x whitened over its counted elements (every rank's with `sum_over_ranks`), population variance, zero where
    not counted: (x - mean) * rsqrt(var + eps) (eps_on "var"), or (x - mean) / (std + eps) ("std");
    shift_mean=False adds the mean back."""
    mean, var = batch_mean_var(x, mask, sum_over_ranks, unbiased=False)
    white = (x - mean) * torch.rsqrt(var + eps) if eps_on == "var" else (x - mean) / (var.sqrt() + eps)
    if not shift_mean:
        white = white + mean
    return white if mask is None else white * mask


def count_share(mask: Tensor, sum_over_ranks: SumOverRanks = local) -> Tensor:
    """[P, ...] mask -> [P]: the counted elements of every rank's batch (tokens, labelled pairs) spread evenly over
    all its prompts. Summed over a micro-batch's prompts it is that micro-batch's part of the global count."""
    counted, prompts = sum_over_ranks((mask.sum().float(), torch.tensor(float(mask.shape[0]))))
    return torch.full((mask.shape[0],), (counted / prompts).item(), dtype=torch.float32, device=mask.device)


token_share = count_share  # of the counted tokens: `Batch.token_share`, set by harness/core/train.py


# --- advantages and returns ------------------------------------------------------------------------------------------

def group_advantages(reward: Tensor, scale: str = "group", eps: float = 1e-4,
                     sum_over_ranks: SumOverRanks = local) -> Tensor:
    """[P, K] rewards -> [P, K] advantages: minus the group mean, divided by the group's (or batch's) std + eps."""
    centred = reward - reward.mean(1, keepdim=True)
    if scale == "none":
        return centred
    if scale == "group":
        std = reward.std(1, keepdim=True) if reward.shape[1] > 1 else torch.zeros_like(reward)
    elif scale == "batch":
        std = batch_mean_var(reward, sum_over_ranks=sum_over_ranks)[1].sqrt()
    else:
        raise ValueError(f"unknown reward scale {scale!r}; valid: {', '.join(REWARD_SCALES)}")
    return centred / (std + eps)


def reward_to_go(rewards: Tensor, gamma: float = 1.0) -> Tensor:
    """G_t = r_t + gamma G_{t+1} over the last axis (zero past the end); [..., Lr]."""
    returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return returns


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates over the last axis (zero reward and value past the end); [..., Lr]."""
    advantages, last = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        next_value = values[..., t + 1] if t + 1 < rewards.shape[-1] else torch.zeros_like(last)
        last = rewards[..., t] + gamma * next_value - values[..., t] + gamma * lam * last
        advantages[..., t] = last
    return advantages


# --- losses ----------------------------------------------------------------------------------------------------------

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


def clipped_surrogate(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)) elementwise, and where the clipped branch is taken."""
    pg1, pg2 = -advantages * ratio, -advantages * ratio.clamp(1 - eps_low, 1 + eps_high)
    return torch.max(pg1, pg2), pg2 > pg1


def aggregate(loss_tokens: Tensor, mask: Tensor, mode: str, tokens: Tensor | None = None,
              length: float | None = None) -> Tensor:
    """A per-token loss [..., Lr] -> scalar by `mode` (module docstring).

    tokens ("token_mean"): per-prompt shares of the batch's token count (`Batch.token_share`); the denominator is
    their sum over the prompts present (None: the counted tokens here). length ("seq_mean_token_sum_norm"): the
    constant L (None: Lr, the last axis)."""
    m = mask.to(loss_tokens.dtype)
    summed = (loss_tokens * m).sum(-1)  # [...] per-sequence token sums
    if mode == "token_mean":  # the sequences' token sums over the batch's token count
        return masked_mean(summed, count=m.sum() if tokens is None else tokens.sum())
    if mode == "seq_mean_token_mean":
        return masked_mean(loss_tokens, mask, dim=-1).mean()
    if mode == "seq_mean_token_sum":
        return summed.mean()
    if mode == "seq_mean_token_sum_norm":
        return summed.mean() / (loss_tokens.shape[-1] if length is None else length)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGGREGATIONS)}")


def sum_norm_length(mode: str, length: float | None, width: int,
                    sum_over_ranks: SumOverRanks = local) -> float | None:
    """L of "seq_mean_token_sum_norm": the setting `length`, else Lr, the width of the widest rank's responses
    (each rank pads its shard to its own longest); None for the other modes."""
    if mode != "seq_mean_token_sum_norm" or length is not None:
        return length
    return max_over_ranks(torch.tensor(float(width)), sum_over_ranks).item()


def kl_loss(logp: Tensor, logp_old: Tensor, logp_ref: Tensor, mask: Tensor, coef: float, estimator: str,
            aggregation: str, tokens: Tensor | None = None, length: float | None = None,
            ratio_correction: bool = False) -> tuple[Tensor, float]:
    """The KL term of the loss placement: coef * aggregate(KL_t) of pi_theta's per-token log-probs `logp` (with
    gradients), optionally times the token ratio pi_theta / pi_t; and the mean per-token KL (a statistic)."""
    kl = kl_per_token(logp, logp_ref, estimator)
    term = kl * torch.exp(logp - logp_old) if ratio_correction else kl
    return coef * aggregate(term, mask, aggregation, tokens, length), masked_token_mean(kl.detach(), mask)
