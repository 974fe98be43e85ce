"""Each optimizer for a few iterations on the tiny-test preset: its loss behaves as its math says, its budget is
the protocol's, and it moves the proxy reward-model score of held-out samples up from the SFT policy (DPO, which
never samples: its implicit reward margin on held-out preference pairs grows)."""
import math

import pytest
import torch

from algorithms.base import make, names
from harness.app.config import resolve
from harness.core.experience import Budget, collect_pairs, encode_queries
from harness.core.models import load_models
from harness.tasks import resolve_paths
from harness.core.rollout import sample, truncate_after_eos
from harness.core.scoring import reward_scores
from harness.core.train import Trainer

ITERATIONS, PROMPTS, LR = 8, 16, 1e-4
OFFLINE_ITERATIONS = 30  # DPO's iterations are cheap (no sampling) and its signal per pair is weak
EVAL_PROMPTS = 128


def _iterations(name):
    return OFFLINE_ITERATIONS if make(name).data == "preference_pairs" else ITERATIONS


def _cfg(cache, name):
    return resolve("tiny-test", {"algo": name, "model": {"cache_dir": cache},
                                 "train": {"iterations": _iterations(name), "prompts_per_iteration": PROMPTS,
                                           "lr": LR}})


@torch.no_grad()
def held_out_rm_score(models, cfg, data) -> float:
    """Mean RM score of one sample per held-out prompt (fixed seed, the run's temperature and length)."""
    query = encode_queries(data.sft_eval[:EVAL_PROMPTS], models.tokenizer, cfg.task.max_prompt_tokens)
    raw = sample(models.policy.eval(), query, cfg.generation.max_new_tokens, cfg.generation.temperature,
                 models.pad_id, torch.Generator().manual_seed(1))
    response, mask = truncate_after_eos(raw, models.eos_id, models.pad_id)
    return reward_scores(models.reward_model, query, response, mask, models.pad_id).mean().item()


@torch.no_grad()
def held_out_dpo_margin(models, cfg, data) -> float:
    """Mean implicit reward margin beta * h of the current policy on held-out (chosen, rejected) pairs."""
    batch = collect_pairs(models, data.pref_eval[:64], cfg.task.max_prompt_tokens, cfg.generation.max_new_tokens,
                          1.0, 256, Budget())
    h = batch.logp_old_sum - batch.logp_ref_sum
    return (make("dpo").beta * (h[:, 0] - h[:, 1])).mean().item()


@pytest.fixture(scope="module")
def sft_score(tiny_test_models, harness_cache):
    _, _, data = tiny_test_models
    cfg = _cfg(harness_cache, "rebel")
    return held_out_rm_score(load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None)), cfg, data)


def _train(name, cache, data, args=None, iterations=None):
    """A few iterations; returns (models, config, metrics lines, losses of every loss call per iteration)."""
    cfg = _cfg(cache, name)
    if iterations is not None:
        cfg.train.iterations = iterations
    algo = make(name, args)
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=algo.needs_critic)
    trainer = Trainer(cfg, algo, models, data.pref_train if algo.data == "preference_pairs" else data.sft_train,
                      Budget())
    calls, original = [], algo.loss

    def recorded(batch, new):
        loss, stats = original(batch, new)
        calls[-1].append({"loss": loss.item(), **stats})
        return loss, stats

    algo.loss = recorded
    lines = []
    for i in range(1, cfg.train.iterations + 1):
        calls.append([])
        lines.append(trainer.iteration(i))
    assert all(math.isfinite(line["loss"]) for line in lines)
    return models, cfg, lines, calls


def _first_last(calls, key="loss"):
    return [c[0][key] for c in calls], [c[-1][key] for c in calls]


CHECKS = {}


def check(*algos):
    def add(fn):
        for a in algos:
            CHECKS[a] = fn
        return fn
    return add


@check("rebel", "rebel_hybrid", "rebel_preference")
def _regression_error_shrinks_within_each_batch(calls, lines):
    first, last = _first_last(calls)
    assert sum(last) < sum(first)  # 4 epochs fit the relative-reward regression on each batch


