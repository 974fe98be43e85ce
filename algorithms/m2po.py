"""M2PO: second-moment trust policy optimization (Zheng, Zhao and Chen 2025, arXiv 2510.01161), GRPO on stale data.

Made for rollouts sampled by an older policy mu (`train.staleness`): the ratio is to the behaviour policy,
rho_t = pi_theta(y_t) / mu(y_t) (mu: the sampler's log-probs of its tokens, `Batch.sample_logp`; pi_t when there are
none), and instead of a fixed clip the trust region is sized once per batch so that the second moment of the log-ratio
over the "harmful" tokens (A > 0 with rho > 1, A < 0 with rho < 1) stays within a budget:
    delta_t = log mu(y_t) - log pi_t(y_t)            at the update's start, over the harmful tokens H
    tau^2:   sum_{t in H} min(delta_t^2, tau^2) = budget * |H|     (no clip when mean_H delta^2 <= budget)
    bounds   [min(exp(-tau), 1 - min_clip_low), max(exp(tau), 1 + min_clip_high)]
    l_t    = max(-A rho_t, -A clip(rho_t, bounds)),   loss = token mean over the batch
Following the authors' code (Infini-AI-Lab/M2PO, verl/trainer/ppo/core_algos.py `compute_m2po_policy_loss`): budget
0.04 (their train scripts), minimum clip widths 0.3 / 0.5, verl's token-mean, GRPO advantages, no KL; tau^2 is
their breakpoint (the largest delta^2 below the equation's root; `tau_rule: exact` takes the root). One difference,
recorded in docs/fidelity.md: the bounds are fixed once per batch in `prepare`, over every rank's tokens (the update
is the same on any number of processes), where theirs are recomputed on each micro-batch from pi_theta (the same
values at the first step of an iteration, on one process).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import register
from algorithms.grpo import GRPO
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import aggregate, clipped_surrogate, masked_token_mean, max_over_ranks

NO_CLIP = (0.0, 1e5)  # the authors' bounds when the budget holds


@dataclass
class M2POBounds(Advantages):
    behaviour: Tensor | None = None  # [P, K, Lr] log mu of the sampled tokens
    low: float = NO_CLIP[0]
    high: float = NO_CLIP[1]
    m2: float = 0.0  # mean delta^2 over the harmful tokens, before the trust region


def trust_region_tau2(delta2: Tensor, harmful: Tensor, budget: float, sum_over_ranks, rule: str = "breakpoint",
                      steps: int = 60) -> float | None:
    """tau^2 over every rank's harmful tokens, or None when mean_H delta^2 <= budget (no trust region needed).
    "exact": the root t* of f(t) = sum_H min(delta^2, t) = budget |H| (bisection: f is monotone, and its sums are
    over ranks); "breakpoint" (the authors' code): the largest delta^2 below t*, 0 when there is none."""
    d2 = delta2 * harmful
    total, count = sum_over_ranks((d2.sum().double(), harmful.sum().double()))
    if count == 0 or total / count <= budget:
        return None
    target = budget * float(count)
    lo, hi = 0.0, float(max_over_ranks(d2.max(), sum_over_ranks))
    for _ in range(steps):
        mid = (lo + hi) / 2
        clipped, = sum_over_ranks(((torch.minimum(d2, torch.tensor(mid, dtype=d2.dtype)) * harmful).sum().double(),))
        lo, hi = (mid, hi) if float(clipped) < target else (lo, mid)
    root = (lo + hi) / 2
    if rule == "exact":
        return root
    below = harmful & (d2 < root * (1 - 1e-9))
    return float(max_over_ranks(torch.where(below, d2, torch.zeros_like(d2)).max(), sum_over_ranks))


@register("m2po")
@dataclass
class M2PO(GRPO):
    """M2PO: GRPO whose ratio is to the behaviour policy, clipped by a trust region sized to a second-moment budget"""

    kl_coef: float | None = 0.0
    loss_aggregation: str = "token_mean"
    m2_budget: float = 0.04
    """the largest mean squared log-ratio of the harmful tokens left unclipped"""
    min_clip_low: float = 0.3
    """the trust region is never tighter than [1 - min_clip_low, 1 + min_clip_high]"""
    min_clip_high: float = 0.5
    tau_rule: str = "breakpoint"
    """how tau^2 solves the budget: "breakpoint" (the authors' code: the largest squared log-ratio below the root)
    or "exact" (the root)"""

    def __post_init__(self):
        super().__post_init__()
        if self.tau_rule not in ("breakpoint", "exact") or self.m2_budget <= 0:
            raise ValueError("m2po needs tau_rule breakpoint or exact and a positive m2_budget")

    def prepare(self, batch: Batch) -> M2POBounds:
        base = super().prepare(batch)
        S = batch.sample_logp.shape[1] if batch.sample_logp is not None else 0
        behaviour = batch.logp_old.clone()
        if S:
            behaviour[:, :S] = batch.sample_logp
        mask, adv = batch.counted_mask, base.advantages[..., None]
        delta = (behaviour - batch.logp_old) * mask
        ratio = torch.exp(-delta)
        harmful = mask & (((adv > 0) & (ratio > 1)) | ((adv < 0) & (ratio < 1)))
        tau2 = trust_region_tau2(delta.pow(2), harmful, self.m2_budget, batch.sum_over_ranks, self.tau_rule)
        total, count = batch.sum_over_ranks(((delta.pow(2) * harmful).sum().double(), harmful.sum().double()))
        m2 = float(total / count) if count else 0.0
        low, high = NO_CLIP
        if tau2 is not None:
            tau = math.sqrt(tau2)
            low = 1 - max(1 - math.exp(-tau), self.min_clip_low)
            high = 1 + max(math.exp(tau) - 1, self.min_clip_high)
        return M2POBounds(base.advantages, base.length, behaviour, low, high, m2)

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        mask, prepared = batch.counted_mask, batch.prepared(M2POBounds)
        ratio = torch.exp(new.logp_tokens - prepared.behaviour)
        per_token, clipped = clipped_surrogate(ratio, prepared.advantages[..., None], 1 - prepared.low,
                                               prepared.high - 1)
        loss = aggregate(per_token, mask, self.loss_aggregation, batch.token_share, prepared.length)
        return loss, {"m2po/clipfrac": masked_token_mean(clipped, mask), "m2po/m2": prepared.m2,
                      "m2po/clip_low": prepared.low, "m2po/clip_high": prepared.high}
