"""Stale rollouts and rollout corrections (harness/core/off_policy.py): the weights against hand computations and
TRL's definition, no-ops when mu is pi_t, the lag on a tiny model, resume, refusals."""
from __future__ import annotations

import math

import pytest
import torch

from algorithms.base import make
from harness.core import checkpoint
from harness.core.batch import PolicyOutput
from harness.core.distributed import Runtime
from harness.core.errors import UserError
from harness.core.experience import Budget
from harness.core.models import load_models
from harness.core.off_policy import correction_weights, corrected
from harness.core.train import Trainer
from harness.tasks import resolve_paths

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
OLD = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.3]]))  # pi_t of each sampled token
MU = torch.log(torch.tensor([[0.25, 0.4, 0.9, 0.9]]))  # the sampler's: ratios 2, 0.5, 1 (and a padded token)


def weights(mode, low=None, high=3.0):
    return correction_weights(MU, OLD, MASK, mode, low, high)


def test_token_modes_by_hand():
    w, stats = weights("token_truncate", high=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 0.5, 1.0, 0.0]]))  # min(2, 1.5), 0.5, 1, padding 0
    w, _ = weights("token_truncate", low=0.8, high=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 0.8, 1.0, 0.0]]))
    w, stats = weights("token_mask", low=0.6, high=1.5)
    assert torch.allclose(w, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))  # 2 > 1.5 and 0.5 < 0.6 are dropped
    assert stats["rollout/is_dropped_frac"] == pytest.approx(2 / 3) and stats["rollout/is_ratio_p50"] == pytest.approx(1)
    w, _ = weights("token_mask", high=3.0)  # TRL: a kept token is weighted by its ratio, not by 1
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 1.0, 0.0]]))


def test_sequence_modes_by_hand():
    rho = 2.0 * 0.5 * 1.0  # the product over the counted tokens; the padded token's 0.3 / 0.9 does not count
    w, stats = weights("sequence_truncate", high=3.0)
    assert torch.allclose(w, torch.tensor([[rho, rho, rho, 0.0]]))
    two = correction_weights(MU.repeat(2, 1), OLD.repeat(2, 1) + torch.tensor([[0.0], [math.log(4)]]),
                             MASK.repeat(2, 1), "sequence_mask", None, 3.0)[0]
    assert torch.allclose(two[1], torch.zeros(4))  # ratio 4**3 * 1 = 64 > 3: the whole sequence dropped
    assert torch.allclose(two[0], torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_matches_trls_own_definition():
    """TRL 1.16's GRPOTrainer: ratio exp(old - sampling) (masked diff, summed for sequence modes), clamped or
    masked to 0 outside [min, max]."""
    torch.manual_seed(0)
    old, mu = -torch.rand(3, 6), -torch.rand(3, 6)
    mask = (torch.rand(3, 6) > 0.2).float()
    for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        diff = (old - mu) * mask
        r = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
        trl = r.clamp(min=0.7, max=1.3) if mode.endswith("truncate") else r.masked_fill((r < 0.7) | (r > 1.3), 0.0)
        ours, _ = correction_weights(mu, old, mask, mode, 0.7, 1.3)
        assert torch.allclose(ours, trl.expand_as(mask) * mask), mode


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_truncate", "token_mask", "sequence_mask"])
def test_every_correction_is_a_no_op_when_mu_is_pi_t(mode):
    logp = -torch.rand(2, 2, 5, requires_grad=True)
    mask = torch.ones(2, 2, 5)
    w, stats = correction_weights(logp.detach(), logp.detach(), mask, mode, 0.5, 2.0)
    assert torch.equal(w, mask) and stats["rollout/is_dropped_frac"] == 0.0
    plain, fixed = PolicyOutput(logp), corrected(PolicyOutput(logp), w)
    assert torch.equal(plain.logp_tokens, fixed.logp_tokens)
    g1, = torch.autograd.grad((plain.logp_tokens.exp() * 3).sum(), logp)
    g2, = torch.autograd.grad((fixed.logp_tokens.exp() * 3).sum(), logp)
    assert torch.equal(g1, g2)


def test_corrected_scales_each_tokens_gradient_as_trl_scales_its_loss():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    w = torch.tensor([[2.0, 0.0, 0.5]])
    adv = torch.tensor([[1.0, -1.0, 3.0]])
    ours, = torch.autograd.grad((-adv * torch.exp(corrected(PolicyOutput(logp), w).logp_tokens)).sum(), logp)
    trl, = torch.autograd.grad((-adv * torch.exp(logp) * w).sum(), logp)  # TRL: per_token_loss * ratio
    assert torch.allclose(ours, trl) and corrected(PolicyOutput(logp), w).logp_tokens.equal(logp)


def fresh(tiny_test_models, **train):
    cfg, _, data = tiny_test_models
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"prompts_per_iteration": 4, "lr": 1e-3,
                                                                       **train})})
    return cfg, load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None)), data


