"""Every optimizer's math against a hand computation on tiny tensors (no model involved)."""
import math

import pytest
import torch

from algorithms.base import make
from algorithms.dpo import dpo_loss
from algorithms.iterative_dpo import iterative_dpo_loss
from algorithms.ppo import ppo_losses
from algorithms.rebel import rebel_loss
from algorithms.rebel_preference import preference_targets
from algorithms.rloo import clipped_sequence_loss, leave_one_out_advantages
from harness.core.batch import Batch, PolicyOutput
from harness.core.errors import UserError
from harness.core.objective import gae
from harness.core.scoring import token_rewards


def _batch(P=1, K=2, L=3, **fields) -> Batch:
    base = dict(query=torch.zeros(P, 2, dtype=torch.long), response=torch.zeros(P, K, L, dtype=torch.long),
                mask=torch.ones(P, K, L, dtype=torch.bool), logp_old=torch.zeros(P, K, L),
                logp_ref=torch.zeros(P, K, L))
    return Batch(**{**base, **fields})


# --- the backbone's per-token reward (PPO's shaping) ---------------------------------------------------------------

def test_token_rewards_put_the_score_at_eos_and_sum_to_the_sequence_reward():
    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    out = token_rewards(torch.tensor([2.0]), logp, ref, mask, beta=0.1)
    # -0.1 * (0.5, -1, 0), plus the score 2 at the EOS (index 1)
    assert torch.allclose(out, torch.tensor([[-0.05, 2.1, 0.0]]))
    assert math.isclose(out.sum().item(), 2.0 - 0.1 * (-0.5), rel_tol=1e-6)


# --- PPO -------------------------------------------------------------------------------------------------------------

def test_ppo_clipped_policy_and_value_losses_match_hand_computation():
    ratio = torch.tensor([1.5, 0.5, 3.0])
    adv = torch.tensor([1.0, 1.0, -2.0])
    mask = torch.tensor([True, True, False])  # the third token is padding: ignored
    values, values_old = torch.tensor([1.0, 0.0, 5.0]), torch.tensor([0.5, 0.5, 0.0])
    returns = torch.tensor([2.0, 0.0, 0.0])
    policy, value, clipfrac = ppo_losses(ratio.log(), torch.zeros(3), adv, values, values_old, returns, mask, 0.2, 0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped) ; token 2: max(-0.5, -0.8) = -0.5
    assert math.isclose(policy.item(), (-1.2 - 0.5) / 2, rel_tol=1e-6)
    # clipped values 0.7, 0.3: max((1-2)^2, (0.7-2)^2) = 1.69 ; max(0, 0.09) = 0.09 ; 0.5 * mean
    assert math.isclose(value.item(), 0.5 * (1.69 + 0.09) / 2, rel_tol=1e-6)
    assert clipfrac.item() == 0.5
    # in a micro-batch the token means divide by its part of the batch's tokens (Batch.token_share summed over its
    # prompts), not by its own: a part of 2 (its own count) changes nothing, a part of 4 halves both losses
    for part, scale in ((torch.tensor([2.0]), 1.0), (torch.tensor([4.0]), 0.5)):
        p, v, _ = ppo_losses(ratio.log(), torch.zeros(3), adv, values, values_old, returns, mask, 0.2, 0.2, part)
        assert math.isclose(p.item(), scale * policy.item(), rel_tol=1e-6)
        assert math.isclose(v.item(), scale * value.item(), rel_tol=1e-6)


