"""The GRPO family (grpo, dr_grpo, dapo, gspo, cispo, reinforce_pp): hand computations on tiny tensors, and
numerical parity with TRL 1.16's GRPOTrainer for the loss types we share.

TRL parity: TRL's `GRPOTrainer._compute_loss` (trl/trainer/grpo_trainer.py, `_compute_loss`: per_token_loss from
coef_1 = exp(logp - old_per_token_logps), the k3 KL against ref_per_token_logps, then the `loss_type` aggregation)
is called itself, on a real trainer, with its policy forward `_get_per_token_logps_and_entropies` replaced by the
same random per-token log-probs our loss receives. Loss values and gradients are compared. Advantages: TRL's
`_generate_and_score_completions` on fixed completions and fixed rewards (as tests/algorithms/test_trl_parity.py
does for RLOO) against `harness.core.objective.group_advantages`, for scale_rewards group / batch / none.
"""
import copy
import math

import pytest
import torch

from algorithms.base import make
from algorithms.cispo import cispo_token_loss
from algorithms.dapo import overlong_penalty
from algorithms.gspo import sequence_ratio
from harness.core.batch import Advantages, Batch, PolicyOutput
from harness.core.objective import group_advantages, kl_per_token, reward_to_go, token_share
from harness.core.off_policy import correction_weights
from harness.core.train import objective_loss

FAMILY = ["grpo", "dr_grpo", "dapo", "gspo", "cispo", "reinforce_pp"]


def _batch(P, K, L, lengths=None, **fields) -> Batch:
    mask = torch.ones(P, K, L, dtype=torch.bool) if lengths is None else torch.arange(L) < lengths[..., None]
    base = dict(query=torch.zeros(P, 2, dtype=torch.long), response=torch.zeros(P, K, L, dtype=torch.long),
                mask=mask, logp_old=torch.zeros(P, K, L), logp_ref=torch.zeros(P, K, L))
    batch = Batch(**{**base, **fields})
    if batch.score is not None and batch.reward is None:
        batch.reward = batch.score  # KL in the loss (or none): the backbone's reward is the score
    batch.token_share = token_share(batch.counted_mask)
    return batch


# --- settings ----------------------------------------------------------------------------------------------------

def test_paper_defaults_and_one_line_errors():
    grpo, dr, dapo, gspo, cispo, rpp = (make(n) for n in FAMILY)
    assert (grpo.samples_per_prompt, grpo.eps_low, grpo.kl_placement, grpo.kl_coef, grpo.kl_estimator,
            grpo.loss_aggregation, grpo.scale_rewards) == (4, 0.2, "loss", 0.04, "k3", "seq_mean_token_mean", "group")
    assert all(a.kl_coef == 0.0 for a in (dr, dapo, gspo, cispo)) and dapo.dynamic_sampling == 3
    assert (rpp.kl_placement, rpp.kl_estimator, rpp.kl_coef) == ("reward", "k1", None)  # train.kl_coef
    assert (dr.scale_rewards, dr.loss_aggregation, dr.kl_coef) == ("none", "seq_mean_token_sum_norm", 0.0)
    assert (dapo.eps_low, dapo.eps_high, dapo.kl_coef, dapo.loss_aggregation) == (0.2, 0.28, 0.0, "token_mean")
    assert (gspo.eps_low, gspo.eps_high) == (3e-4, 4e-4) and 1 + cispo.eps_high == 5.0
    assert rpp.samples_per_prompt == 1 and rpp.clip == 0.2 and rpp.gamma == 1.0
    for name, args in [("grpo", {"loss_aggregation": "sum"}), ("grpo", {"kl_estimator": "k4"}),
                       ("dr_grpo", {"scale_rewards": "prompt"}), ("gspo", {"samples_per_prompt": 1}),
                       ("dapo", {"overlong_cache": 0.0}), ("reinforce_pp", {"gamma": 2.0}),
                       ("grpo", {"kl_placement": "advantage"}), ("rebel", {"kl_coef": -1.0}),
                       ("dpo", {"kl_placement": "loss"}), ("dpo", {"kl_estimator": "k3"})]:
        with pytest.raises(Exception) as e:
            make(name, args)
        assert "\n" not in str(e.value) and name in str(e.value)


# --- GRPO: advantages of the backbone's reward (the score: the KL is in the loss) ---------------------------------