@check("iterative_dpo")
def _starts_each_batch_at_log_two_then_fits(calls, lines):
    first, last = _first_last(calls)
    assert all(abs(f - math.log(2)) < 1e-5 for f in first)  # reference = pi_t: ratio one at the first step
    assert sum(last) < sum(first)


@check("rloo", "rloo_k4")
def _surrogate_starts_at_zero_then_improves(calls, lines):
    first, _ = _first_last(calls)
    assert all(abs(f) < 1e-5 for f in first)  # leave-one-out advantages sum to zero per prompt at ratio one
    _moved_from_the_reference(lines)  # one update per batch (the default): the later epochs' test is below


@check("ppo")
def _policy_loss_starts_at_zero_and_the_critic_learns(calls, lines):
    first, last = _first_last(calls, "ppo/policy_loss")
    assert all(abs(f) < 1e-5 for f in first)  # whitened advantages have mean zero over valid tokens
    vf_first, vf_last = _first_last(calls, "ppo/value_loss")
    assert sum(vf_last) < sum(vf_first)


@check("reinforce")
def _baseline_tracks_rewards(calls, lines):
    assert len(calls[0]) == 1  # one sample, one epoch, one step per batch
    rewards = [line["reward"] for line in lines]
    assert min(rewards) - 0.5 < calls[-1][0]["reinforce/baseline"] < max(rewards) + 0.5


@check("dpo")
def _dpo_loss_starts_at_log_two_and_falls(calls, lines):
    first = [c[0]["loss"] for c in calls]
    assert abs(first[0] - math.log(2)) < 1e-5 and sum(first[-3:]) / 3 < math.log(2)


@check("grpo")
def _policy_term_is_zero_at_ratio_one_and_the_k3_term_is_the_loss(calls, lines):
    # one update per batch: ratio 1, group-centred advantages average to 0 per response; the backbone adds the KL
    assert all(abs(c[0]["loss"]) < 1e-5 for c in calls)  # the optimizer's own loss: the policy term
    for line in lines:
        assert abs(line["loss"] - line["objective/kl_loss"]) < 1e-5 and line["objective/kl_per_token"] >= 0
    assert lines[-1]["objective/kl_loss"] > 0  # the policy moved away from the reference


def _moved_from_the_reference(lines):
    """What the updates change: the first rollouts come from the reference itself (sampled KL 0), later ones from a
    policy the updates moved away from it."""
    later = [line["kl"] for line in lines[1:]]
    assert abs(lines[0]["kl"]) < 1e-5 and sum(later) / len(later) > 1e-3, [line["kl"] for line in lines]


@check("gspo", "reinforce_pp")
def _surrogate_is_minus_the_mean_advantage_at_ratio_one(calls, lines):
    assert all(abs(c[0]["loss"]) < 1e-5 for c in calls)  # group-centred (GSPO) or globally whitened (REINFORCE++)
    _moved_from_the_reference(lines)


@check("dr_grpo", "dapo", "cispo")
def _no_kl_term_and_no_clipping_at_ratio_one(calls, lines):
    for c in calls:
        name = next(k.split("/")[0] for k in c[0] if k.endswith("/clipfrac"))
        assert "objective/kl_loss" not in c[0] and c[0][f"{name}/clipfrac"] == 0.0
    _moved_from_the_reference(lines)


@check("sapo")
def _soft_gate_is_open_at_ratio_one_and_weighs_negative_advantages_less(calls, lines):
    # ratio 1: every token's gate weight 4 s (1 - s) is 1 (nothing damped), and the loss -(2/N) sum_i A_i / tau_i is
    # below 0 because the centred advantages' negative half is divided by the larger tau_neg
    for c in calls:
        assert c[0]["sapo/damped_frac"] == 0.0 and c[0]["loss"] <= 1e-7
    assert any(c[0]["loss"] < -1e-4 for c in calls)
    _moved_from_the_reference(lines)