def test_ppo_prepare_gae_on_token_rewards_whitened_over_valid_tokens():
    token_reward = torch.tensor([[[0.1, -0.2, 1.0, 0.0]], [[0.3, 0.5, 0.0, 0.0]]])
    values = torch.tensor([[[0.2, 0.1, 0.4, 0.0]], [[0.0, 0.3, 0.0, 0.0]]])
    mask = torch.tensor([[[1, 1, 1, 0]], [[1, 1, 0, 0]]], dtype=torch.bool)
    batch = _batch(P=2, K=1, L=4, mask=mask, token_reward=token_reward, values_old=values)
    out = make("ppo").prepare(batch)
    raw = gae(token_reward, values, 1.0, 0.95)
    assert torch.allclose(out.returns, raw + values)
    valid = out.advantages[mask]
    assert abs(valid.mean().item()) < 1e-6 and abs(valid.std(unbiased=False).item() - 1) < 1e-4
    # masked: padding has zero reward and value, so it does not leak into the advantages of valid tokens
    assert torch.allclose(raw[0, 0, 2], torch.tensor(1.0 - 0.4))


def test_ppo_unmasked_variant_whitens_rewards_over_padding_and_counts_every_token():
    token_reward = torch.tensor([[[0.1, -0.2, 1.0, -0.3]]])
    values = torch.tensor([[[0.2, 0.1, 0.4, 0.2]]])
    mask = torch.tensor([[[1, 1, 1, 0]]], dtype=torch.bool)
    batch = _batch(P=1, K=1, L=4, mask=mask, logp_mask=torch.ones_like(mask), token_reward=token_reward,
                   values_old=values)
    algo = make("ppo", {"mask_post_eos": False})
    assert algo.mask_post_eos is False and make("ppo").mask_post_eos is True
    out = algo.prepare(batch)
    whitened = (token_reward - token_reward.mean()) / token_reward.std(unbiased=False) + token_reward.mean()
    assert torch.allclose(out.returns, gae(whitened, values, 1.0, 0.95) + values, atol=1e-5)
    assert abs(out.advantages.mean().item()) < 1e-6  # whitened over all 4 tokens, the post-EOS one too


def test_ppo_and_reinforce_batch_statistics_over_every_rank_or_each_process():
    """Sums over 2 ranks whose other rank holds a shard like this one: "global" statistics reduce (the mean and
    std of two equal shards are this one's), "per_process" never does; unequal shards: tests/test_invariance.py."""
    token_reward = torch.tensor([[[0.1, -0.2, 1.0, 0.0]], [[0.3, 0.5, 0.0, 0.0]]])
    values = torch.tensor([[[0.2, 0.1, 0.4, 0.0]], [[0.0, 0.3, 0.0, 0.0]]])
    mask = torch.tensor([[[1, 1, 1, 0]], [[1, 1, 0, 0]]], dtype=torch.bool)
    calls = []

    def two_equal_ranks(parts):
        calls.append(len(parts))
        return tuple(2 * p for p in parts)

    fields = dict(P=2, K=1, L=4, mask=mask, token_reward=token_reward, values_old=values,
                  reward=torch.tensor([[1.0], [3.0]]))
    one = make("ppo").prepare(_batch(**fields))
    batch = _batch(**fields, sum_over_ranks=two_equal_ranks)
    both = make("ppo").prepare(batch)
    assert calls == [2, 1] and torch.allclose(both.advantages, one.advantages, atol=1e-6)
    assert torch.equal(make("ppo", {"batch_statistics": "per_process"}).prepare(batch).advantages, one.advantages)
    assert calls == [2, 1]  # per_process: never reduced
    assert torch.allclose(make("reinforce").prepare(batch).advantages, torch.tensor([[-1.0], [1.0]]))
    assert calls == [2, 1, 2]
    make("reinforce", {"batch_statistics": "per_process"}).prepare(batch)
    assert calls == [2, 1, 2]
    with pytest.raises(UserError, match="batch_statistics must be one of 'global', 'per_process'"):
        make("ppo", {"batch_statistics": "local"})
    # at its default the setting is not recorded (run rows and pooled tables stay as they were); set, it is
    assert "batch_statistics" not in make("ppo").hyperparameters()
    assert make("reinforce", {"batch_statistics": "per_process"}).hyperparameters()["batch_statistics"] == "per_process"


# --- DPO and iterative DPO -------------------------------------------------------------------------------------------