def test_grpo_advantages_and_the_backbones_kl_term_in_the_loss():
    score = torch.tensor([[1.0, 3.0]])
    ref = torch.tensor([[[-1.0, -2.0], [-0.5, 0.0]]])
    logp = torch.tensor([[[-1.5, -1.0], [-0.5, 0.0]]])
    batch = _batch(1, 2, 2, score=score, logp_old=logp, logp_ref=ref,
                   mask=torch.tensor([[[1, 1], [1, 0]]], dtype=torch.bool))
    algo = make("grpo", {"samples_per_prompt": 2})
    batch.extras = algo.prepare(batch)
    assert torch.allclose(batch.extras.advantages, torch.tensor([[-1.0, 1.0]]) / (math.sqrt(2) + 1e-4))
    loss, stats = objective_loss(algo, batch, PolicyOutput(logp.clone()), algo.kl_coef)
    # ratio 1: policy term -A per token; k3 per token: log r = 0.5, -1 | 0: e^0.5 - 1.5, e^-1 + 0 | 0
    a = 1 / (math.sqrt(2) + 1e-4)
    k3 = [math.exp(0.5) - 1.5, math.exp(-1)]
    expected = ((a + 0.04 * k3[0]) + (a + 0.04 * k3[1])) / 2 / 2 + (-a + 0.0) / 2  # seq means of token means
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert math.isclose(stats["objective/kl_per_token"], sum(k3) / 3, rel_tol=1e-5)
    policy_only, stats = objective_loss(algo, batch, PolicyOutput(logp.clone()), 0.0)  # kl_placement=reward
    assert math.isclose(policy_only.item(), (a + a) / 2 / 2 - a / 2, abs_tol=1e-7) and "objective/kl_loss" not in stats


def test_dr_grpo_divides_token_sums_by_the_constant_length():
    batch = _batch(1, 2, 4, lengths=torch.tensor([[3, 1]]), score=torch.tensor([[0.0, 2.0]]))
    algo = make("dr_grpo", {"samples_per_prompt": 2})
    batch.extras = algo.prepare(batch)
    assert torch.equal(batch.extras.advantages, torch.tensor([[-1.0, 1.0]]))  # no std division
    assert batch.extras.length == 4  # Lr (the widest over ranks: tests/test_invariance.py)
    loss, _ = algo.loss(batch, PolicyOutput(torch.zeros(1, 2, 4)))
    assert math.isclose(loss.item(), (3 * 1.0 + 1 * -1.0) / 2 / 4)  # mean over responses of sum / Lr
    algo = make("dr_grpo", {"samples_per_prompt": 2, "length_normaliser": 8})
    batch.extras = algo.prepare(batch)
    loss, _ = algo.loss(batch, PolicyOutput(torch.zeros(1, 2, 4)))
    assert math.isclose(loss.item(), 2 / 2 / 8)


# --- DAPO: overlong shaping, dynamic-sampling mask -----------------------------------------------------------------

def test_dapo_soft_overlong_punishment_by_hand():
    length = torch.tensor([10.0, 16.0, 17.0, 18.0, 20.0, 25.0])
    # L_max 20, L_cache 4: 0 up to 16, then (16 - |y|) / 4 down to -1 at 20, -1 beyond
    assert torch.allclose(overlong_penalty(length, 20, 4), torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))


def test_dapo_shapes_rewards_of_long_responses_by_the_generation_cap():
    score = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    batch = _batch(2, 2, 3, lengths=torch.tensor([[3, 3], [2, 1]]), score=score)
    batch.max_new_tokens = 3  # L_max: the generation cap; L_cache = 0.5 * 3 = 1.5
    shaped = make("dapo", {"samples_per_prompt": 2, "overlong_cache": 0.5})
    assert torch.allclose(shaped.rewards(batch), torch.tensor([[0.0, 0.0], [-1 / 3, 1.0]]))
    assert torch.equal(make("dapo", {"overlong_max_length": 0}).rewards(batch), score)  # no shaping
    assert torch.allclose(make("dapo", {"overlong_max_length": 20, "overlong_cache": 0.2}).rewards(batch), score)


# --- GSPO, CISPO, REINFORCE++ --------------------------------------------------------------------------------------

