"""Off-policy rollouts on equal terms for every online optimizer (docs/objective.md "Staleness and rollout
correction"): stale rollouts (`train.staleness`) and the corrections of the mismatch between the policy that sampled
them (mu, the behaviour policy) and pi_t, the policy the update starts from (`train.rollout_correction`).

Staleness k: the responses of update t are sampled by the policy of update t-1-k (the weights before update t-k;
the first k updates sample from the starting policy), as an asynchronous trainer k steps behind its sampler would.
The backbone keeps the last k+1 snapshots of the trainable weights and loads the oldest for generation only: pi_t's
log-probs (logp_old), the reference's, the critic's values and the reward are computed as always, and the sampler's
own per-token log-probs of its tokens are mu (`Batch.sample_logp`). Budget counters do not change.

Rollout correction, with the ratio rho = pi_t / mu per token (exp of logp_old - mu) or per sequence (exp of the
summed log-ratio), as TRL 1.16's GRPOTrainer defines it (`vllm_importance_sampling_mode`):
  - token_truncate (TIS; verl's token-level rollout IS): w = clamp(rho_token, min, max)
  - sequence_truncate: w = clamp(rho_sequence, min, max) for every token of the sequence
  - token_mask (MIS / IcePop): w = rho_token inside [min, max], 0 outside
  - sequence_mask: w = rho_sequence inside [min, max], 0 outside (TRL's default mode)
The weight scales the gradient of each token's log-probability in the optimizer's loss (not the KL-in-loss term):
for a loss that is a sum of per-token terms, the gradient TRL gets from multiplying the per-token loss by w; for a
sequence-level loss (REBEL, RLOO), each token's share of d loss / d logp(y). The loss value is unchanged. The
appended reference response of REBEL's hybrid variant was not sampled: its weight is 1.
"""
from __future__ import annotations

import math
from collections import deque
from contextlib import contextmanager

import torch
from torch import Tensor

from harness.core.batch import PolicyOutput
from harness.core.errors import UserError

CORRECTIONS = ("none", "token_truncate", "sequence_truncate", "token_mask", "sequence_mask")


def check(train, offline: bool, sharded: bool) -> None:
    """Refuses, in one line, settings that make no sense: off-policy settings for an offline optimizer, staleness
    with a sharded (FSDP) policy."""
    if offline and (train.staleness or train.rollout_correction != "none"):
        raise UserError("train.staleness and train.rollout_correction apply to online optimizers (they sample "
                        "rollouts); an offline optimizer trains on fixed pairs: leave them at 0 and none")
    if sharded and train.staleness:
        raise UserError("train.staleness keeps snapshots of the trainable weights, which an FSDP-sharded policy "
                        "does not hold whole: use DDP (configs/ddp.yaml) or one process")


def correction_weights(sample_logp: Tensor, logp_old: Tensor, mask: Tensor, mode: str, low: float | None,
                       high: float | None) -> tuple[Tensor, dict[str, float]]:
    """([..., L] weights, statistics) of the rollout correction `mode` for the sampled tokens (`mask`); zero where
    not counted. Statistics: quantiles of the ratio the mode uses, the share of tokens its mask drops."""
    diff = (logp_old - sample_logp) * mask
    sequence = mode.startswith("sequence")
    log_ratio = diff.sum(-1, keepdim=True) if sequence else diff
    ratio = torch.exp(log_ratio)
    lo, hi = (-math.inf if low is None else low), (math.inf if high is None else high)
    if mode.endswith("truncate"):
        weight = ratio if low is None and high is None else ratio.clamp(min=low, max=high)
        dropped = torch.zeros_like(ratio, dtype=torch.bool)
    else:
        dropped = (ratio < lo) | (ratio > hi)
        weight = ratio.masked_fill(dropped, 0.0)
    weight = weight.expand_as(mask) * mask
    counted = mask.bool()
    shown = (ratio.expand_as(mask) if sequence else ratio)[counted].float()
    q = torch.quantile(shown, torch.tensor([0.05, 0.5, 0.95])).tolist() if shown.numel() else [1.0] * 3
    stats = {"rollout/is_ratio_p05": q[0], "rollout/is_ratio_p50": q[1], "rollout/is_ratio_p95": q[2],
             "rollout/is_dropped_frac": dropped.expand_as(mask)[counted].float().mean().item() if shown.numel()
             else 0.0}
    return weight.detach(), stats


def corrected(new: PolicyOutput, weight: Tensor) -> PolicyOutput:
    """pi_theta's output whose per-token log-probs keep their values but pass gradients times `weight`."""
    logp = new.logp_tokens
    return PolicyOutput(weight * logp + (1 - weight) * logp.detach(), new.values)


class PolicyLag:
    """The last k+1 snapshots of the trainable weights; `sampling()` loads the oldest while the sampler runs."""

    def __init__(self, k: int, policy: torch.nn.Module):
        self.k = k
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.snapshots: deque[list[Tensor]] = deque(maxlen=k + 1)

    def record(self) -> None:
        """Keep the current weights (once per iteration, before its rollouts)."""
        if self.k:
            self.snapshots.append([p.detach().clone() for p in self.params])

    def _load(self, tensors: list[Tensor]) -> None:
        with torch.no_grad():
            for p, t in zip(self.params, tensors):
                p.copy_(t)

    @contextmanager
    def sampling(self):
        """The policy holds the oldest snapshot inside the block, its current weights again after it."""
        if not self.k or len(self.snapshots) < 2:  # no lag (or nothing older than now yet)
            yield
            return
        self._load(self.snapshots[0])
        try:
            yield
        finally:
            self._load(self.snapshots[-1])

    def state_dict(self) -> list[list[Tensor]]:
        return [[t.cpu() for t in s] for s in self.snapshots]

    def load_state_dict(self, state: list[list[Tensor]]) -> None:
        self.snapshots.clear()
        for s in state:
            self.snapshots.append([t.to(p.device) for t, p in zip(s, self.params)])


class LaggedEngine:
    """A rollout engine that samples with the lagged weights (synced into the engine inside the lag's block)."""

    def __init__(self, inner, lag: PolicyLag):
        self.inner, self.lag = inner, lag
        self.name = inner.name

    def sync(self, policy) -> None:
        """Deferred to `generate`, which syncs the lagged weights."""

    def generate(self, policy, *args, **kwargs):
        with self.lag.sampling():
            self.inner.sync(policy)
            return self.inner.generate(policy, *args, **kwargs)