def test_dpo_loss_matches_hand_computation():
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -1.0]])  # [P, (chosen, rejected)]
    ref = torch.tensor([[-2.0, -2.0], [-1.0, -1.0]])
    loss, margin = dpo_loss(logp, ref, beta=0.5)
    # pair 1: h = 2 - 0 -> margin 1 ; pair 2: h = -1 - 0 -> margin -0.5
    assert torch.allclose(margin, torch.tensor([1.0, -0.5]))
    assert math.isclose(loss.item(), (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2, rel_tol=1e-6)


def test_dpo_algorithm_uses_the_sft_reference_and_no_temperature():
    algo = make("dpo")
    assert algo.data == "preference_pairs" and algo.logprob_temperature == 1.0 and algo.beta == 0.05
    ref = torch.tensor([[[-1.0, -1.0], [-2.0, -1.0]]])  # summed: (-2, -3)
    new = PolicyOutput(logp_tokens=ref.clone())
    loss, stats = algo.loss(_batch(K=2, L=2, logp_ref=ref, logp_old=None), new)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6) and stats["dpo/margin"] == 0.0


def test_iterative_dpo_labels_by_reward_sign_against_pi_t_and_skips_ties():
    logp_old = torch.zeros(3, 2)
    logp_new = torch.tensor([[0.2, -0.1], [0.1, 0.3], [0.5, 0.0]])
    reward = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # y wins, y' wins, tie
    loss, margin = iterative_dpo_loss(logp_new, logp_old, reward, beta=1.0)
    # pair 1: s=+1, h=0.3 ; pair 2: s=-1, h=-0.2 -> s*h = 0.2 ; pair 3: no label, left out of the mean
    logsig = torch.nn.functional.logsigmoid
    expected = (-logsig(torch.tensor(0.3)) - logsig(torch.tensor(0.2))) / 2
    assert torch.isclose(loss, expected) and torch.allclose(margin[:2], torch.tensor([0.3, 0.2]))
    # the reference is pi_t: at ratio one the loss is exactly log 2
    loss, _ = iterative_dpo_loss(logp_old, logp_old, reward, beta=0.05)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)
    # the denominator is the batch's labelled pairs (prepare: every rank's, spread over the prompts): these 3
    # prompts as part of a batch of 6 with 3 labelled pairs carry 1.5 of them, not their own 2
    algo = make("iterative_dpo")
    share = algo.prepare(_batch(P=6, reward=torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 1.0],
                                                          [2.0, 2.0], [3.0, 3.0]]))).share
    assert torch.allclose(share, torch.full((6,), 0.5))
    loss, _ = iterative_dpo_loss(logp_new, logp_old, reward, beta=1.0, share=share[:3])
    assert torch.isclose(loss, expected * 2 / 1.5)


# --- REINFORCE and RLOO ----------------------------------------------------------------------------------------------

def test_reinforce_moving_average_baseline_of_past_rewards():
    algo = make("reinforce")
    assert algo.samples_per_prompt == 1 and algo.epochs == 1
    first = algo.prepare(_batch(P=2, K=1, reward=torch.tensor([[1.0], [3.0]])))
    assert torch.allclose(first.advantages, torch.tensor([[-1.0], [1.0]]))  # no past: its own mean, 2
    assert math.isclose(algo.baseline, 2.0)
    second = algo.prepare(_batch(P=2, K=1, reward=torch.tensor([[4.0], [6.0]])))
    assert torch.allclose(second.advantages, torch.tensor([[2.0], [4.0]]))  # baseline 2 from the past batch
    assert math.isclose(algo.baseline, 0.9 * 2.0 + 0.1 * 5.0)
    batch = _batch(P=2, K=1, extras=second)
    loss, _ = algo.loss(batch, PolicyOutput(logp_tokens=torch.tensor([[[-1.0]], [[-0.5]]])))
    assert math.isclose(loss.item(), -(2 * -1.0 + 4 * -0.5) / 2)