@check("astar_po")
def _regression_starts_at_the_squared_advantage(calls, lines):
    # one update per batch at pi_theta = pi_t: the first iteration's policy is the reference, so the implicit reward
    # is 0 and the loss is the mean squared optimal advantage (r - V*)^2, which V* centres
    first = calls[0][0]
    assert abs(first["astar_po/implicit_reward"]) < 1e-6 and first["loss"] >= first["astar_po/advantage"] ** 2 - 1e-6
    _moved_from_the_reference(lines)


@check("m2po")
def _on_policy_samples_open_no_trust_region(calls, lines):
    # staleness 0: the sampler is pi_t (drift ~1e-7), so the second moment is ~0 and no clip bound is set
    for c in calls:
        assert c[0]["m2po/m2"] < 1e-6 and c[0]["m2po/clip_high"] == 1e5 and c[0]["m2po/clipfrac"] == 0.0
    _moved_from_the_reference(lines)


def test_rloo_later_epochs_improve_the_surrogate(tiny_test_models, harness_cache):
    """The clipped multi-epoch variant (--set algo.epochs=2): each batch's first update starts at ratio one (loss 0
    up to rounding), the second epoch's loss on the same batch is below it."""
    _, _, data = tiny_test_models
    _, _, _, calls = _train("rloo", harness_cache, data, {"epochs": 2}, iterations=2)
    assert all(len(c) == 2 for c in calls)
    first, last = _first_last(calls)
    assert all(abs(f) < 1e-5 for f in first) and all(v < 0 for v in last), calls


RESPONSES_PER_PROMPT = {"ppo": 1, "reinforce": 1, "rebel": 2, "iterative_dpo": 2, "rloo": 2, "rloo_k4": 4, "dpo": 0,
                        "rebel_hybrid": 1, "rebel_preference": 3, "grpo": 4, "dr_grpo": 4, "dapo": 4, "gspo": 4,
                        "cispo": 4, "reinforce_pp": 1, "sapo": 4,
                        "astar_po": 1 + 8, "m2po": 4}  # A*-PO: its sample, and 8 of pi_ref once per new prompt (all are new here)


@pytest.mark.parametrize("name", names())
def test_optimizer_trains_on_the_tiny_preset(name, tiny_test_models, harness_cache, sft_score):
    _, _, data = tiny_test_models
    models, cfg, lines, calls = _train(name, harness_cache, data)
    CHECKS[name](calls, lines)
    algo = make(name)
    last = lines[-1]
    n = _iterations(name)
    if algo.dynamic_sampling:  # groups with equal scores were dropped and refilled: more prompts were sampled
        assert last["prompts"] >= n * PROMPTS and last["groups_dropped"] >= 0
    else:
        assert last["prompts"] == n * PROMPTS
    assert last["responses"] == RESPONSES_PER_PROMPT[name] * last["prompts"]
    assert last["optimizer_steps"] == n * algo.epochs * algo.minibatches
    if algo.data == "preference_pairs":
        assert last["rm_queries"] == 0 and "time/generation_s" not in last
        assert held_out_dpo_margin(models, cfg, data) > 0.03  # 0 at the start: policy == reference
    else:
        score = held_out_rm_score(models, cfg, data)
        assert score > sft_score + 0.1, (score, sft_score)


def test_ppo_unmasked_variant_counts_post_eos_tokens(tiny_test_models, harness_cache):
    _, _, data = tiny_test_models
    cfg = _cfg(harness_cache, "ppo")
    algo = make("ppo", {"mask_post_eos": False})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=True)
    trainer = Trainer(cfg, algo, models, data.sft_train, Budget())
    batch = trainer.collect(trainer.next_prompts())
    assert batch.logp_mask.all() and not batch.mask.all()  # some responses ended before the last token
    post_eos = ~batch.mask
    assert (batch.logp_old[post_eos] != 0).all() and (batch.values_old[post_eos] != 0).any()
    assert torch.allclose(batch.token_reward.sum(-1), batch.reward, atol=1e-5)
    line = trainer.iteration(1)
    assert math.isfinite(line["loss"])
