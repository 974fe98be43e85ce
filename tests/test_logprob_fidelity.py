"""The REBEL authors' arithmetic as options (issue 29), each against a hand computation:
- model.logprob_dtype=bfloat16: their DeepSpeed bf16 model's log-probs and summed sequence log-probs;
- train.missing_eos_test=pad: their `contain_pad_token` test, which also penalises a response whose EOS is its last
  generated token;
and that both settings leave the serialised config (run ids, config hashes) unchanged at their defaults."""
import math

import pytest
import torch

from harness.app.config import resolve
from harness.core.rollout import truncate_after_eos
from harness.core.scoring import ScoreRule, reward_scores, sequence_logprobs
from tests.helpers import BigramLM, ConstantRewardModel

EOS, PAD = 1, 0


def bf16(x: float) -> float:
    """Round a float to bfloat16 by hand: 8 significant bits, round half to even (IEEE's default rounding)."""
    if x == 0:
        return 0.0
    m, e = math.frexp(x)  # x = m * 2**e, 0.5 <= |m| < 1
    return round(m * 2**8) / 2**8 * 2**e


def test_hand_rounding_helper_is_bfloat16():
    """The helper the hand computations use agrees with torch's bf16 cast (so the expectations below are bf16)."""
    for x in (0.7 * math.log(3), 1.0993, -1.3885, -0.28695, 18.984375, 20.3, 1e-3, -4.0, 100.7):
        assert bf16(x) == torch.tensor(x).to(torch.bfloat16).item()


def test_bf16_logprob_arithmetic_matches_a_hand_computation():
    """Two-token vocabulary, logits [0, x] after every token, x = 0.7 ln 3, temperature 0.7.

    fp32: logits / 0.7 = [0, ln 3]: log p(0) = -ln 4 = -1.38629, log p(1) = ln 3 - ln 4 = -0.28768.
    bf16 (CUDA's semantics): x -> 0.76953125, / 0.7 = 1.09933 -> 1.1015625; log-sum-exp ln(1 + e^1.1015625) =
    1.388514 in fp32; log p(0) = -1.388514 -> -1.390625, log p(1) = 1.1015625 - 1.388514 = -0.286952 ->
    -0.287109375. A response of 12 zeros and 8 ones: fp32 sum -18.93699; bf16 tokens sum to -18.984375 in fp32,
    rounded once to bf16 (spacing 0.125 in [16, 32)): -19.0.
    """
    T = 0.7
    x = T * math.log(3)
    table = torch.tensor([[0.0, x], [0.0, x]])
    model = BigramLM(table)
    query = torch.tensor([[0, 1]])
    response = torch.tensor([[0] * 12 + [1] * 8 + [0, 0]])
    mask = torch.tensor([[True] * 20 + [False, False]])  # the last two tokens are not counted
    pad = 5  # not a token of this vocabulary: nothing is masked out of the forward

    fp32 = sequence_logprobs(model, query, response, mask, pad, T)
    hand_fp32 = [-math.log(4.0), math.log(3.0) - math.log(4.0)]
    assert fp32.tokens.dtype == torch.float32
    assert fp32.tokens[0, :20].tolist() == pytest.approx([hand_fp32[0]] * 12 + [hand_fp32[1]] * 8, abs=1e-6)
    assert fp32.sum.item() == pytest.approx(12 * hand_fp32[0] + 8 * hand_fp32[1], abs=1e-5)

    out = sequence_logprobs(model, query, response, mask, pad, T, dtype=torch.bfloat16)
    scaled = bf16(bf16(x) / T)  # 1.1015625
    lse = math.log(1 + math.exp(scaled))
    hand = [bf16(-lse), bf16(scaled - lse)]
    assert hand == [-1.390625, -0.287109375]  # the numbers in the docstring
    assert out.tokens.dtype == torch.bfloat16
    assert out.tokens[0].tolist() == [hand[0]] * 12 + [hand[1]] * 8 + [0.0, 0.0]
    hand_sum = bf16(12 * hand[0] + 8 * hand[1])
    assert hand_sum == -19.0 and out.sum.item() == hand_sum
    assert out.sum.item() != pytest.approx(fp32.sum.item(), abs=0.05)  # the two arithmetics differ here by 0.063


def test_bf16_logprobs_pass_gradients_like_fp32():
    """The rounding is a cast: its gradient is the identity, so the bf16 option trains through the same graph."""
    torch.manual_seed(0)
    table = torch.randn(6, 6)
    query, response = torch.tensor([[3, 4]]), torch.tensor([[5, 2, EOS]])
    mask = torch.ones_like(response, dtype=torch.bool)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = BigramLM(table)
        sequence_logprobs(model, query, response, mask, PAD, 0.7, dtype=dtype).sum.float().backward()
        grads[dtype] = model.table.grad
    assert grads[torch.float32].abs().sum() > 0
    assert torch.allclose(grads[torch.bfloat16], grads[torch.float32], atol=2e-2)


class EndsRM(ConstantRewardModel):
    """Score = number of real tokens in [query | response] (ConstantRewardModel), with EOS = 1."""


