"""The numbers every optimizer shares: temperature-scaled log-probs, reward-model scores, KL, rewards.

Layout: a query is left-padded to Lq tokens, a response is Lr tokens padded after its first EOS. Both travel with
boolean masks; position ids are counted over real tokens only, so left padding does not shift positions.
Every log-prob used in training (pi_t, pi_ref, pi_theta) comes from `sequence_logprobs` with the same temperature,
so the ratio pi_theta / pi_t is exactly 1 before the first update.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.core.objective import kl_per_token

MISSING_EOS_SCORE = -1.0


def cache_keyword(model) -> str:
    """The keyword under which this model's forward takes a KV cache: `cache` in recent transformers releases,
    `past_key_values` before (now deprecated, with a warning on every call)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def returned_cache(output):
    """The KV cache a forward returned, under either name."""
    return output["cache"] if "cache" in output else output.past_key_values


def forward_inputs(query: Tensor, response: Tensor, pad_id: int) -> dict[str, Tensor]:
    """input_ids / attention_mask / position_ids for [query | response] with pads masked out."""
    ids = torch.cat([query, response], dim=1)
    attention_mask = (ids != pad_id).long()
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": attention_mask, "position_ids": position_ids}


@dataclass
class TokenLogprobs:
    """Per-token log-probs of the response under one policy, and their masked sum (logp(y) in PROTOCOL.md)."""

    tokens: Tensor  # [B, Lr], zero where masked
    logits: Tensor | None = None  # [B, Lr, V] temperature-scaled, only when asked for (exact KL, entropy)

    @property
    def sum(self) -> Tensor:
        return self.tokens.sum(-1)


def response_outputs(model, query: Tensor, response: Tensor, pad_id: int, group: int = 1,
                     field: str = "logits", at_tokens: bool = False) -> Tensor:
    """`field` of `model`'s output at the positions that predict each response token; [B, Lr, ...]
    (at_tokens=True: at the response tokens themselves, one position later).

    group == 1: one forward over [query | response] (B queries), keeping only the last Lr + 1 positions' logits.
    group > 1: each of the B / group queries is shared by `group` consecutive responses (a pair or group of one
    prompt): the query minus its last token runs once, its KV cache is repeated `group` times, and
    [last query token | response] continues from it with the same attention mask and position ids as the single
    forward (the same numbers up to float rounding; every output used comes from this second, unsliced call).
    """
    Lq, Lr = query.shape[1], response.shape[1]
    if group == 1 or Lq < 2:
        keep = {"logits_to_keep": Lr + 1} if field == "logits" else {}
        out = model(**forward_inputs(query.repeat_interleave(group, 0), response, pad_id), **keep)
        return getattr(out, field)[:, -Lr:] if at_tokens else getattr(out, field)[:, -(Lr + 1) : -1]
    q_mask = (query != pad_id).long()
    cache = returned_cache(model(input_ids=query[:, :-1], attention_mask=q_mask[:, :-1],
                                 position_ids=(q_mask[:, :-1].cumsum(1) - 1).clamp(min=0), use_cache=True,
                                 **({"logits_to_keep": 1} if field == "logits" else {})))
    cache.batch_repeat_interleave(group)
    end = Lr + 1 if at_tokens else Lr  # the last response token predicts nothing: fed only when read at tokens
    attention_mask = torch.cat([q_mask.repeat_interleave(group, 0), (response != pad_id).long()], 1)[:, : Lq + end - 1]
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)[:, Lq - 1 :]
    ids = torch.cat([query[:, -1:].repeat_interleave(group, 0), response[:, : end - 1]], 1)
    out = model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                **{cache_keyword(model): cache})
    return getattr(out, field)[:, 1:] if at_tokens else getattr(out, field)