def fingerprint(policy) -> float:
    return float(sum(p.detach().double().sum() for p in policy.parameters() if p.requires_grad))


def test_staleness_samples_from_the_policy_of_k_updates_before(tiny_test_models):
    cfg, models, data = fresh(tiny_test_models, staleness=2)
    trainer = Trainer(cfg, make("rloo"), models, data.sft_train, Budget())
    used, after = [], [fingerprint(models.policy)]  # after[j]: the weights after update j (0: the start)
    inner = trainer.engine.inner.generate

    def spy(policy, *args, **kwargs):
        used.append(fingerprint(policy))
        return inner(policy, *args, **kwargs)

    trainer.engine.inner.generate = spy
    for t in range(1, 6):
        line = trainer.iteration(t)
        after.append(fingerprint(models.policy))
        assert fingerprint(models.policy) == after[-1]  # the current weights are back after sampling
    assert len(set(after)) == 6  # every update moved the weights
    assert used == [after[max(0, t - 1 - 2)] for t in range(1, 6)]
    # mu is the stale policy's: pi_t's log-probs differ from it once the lag bites
    assert line["rollout/logprob_drift_max"] > 1e-3


def test_staleness_zero_is_todays_run(tiny_test_models):
    lines = []
    for extra in ({}, {"staleness": 0, "rollout_correction": "none"}):
        cfg, models, data = fresh(tiny_test_models, **extra)
        trainer = Trainer(cfg, make("rebel"), models, data.sft_train, Budget())
        lines.append([trainer.iteration(t) for t in (1, 2)])
        lines[-1].append(fingerprint(models.policy))
    strip = [[{k: v for k, v in line.items() if not k.startswith("time/") and k != "wall_time_s"}
              for line in run[:2]] + run[2:] for run in lines]
    assert strip[0] == strip[1]
    assert "staleness" not in cfg.train.model_dump()  # run ids and config hashes of earlier runs unchanged


def test_a_correction_reweights_the_update_and_logs_its_ratios(tiny_test_models):
    cfg, models, data = fresh(tiny_test_models, staleness=1, rollout_correction="token_mask", correction_min=0.99,
                              correction_max=1.01)
    trainer = Trainer(cfg, make("grpo"), models, data.sft_train, Budget())
    lines = [trainer.iteration(t) for t in (1, 2, 3)]
    assert all(0 <= line["rollout/is_dropped_frac"] <= 1 for line in lines)
    assert lines[-1]["rollout/is_dropped_frac"] > 0  # a lag of one update moves some ratios out of [0.99, 1.01]
    assert lines[-1]["rollout/is_ratio_p05"] <= lines[-1]["rollout/is_ratio_p50"] <= lines[-1]["rollout/is_ratio_p95"]


def test_a_stale_run_resumes_with_its_snapshots(tiny_test_models, tmp_path):
    cfg, models, data = fresh(tiny_test_models, staleness=2)
    straight = Trainer(cfg, make("rloo"), models, data.sft_train, Budget())
    for t in (1, 2, 3):
        straight.iteration(t)
    checkpoint.save(tmp_path, 3, straight, Runtime.single())
    want = straight.iteration(4)

    cfg, models, data = fresh(tiny_test_models, staleness=2)
    resumed = Trainer(cfg, make("rloo"), models, data.sft_train, Budget())
    assert checkpoint.restore(tmp_path, resumed, Runtime.single()) == 3
    assert len(resumed.lag.snapshots) == 3
    got = resumed.iteration(4)
    def same(line):
        return {k: v for k, v in line.items() if not k.startswith("time/") and k != "wall_time_s"}

    assert same(got) == same(want)


def test_offline_optimizers_refuse_off_policy_settings(tiny_test_models):
    cfg, models, data = fresh(tiny_test_models, staleness=1)
    with pytest.raises(UserError, match="apply to online optimizers") as e:
        Trainer(cfg, make("dpo"), models, data.pref_train, Budget())
    assert "\n" not in str(e.value)