def test_gspo_sequence_ratio_and_clip_by_hand():
    new = torch.tensor([[[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]]])
    old = torch.tensor([[[-1.2, -2.1, 0.0], [-0.5, 0.0, 0.0]]])
    mask = torch.tensor([[[1, 1, 0], [1, 0, 0]]], dtype=torch.bool)
    s = sequence_ratio(new, old, mask)
    assert torch.allclose(s, torch.tensor([[math.exp(0.15), 1.0]]))  # geometric mean of (e^0.2, e^0.1)
    algo = make("gspo", {"samples_per_prompt": 2})
    batch = _batch(1, 2, 3, mask=mask, logp_old=old, extras=Advantages(torch.tensor([[1.0, -1.0]])))
    logp = new.clone().requires_grad_()
    loss, stats = algo.loss(batch, PolicyOutput(logp))
    loss.backward()
    # response 0: ratio e^0.15 > 1 + 4e-4, A > 0: clipped, no gradient; response 1: -A * 1 = 1, gradient A / 2
    assert math.isclose(loss.item(), (-(1 + 4e-4) + 1.0) / 2, rel_tol=1e-3) and stats["gspo/clipfrac"] == 0.5
    assert (logp.grad[0, 0] == 0).all() and math.isclose(logp.grad[0, 1, 0].item(), 0.5, rel_tol=1e-6)


def test_cispo_keeps_the_gradient_of_clipped_tokens():
    logp = torch.tensor([0.0, -1.0, -2.0], requires_grad=True)
    old = torch.tensor([-2.0, -1.0, 0.0])  # ratios e^2 (above 5: clipped), 1, e^-2
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, clipped = cispo_token_loss(logp, old, adv, eps_low=1.0, eps_high=4.0)
    assert clipped.tolist() == [True, False, False]
    w = torch.tensor([5.0, 1.0, math.exp(-2)])
    assert torch.allclose(loss, -w * adv * logp.detach())
    loss.sum().backward()
    assert torch.allclose(logp.grad, -w * adv)  # every token's gradient, weighted by its (clipped) ratio


def test_reinforce_pp_returns_are_whitened_over_all_tokens_of_the_batch():
    assert torch.allclose(reward_to_go(torch.tensor([1.0, 0.0, 2.0]), 1.0), torch.tensor([3.0, 2.0, 2.0]))
    assert torch.allclose(reward_to_go(torch.tensor([1.0, 0.0, 2.0]), 0.5), torch.tensor([1.5, 1.0, 2.0]))
    token_reward = torch.tensor([[[0.1, -0.2, 1.0]], [[0.3, 0.5, 0.0]]])
    mask = torch.tensor([[[1, 1, 1]], [[1, 1, 0]]], dtype=torch.bool)
    batch = _batch(2, 1, 3, mask=mask, token_reward=token_reward)
    algo = make("reinforce_pp")
    batch.extras = algo.prepare(batch)
    returns = torch.tensor([0.9, 0.8, 1.0, 0.8, 0.5])  # reward-to-go of each counted token
    white = (returns - returns.mean()) / returns.std(unbiased=False)
    assert torch.allclose(batch.extras.advantages[mask], white, atol=1e-4)
    loss, _ = algo.loss(batch, PolicyOutput(torch.zeros(2, 1, 3)))
    assert abs(loss.item()) < 1e-6  # ratio one: -mean(A) over the tokens the whitening used


# --- TRL 1.16 parity -------------------------------------------------------------------------------------------------

P, K, T = 2, 4, 6


@pytest.fixture(scope="module")
def trl_grpo(tiny_test_models, tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    _, models, _ = tiny_test_models
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), report_to="none", use_cpu=True,
                      disable_tqdm=True, save_strategy="no", logging_steps=10**6, seed=0,
                      per_device_train_batch_size=P * K, num_generations=K, beta=0.04, max_completion_length=T)
    trainer = GRPOTrainer(model=copy.deepcopy(models.policy), processing_class=models.tokenizer,
                          reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                          train_dataset=Dataset.from_dict({"prompt": ["a b"] * (P * K)}), args=args)
    trainer.current_gradient_accumulation_steps = 1  # set by the Trainer's training loop
    trainer.model.train()
    return trainer, models.tokenizer


def _tensors(old_noise):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([[6, 3, 1, 5], [2, 6, 4, 6]])
    mask = torch.arange(T) < lengths[..., None]
    logp = -2 * torch.rand(P, K, T, generator=g) * mask
    old = (logp + old_noise * torch.randn(P, K, T, generator=g)) * mask
    ref = (logp + 0.3 * torch.randn(P, K, T, generator=g)) * mask
    return logp, old, ref, mask, torch.randn(P, K, generator=g)


