import math

import torch

from harness.core.rollout import truncate_after_eos
from harness.core.scoring import (MISSING_EOS_SCORE, exact_kl, kl_penalised_reward, reward_scores, sequence_kl,
                             sequence_logprobs)
from tests.helpers import BigramLM, ConstantRewardModel

EOS, PAD = 1, 0


def test_truncation_keeps_first_eos_and_masks_the_rest():
    raw = torch.tensor([[5, 6, EOS, 7, EOS], [5, 6, 7, 8, 9], [EOS, 4, 4, 4, 4]])
    resp, mask = truncate_after_eos(raw, EOS, PAD)
    assert resp.tolist() == [[5, 6, EOS, PAD, PAD], [5, 6, 7, 8, 9], [EOS, PAD, PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def _hand_logp(table, prev, tok, temperature):
    logits = [x / temperature for x in table[prev]]
    return logits[tok] - math.log(sum(math.exp(v) for v in logits))


def test_summed_masked_logprobs_match_hand_computation():
    torch.manual_seed(0)
    table = torch.randn(6, 6)
    model = BigramLM(table)
    query = torch.tensor([[PAD, 3, 4]])  # left-padded
    response = torch.tensor([[5, EOS, PAD]])
    mask = torch.tensor([[True, True, False]])
    for temperature in (1.0, 0.7):
        out = sequence_logprobs(model, query, response, mask, PAD, temperature)
        t = table.tolist()
        expected = [_hand_logp(t, 4, 5, temperature), _hand_logp(t, 5, EOS, temperature), 0.0]
        assert torch.allclose(out.tokens[0], torch.tensor(expected), atol=1e-5)
        assert math.isclose(out.sum.item(), sum(expected), rel_tol=1e-5)


def test_temperature_divides_logits_before_the_softmax():
    table = torch.randn(6, 6)
    model = BigramLM(table)
    q, r, m = torch.tensor([[2]]), torch.tensor([[3, 4]]), torch.ones(1, 2, dtype=torch.bool)
    cold = sequence_logprobs(model, q, r, m, PAD, 0.5).tokens
    scaled = sequence_logprobs(BigramLM(table * 2), q, r, m, PAD, 1.0).tokens
    assert torch.allclose(cold, scaled, atol=1e-6)


def test_missing_eos_replaces_the_score_and_bias_is_subtracted():
    rm = ConstantRewardModel(EOS, bias=0.5)
    query = torch.tensor([[3, 4], [3, 4]])
    response = torch.tensor([[5, EOS, PAD], [5, 6, 7]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    score = reward_scores(rm, query, response, mask, PAD)
    assert score.tolist() == [4 - 0.5, MISSING_EOS_SCORE]  # 4 real tokens; the second never ended


def test_kl_and_reward():
    kl = sequence_kl(torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -1.5]))
    assert kl.tolist() == [1.0, -0.5]
    assert torch.allclose(kl_penalised_reward(torch.tensor([2.0, -1.0]), kl, beta=0.05), torch.tensor([1.95, -0.975]))


def test_exact_kl_is_zero_against_itself_and_matches_hand_computation():
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    assert exact_kl(logits, logits, mask).item() == 0.0
    ref = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    p = torch.softmax(logits[0, 0], -1)
    q = torch.softmax(ref[0, 0], -1)
    hand = sum(p[i] * math.log(p[i] / q[i]) for i in range(2))  # only the first (valid) position counts
    assert math.isclose(exact_kl(logits, ref, mask).item(), hand, rel_tol=1e-5)