def test_rloo_leave_one_out_advantages_by_hand():
    assert leave_one_out_advantages(torch.tensor([[1.0, 3.0]])).tolist() == [[-2.0, 2.0]]
    adv = leave_one_out_advantages(torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    assert torch.allclose(adv, torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 0.0, 6 - 2.0]]))
    assert abs(adv.sum().item()) < 1e-6


def test_rloo_sequence_ratio_clipping():
    adv = torch.tensor([[-2.0, 2.0]])
    logp = torch.tensor([[-3.0, -4.0]], requires_grad=True)
    loss, clipfrac = clipped_sequence_loss(logp, logp.detach(), adv, clip=0.2)
    loss.backward()
    assert loss.item() == 0.0 and clipfrac.item() == 0.0  # ratio one: -mean(A) = 0, gradient -A / n
    assert torch.allclose(logp.grad, torch.tensor([[1.0, -1.0]]))
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)
    loss, clipfrac = clipped_sequence_loss(logp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), clip=0.2)
    loss.backward()
    # both outside the trust region in the direction the advantage pushes: clipped, no gradient
    assert math.isclose(loss.item(), (-1.2 + 0.8) / 2, rel_tol=1e-6) and clipfrac.item() == 1.0
    assert torch.equal(logp.grad, torch.zeros(1, 2))


def test_rloo_k_is_selectable():
    assert make("rloo").samples_per_prompt == 2
    assert make("rloo_k4").samples_per_prompt == 4
    assert make("rloo", {"samples_per_prompt": 4}).samples_per_prompt == 4
    with pytest.raises(Exception):
        make("rloo", {"samples_per_prompt": 1})


# --- REBEL variants --------------------------------------------------------------------------------------------------

def test_hybrid_rebel_is_rebel_on_a_sample_and_the_reference():
    algo = make("rebel_hybrid")
    assert algo.data == "online_with_reference" and algo.samples_per_prompt == 1
    tokens = torch.tensor([[[-1.0, -0.5], [-0.2, 0.0]]])
    batch = _batch(K=2, L=2, logp_old=tokens, logp_ref=tokens, reward=torch.tensor([[0.3, 0.1]]))
    loss, _ = algo.loss(batch, PolicyOutput(logp_tokens=tokens.clone()))
    assert math.isclose(loss.item(), rebel_loss(tokens.sum(-1), tokens.sum(-1), batch.reward, 1.0)[0].item())
    assert math.isclose(loss.item(), 0.2**2, rel_tol=1e-5)


def test_general_preference_rebel_target_by_hand():
    pref = torch.tensor([[[0.5, 0.6, 0.9], [0.4, 0.5, 0.3], [0.1, 0.7, 0.5]]])  # P(y_i > y_j)
    assert torch.allclose(preference_targets(pref), torch.tensor([[0.8, -0.4]]))  # 2 P(. > y'') - 1
    algo = make("rebel_preference")
    assert algo.needs_preference and algo.samples_per_prompt == 3
    zeros = torch.zeros(1, 3, 2)
    batch = _batch(K=3, L=2, logp_old=zeros, logp_ref=zeros, preference=pref, score=torch.tensor([[1.0, 2.0, 3.0]]),
                   reward=torch.tensor([[0.9, 1.8, 3.0]]))  # beta * kl = 0.1, 0.2
    loss, _ = algo.loss(batch, PolicyOutput(logp_tokens=zeros.clone()))
    # target (0.8 - 0.1) - (-0.4 - 0.2) = 1.3, log-ratios zero: residual -1.3
    assert math.isclose(loss.item(), 1.3**2, rel_tol=1e-5)
    loss, _ = make("rebel_preference", {"kl_penalty": False}).loss(batch, PolicyOutput(logp_tokens=zeros.clone()))
    assert math.isclose(loss.item(), 1.2**2, rel_tol=1e-5)