# (our optimizer, its settings, TRL loss_type, TRL attributes, pi_t's distance from pi_theta)
CASES = {
    "grpo": ("grpo", {}, "grpo", {"beta": 0.04, "use_bias_correction_kl": False}, 0.3),
    "grpo_kl_ratio_correction": ("grpo", {"kl_ratio_correction": True}, "grpo", {"beta": 0.04}, 0.3),
    "grpo_token_mean=bnpo": ("grpo", {"loss_aggregation": "token_mean"}, "bnpo",
                             {"beta": 0.04, "use_bias_correction_kl": False}, 0.3),
    "grpo_k3_off=grpo_beta0": ("grpo", {"kl_coef": 0.0}, "grpo", {"beta": 0.0}, 0.3),
    "dr_grpo": ("dr_grpo", {}, "dr_grpo", {"beta": 0.0, "max_completion_length": T}, 0.3),
    "dapo": ("dapo", {}, "dapo", {"beta": 0.0, "epsilon_high": 0.28}, 0.3),
    "dapo=bnpo": ("dapo", {}, "bnpo", {"beta": 0.0, "epsilon_high": 0.28}, 0.3),
    "cispo": ("cispo", {}, "cispo", {"beta": 0.0, "epsilon_high": 5.0}, 1.0),
    "gspo": ("gspo", {}, "grpo", {"beta": 0.0, "epsilon_low": 3e-4, "epsilon_high": 4e-4,
                                   "importance_sampling_level": "sequence"}, 1e-3),
    "sapo": ("sapo", {}, "sapo", {"beta": 0.0}, 1.0),
    "sapo_kl": ("sapo", {"kl_coef": 0.04}, "sapo", {"beta": 0.04, "use_bias_correction_kl": False}, 1.0),
}


def _parity(trainer, monkeypatch, case: str, correction: str | None = None) -> float:
    """max |loss diff|, |grad diff| of our objective and TRL's `_compute_loss` on the same tensors; with a rollout
    `correction`, the weights of harness/core/off_policy.py against TRL's importance_sampling_ratio input."""
    ours_name, args, loss_type, attrs, noise = CASES[case]
    attrs = dict(attrs)
    monkeypatch.setattr(trainer.args, "use_bias_correction_kl", attrs.pop("use_bias_correction_kl", True))
    for k, v in {"loss_type": loss_type, "epsilon_low": 0.2, "epsilon_high": 0.2,
                 "importance_sampling_level": "token", "use_vllm": correction is not None,
                 "vllm_importance_sampling_correction": correction is not None, **attrs}.items():
        monkeypatch.setattr(trainer, k, v)
    logp, old, ref, mask, score = _tensors(noise)
    algo = make(ours_name, {"samples_per_prompt": K, **args})
    batch = _batch(P, K, T, mask=mask, logp_old=old, logp_ref=ref, score=score)
    batch.extras = algo.prepare(batch)
    extra = {}
    if correction is not None:  # a sampler whose log-probs are off by up to 0.5 nats per token
        mu = (old + 0.5 * torch.randn(P, K, T, generator=torch.Generator().manual_seed(1))) * mask
        batch.correction, _ = correction_weights(mu, old, mask.float(), correction, 0.5, 2.0)
        extra["importance_sampling_ratio"] = batch.correction.reshape(P * K, T)
    leaf = logp.clone().requires_grad_()
    ours, _ = objective_loss(algo, batch, PolicyOutput(leaf), algo.kl_coef)
    ours_grad, = torch.autograd.grad(ours, leaf)

    theirs_leaf = logp.reshape(P * K, T).clone().requires_grad_()  # TRL's rows: the K completions of a prompt
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies",
                        lambda *a, **k: (theirs_leaf, torch.zeros(P * K, T), None))
    m = mask.reshape(P * K, T).long()
    inputs = {"prompt_ids": torch.ones(P * K, 2, dtype=torch.long), "prompt_mask": torch.ones(P * K, 2, dtype=torch.long),
              "completion_ids": torch.ones(P * K, T, dtype=torch.long), "completion_mask": m,
              "advantages": batch.extras.advantages.reshape(-1), "old_per_token_logps": old.reshape(P * K, T),
              "ref_per_token_logps": ref.reshape(P * K, T), "num_items_in_batch": m.sum(), **extra}
    theirs = trainer._compute_loss(trainer.model, inputs)
    theirs_grad, = torch.autograd.grad(theirs, theirs_leaf)
    assert ours_grad.abs().max() > 1e-3  # a real comparison
    if correction is None:  # a correction changes TRL's loss value (its weight multiplies the loss), not ours
        assert abs(ours.item()) > 1e-4
        diff = abs(ours.item() - theirs.item())
    else:
        diff = 0.0
    diff = max(diff, (ours_grad.reshape(P * K, T) - theirs_grad).abs().max().item())
    print(f"TRL parity {case} {correction or ''}: loss {ours.item():.6f} vs {theirs.item():.6f}, max abs diff "
          f"{diff:.2e}")
    return diff


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradient_match_trl_grpo_trainer(trl_grpo, case, monkeypatch):
    assert _parity(trl_grpo[0], monkeypatch, case) < 1e-6