def sequence_logprobs(model, query: Tensor, response: Tensor, response_mask: Tensor, pad_id: int,
                      temperature: float, keep_logits: bool = False, group: int = 1,
                      dtype: torch.dtype = torch.float32) -> TokenLogprobs:
    """log pi(y_t | x, y_<t) / for each response token, from logits divided by `temperature`; [B, Lr].

    group > 1: `query` is [B / group, Lq], each query shared by `group` consecutive responses (computed once).
    dtype (model.logprob_dtype): float32 upcasts the logits and computes everything after them in fp32 (the
    harness's default). bfloat16 is the REBEL authors' arithmetic (DeepSpeed bf16 casts the whole model, and
    GPT-NeoX and Llama do not upcast their logits), with CUDA's semantics for each step: the logits are rounded to
    bf16, their division by the temperature is rounded to bf16, the log-softmax is computed in fp32 from those and
    its output rounded to bf16 (CUDA's kernel accumulates in fp32 and rounds once; the CPU's bf16 kernel would
    round its log-sum-exp first). The tokens stay bf16, so their masked sum (`TokenLogprobs.sum`,
    `Batch.logp_old_sum`, `PolicyOutput.logp`) is accumulated in fp32 and rounded once to bf16, as a bf16
    `.sum(-1)` does on CUDA and CPU, and differences of such sums are bf16 too.
    """
    out = response_outputs(model, query, response, pad_id, group)  # [B, Lr, V]
    if dtype == torch.float32:
        logits = out.float() / temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
        return TokenLogprobs(logp * response_mask, logits if keep_logits else None)
    logits = out.to(dtype) / temperature
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, response.unsqueeze(-1)).squeeze(-1).to(dtype)
    return TokenLogprobs(logp * response_mask, logits.float() if keep_logits else None)


MISSING_EOS_TESTS = ("eos", "pad")


@dataclass(frozen=True)
class ScoreRule:
    """How a reward-model output becomes the score every optimizer sees (the same rule for all of them).

    scale multiplies the bias-corrected output (the REBEL authors' UltraFeedback script divides by 1000);
    a response that did not end then gets `missing_eos_score` instead (replaced, not penalised; None: no
    replacement, as the authors' evaluation reports the raw score). Whether it ended is `missing_eos_test`
    (train.missing_eos_test, see `ended`); the pad test needs the generation cap, `max_new_tokens`."""

    scale: float = 1.0
    missing_eos_score: float | None = MISSING_EOS_SCORE
    missing_eos_test: str = "eos"
    max_new_tokens: int | None = None

    def __post_init__(self):
        if self.missing_eos_test not in MISSING_EOS_TESTS:
            raise ValueError(f"missing_eos_test must be one of {MISSING_EOS_TESTS}, got {self.missing_eos_test!r}")
        if self.missing_eos_test == "pad" and self.max_new_tokens is None:
            raise ValueError("the pad test needs max_new_tokens (the generation cap)")

    def ended(self, response: Tensor, response_mask: Tensor, eos_id: int) -> Tensor:
        """Did each response end? [B] bool. `response_mask` covers the tokens up to and including the first EOS.

        eos: an EOS among the counted tokens (the N+ code's check, and the harness's default).
        pad: the REBEL authors' `contain_pad_token`: their responses are exactly max_new_tokens long, everything
        after the first EOS becomes PAD, and a response without a PAD is penalised; so a response ends only if its
        first EOS comes before its last generated position (fewer than max_new_tokens counted tokens). A response
        whose EOS is its last (53rd) token is penalised like one with no EOS.
        """
        eos = has_eos(response, response_mask, eos_id)
        if self.missing_eos_test == "eos":
            return eos
        return eos & (response_mask.sum(-1) < self.max_new_tokens)

    def apply(self, score: Tensor, response: Tensor, response_mask: Tensor, eos_id: int) -> Tensor:
        """`score` (already scaled) with the missing-EOS replacement of this rule."""
        if self.missing_eos_score is None:
            return score
        return torch.where(self.ended(response, response_mask, eos_id), score,
                           torch.full_like(score, self.missing_eos_score))


def reward_scores(reward_model, query: Tensor, response: Tensor, response_mask: Tensor, pad_id: int,
                  group: int = 1, rule: ScoreRule = ScoreRule()) -> Tensor:
    """Reward-model score read at the response's EOS (its last real token); [B].

    The harness's reward models are sequence classifiers that pool the last non-pad token. Their `reward_bias`
    (config attribute, set so that human references average 0) is subtracted, then `rule` applies: by default a
    response without EOS gets MISSING_EOS_SCORE instead of its score (replaced, not penalised; `ScoreRule.ended`).
    group > 1: `query` is shared by `group` consecutive responses (run once, as in `sequence_logprobs`); the score
    head is applied to the backbone's hidden state at the last real token, as the classifier's pooling does.
    """
    if group == 1:
        raw = reward_model(**forward_inputs(query, response, pad_id)).logits.float().squeeze(-1)
    else:
        hidden = response_outputs(reward_model.base_model, query, response, pad_id, group, "last_hidden_state",
                                  at_tokens=True)
        real = response != pad_id
        last = (real * torch.arange(1, response.shape[1] + 1, device=real.device)).argmax(1)
        raw = reward_model.score(hidden[torch.arange(len(hidden), device=last.device), last]).float().squeeze(-1)
    score = (raw - float(getattr(reward_model.config, "reward_bias", 0.0))) * rule.scale
    return rule.apply(score, response, response_mask, reward_model.config.eos_token_id)


