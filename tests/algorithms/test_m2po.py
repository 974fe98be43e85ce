"""M2PO (algorithms/m2po.py): the second-moment trust region by hand and against a port of the authors' breakpoint
search, and the loss against a hand computation with the ratio to the behaviour policy."""
from __future__ import annotations

import math

import pytest
import torch

from algorithms.base import make
from algorithms.m2po import NO_CLIP, trust_region_tau2
from harness.core.batch import Batch, PolicyOutput
from harness.core.objective import local


def authors_breakpoint(values: list[float], budget: float) -> float:
    """The search of Infini-AI-Lab/M2PO's `_solve_tau_from_sorted_delta2`, restated: sorted squared log-ratios v,
    target budget * n; the first k whose cap v_k reaches the target returns v_{k-1} (0 when k is 0)."""
    v = sorted(values)
    n, target = len(v), budget * len(v)
    for k in range(n):
        if v[k] * (n - k - 1) + sum(v[: k + 1]) >= target:
            return 0.0 if k == 0 else v[k - 1]
    return math.inf


def test_tau_by_hand():
    d2 = torch.tensor([0.01, 0.04, 0.25, 1.0])
    harmful = torch.ones(4, dtype=torch.bool)
    # sum min(d2, t) = 0.01 + 0.04 + 2 t = 0.1 * 4  ->  t = 0.175 (between the breakpoints 0.04 and 0.25)
    assert trust_region_tau2(d2, harmful, 0.1, local, "exact") == pytest.approx(0.175)
    assert trust_region_tau2(d2, harmful, 0.1, local) == pytest.approx(0.04) == authors_breakpoint(d2.tolist(), 0.1)
    assert trust_region_tau2(d2, harmful, 0.4, local) is None  # mean 0.325 <= 0.4: no trust region
    assert trust_region_tau2(d2, torch.zeros(4, dtype=torch.bool), 0.1, local) is None  # no harmful token


def test_breakpoint_matches_the_authors_search_on_random_tokens():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        d2 = torch.rand(30, generator=g) ** 3
        harmful = torch.rand(30, generator=g) > 0.3
        budget = float(torch.rand(1, generator=g)) * 0.2 + 0.005
        ours = trust_region_tau2(d2, harmful, budget, local)
        chosen = d2[harmful].tolist()
        if sum(chosen) / len(chosen) <= budget:
            assert ours is None
        else:
            assert ours == pytest.approx(authors_breakpoint(chosen, budget), abs=1e-7)


def test_loss_is_the_clipped_surrogate_of_the_ratio_to_the_behaviour_policy():
    P, K, T = 1, 2, 3
    mask = torch.ones(P, K, T, dtype=torch.bool)
    logp_old = torch.log(torch.tensor([[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]]))
    mu = torch.log(torch.tensor([[[0.1, 0.5, 0.5], [0.9, 0.5, 0.5]]]))  # a stale sampler
    batch = Batch(query=torch.zeros(P, 1, dtype=torch.long), response=torch.zeros(P, K, T, dtype=torch.long),
                  mask=mask, logp_old=logp_old, logp_ref=logp_old, score=torch.tensor([[1.0, 0.0]]),
                  reward=torch.tensor([[1.0, 0.0]]), sample_logp=mu)
    algo = make("m2po", {"samples_per_prompt": 2, "m2_budget": 0.01})
    prepared = algo.prepare(batch)
    # harmful: the first response (A > 0) has rho = 0.5 / 0.1 = 5 > 1 at token 0; the second (A < 0) has 0.5 / 0.9
    delta2 = [math.log(0.1 / 0.5) ** 2, math.log(0.9 / 0.5) ** 2]
    assert prepared.m2 == pytest.approx(sum(delta2) / 2)
    tau = math.sqrt(authors_breakpoint(delta2, 0.01))  # 0: the first breakpoint already exceeds the budget
    assert (prepared.low, prepared.high) == pytest.approx((1 - max(1 - math.exp(-tau), 0.3),
                                                           1 + max(math.exp(tau) - 1, 0.5)))
    batch.extras = prepared
    new = logp_old.clone().requires_grad_()
    loss, stats = algo.loss(batch, PolicyOutput(new))
    ratio = torch.exp(logp_old - mu)
    adv = prepared.advantages[..., None]
    want = torch.max(-adv * ratio, -adv * ratio.clamp(prepared.low, prepared.high)).mean()  # token mean
    assert loss.item() == pytest.approx(want.item()) and stats["m2po/clipfrac"] == pytest.approx(2 / 6)


def test_on_policy_rollouts_need_no_trust_region():
    P, K, T = 2, 2, 3
    logp = -torch.rand(P, K, T)
    batch = Batch(query=torch.zeros(P, 1, dtype=torch.long), response=torch.zeros(P, K, T, dtype=torch.long),
                  mask=torch.ones(P, K, T, dtype=torch.bool), logp_old=logp, logp_ref=logp,
                  score=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), reward=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                  sample_logp=logp.clone())
    prepared = make("m2po", {"samples_per_prompt": 2}).prepare(batch)
    assert (prepared.low, prepared.high, prepared.m2) == (*NO_CLIP, 0.0)