@pytest.mark.parametrize("correction", ["token_truncate", "sequence_truncate", "token_mask", "sequence_mask"])
@pytest.mark.parametrize("case", ["grpo", "cispo", "sapo"])
def test_rollout_correction_gradients_match_trls_importance_sampling(trl_grpo, case, correction, monkeypatch):
    """TRL multiplies each token's policy loss (not its KL term) by the weight; the backbone scales the gradient of
    each token's log-prob by it: the same gradient."""
    assert _parity(trl_grpo[0], monkeypatch, case, correction) < 1e-6


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_trl(trl_grpo, scale, monkeypatch):
    trainer, tok = trl_grpo
    monkeypatch.setattr(trainer, "scale_rewards", scale)
    monkeypatch.setattr(trainer, "beta", 0.0)
    rewards = torch.tensor([[0.3, -1.0, 2.5, 0.7], [1.0, 1.0, -0.5, 0.0]])
    completion = tok(" my sister lied", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    def fixed_generate(prompts):
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        n = len(prompts)
        return ids, [list(completion)] * n, None, [tok.decode(completion)] * n, None, {}, None, None

    monkeypatch.setattr(trainer, "_generate", fixed_generate)
    monkeypatch.setattr(trainer, "_calculate_rewards", lambda *a, **kw: rewards.reshape(-1, 1))
    inputs = [{"prompt": p} for p in ("a b", "c d") for _ in range(K)]
    theirs = trainer._generate_and_score_completions(inputs)["advantages"]
    ours = group_advantages(rewards, scale)
    print(f"TRL parity advantages scale_rewards={scale}: max abs diff {(ours.flatten() - theirs.float()).abs().max():.2e}")
    assert torch.allclose(ours.flatten(), theirs.float(), atol=1e-6)


def test_token_share_normaliser_is_trl_dapo_num_items_in_batch():
    mask = torch.arange(T) < torch.tensor([[6, 3, 1, 5], [2, 6, 4, 6]])[..., None]
    assert token_share(mask).sum() == mask.sum()  # TRL's num_items_in_batch, one process, one step


# --- the backbone's dynamic sampling (DAPO) --------------------------------------------------------------------------

def test_dynamic_sampling_drops_equal_score_groups_refills_and_counts_them():
    from types import SimpleNamespace

    from harness.core.distributed import Runtime
    from harness.core.experience import Budget
    from harness.core.train import Trainer

    def scored(scores, width):  # a batch of len(scores) prompts, K = 2, responses `width` long
        n = len(scores)
        return _batch(n, 2, width, score=torch.tensor(scores), query=torch.full((n, 3), 7))

    rounds = iter([scored([[1.0, 1.0], [0.0, 2.0], [3.0, 3.0]], 2),   # prompts 0 and 2: no signal
                   scored([[5.0, 5.0], [1.0, 0.0], [2.0, 4.0]], 4)])  # refill: 2 informative, 1 more dropped
    fake = SimpleNamespace(algo=make("dapo", {"samples_per_prompt": 2, "dynamic_sampling": 2}),
                           collect_once=lambda examples: next(rounds), next_prompts=lambda: None,
                           runtime=Runtime.single(), models=SimpleNamespace(pad_id=0), budget=Budget(groups_dropped=0))
    batch = Trainer.collect(fake, [None] * 3)
    assert batch.score.tolist() == [[0.0, 2.0], [1.0, 0.0], [2.0, 4.0]] and fake.budget.groups_dropped == 3
    assert batch.response.shape == (3, 2, 4) and not batch.mask[0, :, 2:].any()  # joined, padded to the widest
    fake.algo, rounds = make("grpo", {"samples_per_prompt": 2}), iter([scored([[1.0, 1.0]], 2)])
    assert Trainer.collect(fake, [None]).num_prompts == 1  # GRPO keeps every group


# --- invariance of the whole update under micro-batching (harness/core/train.py) -----------------------------------------

@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")  # SGD at lr 0 swapped in below
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo", "cispo", "reinforce_pp"])
def test_update_gradient_is_the_same_whatever_the_micro_batch(name, tiny_test_models):
    from harness.core.experience import Budget
    from harness.core.train import Trainer

    cfg, models, data = tiny_test_models
    cfg = cfg.model_copy(deep=True)
    cfg.train.prompts_per_iteration = 8
    algo = make(name, {"epochs": 2, "kl_coef": 0.1})  # two epochs: pi_t is scored, not adopted; the KL term on
    trainer = Trainer(cfg, algo, models, data.sft_train, Budget())
    state = copy.deepcopy(models.policy.state_dict())
    batch = trainer.collect(trainer.next_prompts())
    grads = []
    for micro in (None, 3):
        models.policy.load_state_dict(state)
        trainer.cfg.train.micro_batch_prompts = micro
        trainer.optimizer = torch.optim.SGD(models.trainable_parameters(), lr=0.0)  # gradients only, weights fixed
        torch.manual_seed(0)
        trainer.generator.manual_seed(0)
        trainer.update(copy.copy(batch), 1)
        grads.append(torch.cat([p.grad.flatten() for p in models.trainable_parameters()]))
    models.policy.load_state_dict(state)
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


# --- KL estimators on a tiny model: Monte Carlo against the exact KL ---------------------------------------------------

@torch.no_grad()
def test_kl_estimators_against_the_exact_kl_of_a_tiny_model(tiny_test_models):
    """Responses sampled from a perturbed tiny policy; at each position the exact KL(pi || pi_ref) over the whole
    vocabulary, and each estimator's exact expectation there. Summed over a response: k1 and k3 are unbiased
    (their expectation IS the exact KL), k2 is not; the Monte Carlo means of all three are within 4 standard errors
    of their expectations."""
    from harness.core.experience import encode_queries
    from harness.core.rollout import sample, truncate_after_eos
    from harness.core.scoring import sequence_logprobs

    cfg, models, data = tiny_test_models
    policy = copy.deepcopy(models.policy).eval()
    g = torch.Generator().manual_seed(0)
    for p in policy.parameters():  # move pi away from pi_ref = the SFT policy
        p.add_(0.3 * torch.randn(p.shape, generator=g) * p.std())
    query = encode_queries(data.sft_eval[:48], models.tokenizer, cfg.task.max_prompt_tokens).repeat_interleave(4, 0)
    raw = sample(policy, query, 12, 1.0, models.pad_id, torch.Generator().manual_seed(1))
    response, mask = truncate_after_eos(raw, models.eos_id, models.pad_id)
    new = sequence_logprobs(policy, query, response, mask, models.pad_id, 1.0, keep_logits=True)
    ref = sequence_logprobs(models.policy, query, response, mask, models.pad_id, 1.0, keep_logits=True)
    logp, logq = torch.log_softmax(new.logits.double(), -1), torch.log_softmax(ref.logits.double(), -1)
    m = mask.double()
    exact = ((logp.exp() * (logp - logq)).sum(-1) * m).sum(-1)  # [B] sum over positions of the exact KL
    expected = {k: ((logp.exp() * kl_per_token(logp, logq, k)).sum(-1) * m).sum(-1) for k in ("k1", "k2", "k3")}
    assert torch.allclose(expected["k1"], exact, rtol=1e-4) and torch.allclose(expected["k3"], exact, rtol=1e-4)
    k2_bias = (expected["k2"] - exact).mean().item()
    assert exact.mean() > 0.05 and abs(k2_bias) > 1e-3 * exact.mean()  # a KL to measure; k2's bias is real
    for k in ("k1", "k2", "k3"):
        sampled = (kl_per_token(new.tokens.double(), ref.tokens.double(), k) * m).sum(-1)  # the estimator at the sampled tokens
        se = sampled.std() / math.sqrt(len(sampled))
        assert abs(sampled.mean() - expected[k].mean()) < 4 * se + 1e-6, k
    print(f"KL on a tiny model: exact {exact.mean():.4f}, k2 bias {k2_bias:+.4f}")