def test_pad_test_also_penalises_an_eos_at_the_last_generated_token():
    """max_new_tokens 4. [5, 6, EOS, 7]: EOS third, a PAD follows after truncation -> ended under both tests.
    [5, 6, 7, EOS]: EOS is the last generated token, no PAD -> ended for the eos test, penalised by the pad test
    (the authors' contain_pad_token). [5, 6, 7, 8]: no EOS -> penalised by both. The scores of the rows that
    keep theirs are the real-token counts (2 query + 3 or 4 response tokens)."""
    raw = torch.tensor([[5, 6, EOS, 7], [5, 6, 7, EOS], [5, 6, 7, 8]])
    response, mask = truncate_after_eos(raw, EOS, PAD)
    query = torch.tensor([[3, 4]] * 3)
    rm = EndsRM(EOS)
    eos = reward_scores(rm, query, response, mask, PAD, rule=ScoreRule(missing_eos_score=-1.0))
    pad = reward_scores(rm, query, response, mask, PAD, rule=ScoreRule(missing_eos_score=-1.0, missing_eos_test="pad",
                                                                       max_new_tokens=4))
    assert eos.tolist() == [5.0, 6.0, -1.0]
    assert pad.tolist() == [5.0, -1.0, -1.0]


def test_pad_rule_is_the_authors_contain_pad_token_on_random_responses():
    """On fixed-length samples, `ScoreRule.ended` under the pad test equals "a PAD is left in the response after
    everything past the first EOS became PAD" (the authors' formulation), response by response."""
    g = torch.Generator().manual_seed(0)
    L = 6
    raw = torch.randint(2, 5, (400, L), generator=g)
    raw[torch.rand(400, L, generator=g) < 0.15] = EOS
    response, mask = truncate_after_eos(raw, EOS, PAD)
    contains_pad = (response == PAD).any(-1)
    rule = ScoreRule(missing_eos_test="pad", max_new_tokens=L)
    assert torch.equal(rule.ended(response, mask, EOS), contains_pad)
    # and the two tests differ exactly on the responses whose first EOS is their last token
    eos_last = (raw == EOS).float().argmax(-1).eq(L - 1) & (raw[:, : L - 1] != EOS).all(-1)
    assert eos_last.any()
    assert torch.equal(ScoreRule().ended(response, mask, EOS) & ~contains_pad, eos_last)


def test_pad_test_needs_the_generation_cap_and_a_known_name():
    with pytest.raises(ValueError, match="max_new_tokens"):
        ScoreRule(missing_eos_test="pad")
    with pytest.raises(ValueError, match="missing_eos_test"):
        ScoreRule(missing_eos_test="eos-or-pad")


def test_run_score_rule_carries_the_test_and_the_generation_cap():
    from harness.core.train import score_rule

    cfg = resolve("tldr-pythia-1.4b", {"train": {"missing_eos_test": "pad"}})
    rule = score_rule(cfg)
    assert (rule.missing_eos_test, rule.max_new_tokens) == ("pad", cfg.generation.max_new_tokens)
    assert score_rule(resolve("tldr-pythia-1.4b")).missing_eos_test == "eos"


def test_new_settings_leave_the_serialised_config_unchanged_at_their_defaults():
    """Run ids and config hashes are of the dumped config: the fields appear only when set."""
    default = resolve("tiny").model_dump()
    assert "logprob_dtype" not in default["model"] and "missing_eos_test" not in default["train"]
    set_ = resolve("tiny", {"model": {"logprob_dtype": "bfloat16"}, "train": {"missing_eos_test": "pad"}}).model_dump()
    assert set_["model"]["logprob_dtype"] == "bfloat16" and set_["train"]["missing_eos_test"] == "pad"
    assert resolve("tiny", {"model": {"logprob_dtype": "float32"}}).model_dump() == default


@pytest.mark.parametrize("algo", ["rebel", "rloo"])  # rloo: the single-pass path (adopt_policy_forward)
def test_a_tiny_update_trains_with_the_authors_arithmetic(tiny_test_models, algo):
    """Both options through the real backbone: pi_t's and pi_ref's summed log-probs are bf16 numbers (the fp32
    accumulation of bf16 tokens, rounded once), the update runs on them and its loss is finite."""
    import dataclasses

    from algorithms.base import make
    from harness.core.experience import Budget
    from harness.core.train import Trainer

    cfg, models, data = tiny_test_models
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"missing_eos_test": "pad",
                                                                        "prompts_per_iteration": 4})})
    saved = models.precision
    weights = {k: v.clone() for k, v in models.policy.state_dict().items()}  # the session's shared models
    models.precision = dataclasses.replace(saved, logprob=torch.bfloat16)
    try:
        trainer = Trainer(cfg, make(algo), models, data.sft_train, Budget())
        batch = trainer.collect(trainer.next_prompts())
        stats = trainer.update(batch, 1)
    finally:  # later tests start from the SFT policy (policy == reference)
        models.precision = saved
        models.policy.load_state_dict(weights)
    assert batch.logp_ref.dtype == torch.bfloat16
    assert torch.equal(batch.logp_ref_sum, batch.logp_ref.float().sum(-1).to(torch.bfloat16))
    assert batch.logp_old_sum.dtype == torch.bfloat16  # pi_t's, from the scoring forward or the update's own
    assert math.isfinite(stats["loss"])