def has_eos(response: Tensor, response_mask: Tensor, eos_id: int) -> Tensor:
    return ((response == eos_id) & response_mask).any(-1)


def sequence_kl(logp_policy: Tensor, logp_ref: Tensor) -> Tensor:
    """Single-sample sequence KL estimate: masked sum of logp_pi - logp_ref (inputs already summed); [B]."""
    return logp_policy - logp_ref


def exact_kl(policy_logits: Tensor, ref_logits: Tensor, response_mask: Tensor) -> Tensor:
    """Exact KL(pi || pi_ref) over the full vocabulary at each response position, summed over valid tokens; [B]."""
    logp = torch.log_softmax(policy_logits, -1)
    logq = torch.log_softmax(ref_logits, -1)
    per_token = (logp.exp() * (logp - logq)).sum(-1)
    return (per_token * response_mask).sum(-1)


def kl_penalised_reward(score: Tensor, kl: Tensor, beta: float) -> Tensor:
    """r(x, y) = score - beta * kl (PROTOCOL.md, shared rollout and reward)."""
    return score - beta * kl


def token_rewards(score: Tensor, logp_policy: Tensor, logp_ref: Tensor, response_mask: Tensor, beta: float,
                  estimator: str = "k1") -> Tensor:
    """Per-token reward (PPO's shaping): -beta * KL_t at each counted token (k1: logp_pi - logp_ref; the per-token
    log-probs are already zero elsewhere, where every estimator is 0), plus the score at the response's last token
    (its EOS); [B, Lr]. Sums to `kl_penalised_reward(score, sum_t KL_t, beta)`."""
    out = -beta * kl_per_token(logp_policy, logp_ref, estimator)
    last = response_mask.sum(-1).clamp(min=1) - 1
    out[torch.arange(len(out), device=out.device), last] += score
    return out


def cross_entropy_on_response(model, query: Tensor, response: Tensor, response_mask: Tensor, pad_id: int) -> Tensor:
    """Mean token cross-entropy of the response given the query (SFT), from the same forward as training."""
    logp = sequence_logprobs(model, query, response, response_mask, pad_id, temperature=1.0)
    return -logp.tokens.sum() / response_mask.sum().clamp(min=1)


def pairwise_reward_loss(reward_model, query: Tensor, chosen: Tensor, chosen_mask: Tensor, rejected: Tensor,
                         rejected_mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) and accuracy (reward-model training). Each prompt runs
    once for its two responses (the shared-prefix forward of `reward_scores(group=2)`), pooled at the last real
    response token as the classifier pools: about 40% fewer tokens per pair than [prompt | chosen], [prompt | rejected]."""
    B = len(query)
    both = torch.stack([chosen, rejected], 1).reshape(2 * B, -1)
    mask = torch.stack([chosen_mask, rejected_mask], 1).reshape(2 * B, -1)
    hidden = response_outputs(reward_model.base_model, query, both, pad_id, 2, "last_hidden_state", at_tokens=True)
    last = mask.sum(1) - 1  # the last real token (EOS, or the cut end)
    r = reward_model.score(hidden[torch.arange(2 * B), last]).float().view(B, 2)
    return -F.logsigmoid(r[:, 0] - r[:, 1]).mean(), (r[:, 0] > r[:, 1]).float().mean()


def token_values(critic, query: Tensor, response: Tensor, response_mask: Tensor, pad_id: int,
                 group: int = 1) -> Tensor:
    """Critic value before each response token: the reward model's scalar head applied at every position; [B, Lr].

    The value of response token t is read at the position that predicts it (the previous token), like log-probs.
    The reward model's `reward_bias` is subtracted, as the REBEL and N+ critics (their ScalarModel) do.
    group > 1: `query` is shared by `group` consecutive responses, as in `sequence_logprobs`.
    """
    hidden = response_outputs(critic.base_model, query, response, pad_id, group, field="last_hidden_state")
    bias = float(getattr(critic.config, "reward_bias", 0.0))
    return (critic.score(hidden).float().squeeze(-1) - bias) * response_mask
