"""Turning prompts into a scored Batch: the same code for every optimizer (fairness is a backbone property)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from harness.core.batch import Batch, PolicyOutput
from harness.core.models import Models
from harness.core.objective import kl_per_token
from harness.core.rollout import HFEngine, sample, truncate_after_eos
from harness.core.examples import Example, Gold, TaskReward, score_texts
from harness.core.scoring import (ScoreRule, has_eos, kl_penalised_reward, reward_scores, sequence_kl, sequence_logprobs,
                             token_rewards, token_values)
from harness.core.tokens import decode_responses, encode_responses, left_pad


@dataclass
class Budget:
    """Cumulative work done by a run: the axes along which tables can be cut at equal budget."""

    prompts: int = 0
    responses: int = 0
    rm_queries: int = 0
    optimizer_steps: int = 0
    wall_time_s: float = 0.0
    groups_dropped: int | None = None  # dynamic sampling: groups sampled and scored, then dropped (equal scores)
    timings: dict[str, float] = field(default_factory=dict)  # per-phase seconds of the current iteration

    COUNTERS: ClassVar[tuple[str, ...]] = ("prompts", "responses", "rm_queries", "optimizer_steps", "wall_time_s")

    def counters(self) -> dict:
        out = {"prompts": self.prompts, "responses": self.responses, "rm_queries": self.rm_queries,
               "optimizer_steps": self.optimizer_steps, "wall_time_s": round(self.wall_time_s, 3)}
        return out if self.groups_dropped is None else {**out, "groups_dropped": self.groups_dropped}


class Timer:
    def __init__(self, budget: Budget, phase: str):
        self.budget, self.phase = budget, phase

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.budget.timings[self.phase] = self.budget.timings.get(self.phase, 0.0) + time.perf_counter() - self.t


def encode_queries(examples: list[Example], tokenizer, max_prompt_tokens: int, device=None) -> Tensor:
    ids = left_pad([ex.encode_prompt(tokenizer, max_prompt_tokens) for ex in examples], tokenizer.pad_token_id)
    return ids.to(device) if device is not None else ids


def _used_width(counted: Tensor) -> int:
    """Columns up to the last counted token of any response: the rest is padding nobody attends to or scores."""
    return int(counted.flatten(0, -2).any(0).nonzero().max()) + 1


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def _score_flat(models: Models, query: Tensor, response: Tensor, mask: Tensor, temperature: float, chunk: int,
                with_rewards: bool, tokens: Tensor | None = None, logp_mask: Tensor | None = None,
                with_policy: bool = True, rule: ScoreRule = ScoreRule()) -> dict[str, Tensor]:
    """pi_t and pi_ref per-token log-probs (and RM scores, critic values) of [P*K] sequences, K per query, in chunks.

    query is [P, Lq] (each prompt runs once per forward, shared by its K responses). The RM scores `response` (cut
    after EOS) under `mask`; log-probs and values are of `tokens` under `logp_mask` (default: response and mask).
    with_policy=False leaves out pi_t's log-probs and the critic's values (single-pass updates take them from the
    update's own forward: `adopt_policy_forward`).
    """
    tokens = response if tokens is None else tokens
    logp_mask = mask if logp_mask is None else logp_mask
    K = len(response) // len(query)
    parts: dict[str, list[Tensor]] = {"logp_old": [], "logp_ref": [], "score": [], "values_old": []}
    pad = models.pad_id
    for p in _chunks(len(query), max(1, chunk // K)):
        q, s = query[p], slice(p.start * K, p.stop * K)
        t, lm = tokens[s], logp_mask[s]
        dtype = models.precision.logprob  # model.logprob_dtype: fp32, or the paper code's bf16 (docs/fidelity.md)
        if with_policy:
            parts["logp_old"].append(sequence_logprobs(models.policy, q, t, lm, pad, temperature, group=K,
                                                       dtype=dtype).tokens)
        with models.as_reference() as ref:
            parts["logp_ref"].append(sequence_logprobs(ref, q, t, lm, pad, temperature, group=K, dtype=dtype).tokens)
        if with_rewards:
            parts["score"].append(reward_scores(models.reward_model, q, response[s], mask[s], pad, group=K,
                                                rule=rule))
        if models.critic is not None and with_policy:
            parts["values_old"].append(token_values(models.critic, q, t, lm, pad, group=K))
    return {k: torch.cat(v) for k, v in parts.items() if v}


def gold_rewards(gold: Gold, response: Tensor, mask: Tensor, examples: list[Example], tokenizer,
                 eos_id: int) -> Tensor:
    """The task's gold reward of flat [P*K] responses, K consecutive per example; [P*K]."""
    K = len(response) // len(examples)
    ended = has_eos(response, mask, eos_id).tolist()
    texts = decode_responses(response, mask, tokenizer)
    return torch.tensor([gold(t, examples[i // K], terminated=e) for i, (t, e) in enumerate(zip(texts, ended))],
                        device=response.device)


def task_scores(reward: TaskReward, response: Tensor, mask: Tensor, examples: list[Example], tokenizer, eos_id: int,
                rule: ScoreRule = ScoreRule()) -> Tensor:
    """The task's own reward (a checker) of flat [P*K] responses, K consecutive per example, in place of a reward
    model's score and under the same rule: times `rule.scale`, then a response without EOS gets the missing-EOS
    score; [P*K]."""
    K = len(response) // len(examples)
    texts = decode_responses(response, mask, tokenizer)
    score = torch.tensor(score_texts(reward, texts, [examples[i // K] for i in range(len(texts))]),
                         device=response.device)
    return rule.apply(score * rule.scale, response, mask, eos_id)


@torch.no_grad()
def reference_values(models: Models, examples: list[Example], n: int, beta: float, max_prompt_tokens: int,
                     max_new_tokens: int, temperature: float, chunk: int, budget: Budget, generator: torch.Generator,
                     rule: ScoreRule = ScoreRule(), reward: TaskReward | None = None) -> list[float]:
    """V*(x) = beta * log mean_i exp(r(x, y_i) / beta) of each prompt, over n responses y_i sampled from pi_ref at
    `temperature` and scored like every rollout (the reward model or the task's reward, under `rule`): A*-PO's
    offline estimate of the optimal value (Brantley et al. 2025; TRL's A2POTrainer). The n responses count in the
    budget (responses, rm_queries), not as prompts."""
    tok, eos, pad = models.tokenizer, models.eos_id, models.pad_id
    out = []
    for part in _chunks(len(examples), max(1, chunk // n)):
        batch = examples[part]
        query = encode_queries(batch, tok, max_prompt_tokens, models.device)
        with models.as_reference() as ref:
            raw = sample(ref, query, max_new_tokens, temperature, pad, generator, n)
        response, mask = truncate_after_eos(raw, eos, pad)
        if reward is not None:
            score = task_scores(reward, response, mask, batch, tok, eos, rule)
        else:
            score = reward_scores(models.reward_model, query, response, mask, pad, group=n, rule=rule)
        r = score.float().reshape(len(batch), n)
        out += (beta * (torch.logsumexp(r / beta, dim=1) - math.log(n))).tolist()
        budget.responses += len(batch) * n
        budget.rm_queries += len(batch) * n
    return out


def preference_probs(models: Models, examples: list[Example], response: Tensor, mask: Tensor,
                     score: Tensor, gold: Gold | None = None) -> Tensor:
    """P(y_i > y_j) for the K responses of each prompt; [P, K, K].

    The preference model: with a task's gold reward (the synthetic stand-in), its Bradley-Terry probability at the
    temperature of the task's simulated labellers (Gold.preference); on real data, the reward model's Bradley-Terry probability
    sigmoid(score_i - score_j), the form it was trained under.
    """
    P = len(examples)
    if gold is not None:
        g = gold_rewards(gold, response, mask, examples, models.tokenizer, models.eos_id).reshape(P, -1).tolist()
        return torch.tensor([[[gold.preference(a, b) for b in row] for a in row] for row in g], device=response.device)
    s = score.reshape(P, -1)
    return torch.sigmoid(s[:, :, None] - s[:, None, :])


def collect_online(models: Models, examples: list[Example], samples_per_prompt: int, max_prompt_tokens: int,
                   max_new_tokens: int, temperature: float, kl_coef: float, chunk: int, budget: Budget,
                   generator: torch.Generator, append_reference: bool = False, count_post_eos: bool = False,
                   preferences: bool = False, with_policy: bool = True, engine=None,
                   rule: ScoreRule = ScoreRule(), logprob_temperature: float | None = None, kl_estimator: str = "k1",
                   gold: Gold | None = None, reward: TaskReward | None = None) -> Batch:
    """Sample S responses per prompt from pi_t at `temperature`, cut at EOS, score them: the on-policy Batch.

    reward: the task's own reward (a checker, TaskData.reward): it scores the responses under `rule` and the reward
    model is not run (`models.reward_model` may then be None); budget.rm_queries counts its calls.

    logprob_temperature: the temperature of pi_t's and pi_ref's log-probs (default: the sampling temperature); it
    must be the one the optimizer's own forward uses (policy_output), or the ratio pi_theta / pi_t starts != 1.
    gold: the task's gold reward, the preference model when `preferences` (see preference_probs).
    kl_coef, kl_estimator: r = score - kl_coef * sum_t KL_t (kl_coef 0: the KL goes in the loss, or nowhere).

    append_reference: the example's human reference becomes response S+1 of its prompt, scored like a sample.
    count_post_eos: log-probs and values count every sampled token, the ones after the first EOS too.
    preferences: fill `batch.preference` from the preference model.
    with_policy=False: pi_t's log-probs, the critic's values and the rewards that need them are left for
    `adopt_policy_forward` (single-pass updates).
    engine: the rollout engine (harness.core.rollout.HFEngine, the backbone's sampler, by default).
    rule: how reward-model outputs become scores (scale, missing-EOS replacement).
    """
    P, S = len(examples), samples_per_prompt
    K = S + int(append_reference)
    tok, eos, pad = models.tokenizer, models.eos_id, models.pad_id
    query = encode_queries(examples, tok, max_prompt_tokens, models.device)
    engine = engine or HFEngine()
    with Timer(budget, "generation"):
        parts = [engine.generate(models.policy, query[p], max_new_tokens, temperature, pad, generator, S)
                 for p in _chunks(P, max(1, chunk // S))]
        raw, engine_logp = (torch.cat(x) for x in zip(*parts))
        response, mask = truncate_after_eos(raw, eos, pad)
    tokens, logp_mask = (raw, torch.ones_like(mask)) if count_post_eos else (response, mask)
    if append_reference:
        ref, ref_mask = (x.to(query.device) for x in
                         encode_responses([ex.reference for ex in examples], tok, max_new_tokens, eos, pad))

        def with_ref(x: Tensor, r: Tensor) -> Tensor:  # [P*S, L] + [P, L] -> [P*K, L], the reference last
            return torch.cat([x.reshape(P, S, -1), r[:, None]], 1).flatten(0, 1)

        tokens, response, mask = with_ref(tokens, ref), with_ref(response, ref), with_ref(mask, ref_mask)
        logp_mask = with_ref(logp_mask, torch.ones_like(ref_mask) if count_post_eos else ref_mask)
    width = _used_width(logp_mask)
    tokens, response, mask, logp_mask = (x[:, :width] for x in (tokens, response, mask, logp_mask))
    with Timer(budget, "scoring"):
        scored = _score_flat(models, query, response, mask, logprob_temperature or temperature, chunk,
                             with_rewards=reward is None, tokens=tokens, logp_mask=logp_mask, with_policy=with_policy, rule=rule)
        if reward is not None:
            scored["score"] = task_scores(reward, response, mask, examples, tok, eos, rule)
        preference = (preference_probs(models, examples, response, mask, scored["score"], gold) if preferences
                      else None)
    budget.prompts += P
    budget.responses += P * S
    budget.rm_queries += P * K

    def grouped(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.reshape(P, K, *x.shape[1:])

    batch = Batch(query=query, response=grouped(tokens), mask=grouped(mask), logp_old=grouped(scored.get("logp_old")),
                  logp_ref=grouped(scored["logp_ref"]), score=grouped(scored["score"]),
                  values_old=grouped(scored.get("values_old")),
                  logp_mask=grouped(logp_mask) if count_post_eos else None,
                  preference=preference, sample_logp=engine_logp[:, :width].reshape(P, S, -1))
    batch.max_new_tokens = max_new_tokens
    if with_policy:
        fill_rewards(batch, kl_coef, kl_estimator)
    return batch


def fill_rewards(batch: Batch, kl_coef: float, estimator: str = "k1") -> None:
    """The rewards that need pi_t's log-probs: the sequence KL (k1, the logged one), r = score - beta * sum_t KL_t
    by the run's estimator, and the per-token reward. kl_coef 0: the KL is not in the reward (loss placement)."""
    batch.kl = sequence_kl(batch.logp_old_sum, batch.logp_ref_sum)
    penalty = batch.kl if estimator == "k1" else kl_per_token(batch.logp_old, batch.logp_ref, estimator).sum(-1)
    batch.reward = kl_penalised_reward(batch.score, penalty, kl_coef)
    batch.token_reward = token_rewards(batch.score.flatten(), batch.flat("logp_old"), batch.flat("logp_ref"),
                                       batch.flat("mask"), kl_coef, estimator).reshape(batch.logp_old.shape)


def adopt_policy_forward(batch: Batch, new: PolicyOutput, kl_coef: float, estimator: str = "k1") -> None:
    """Single-pass updates (one optimizer step on one forward per batch): pi_theta at that forward IS pi_t, so pi_t's
    log-probs (and the critic's values) are that forward's, detached, bit for bit; then the rewards that need them."""
    batch.logp_old = new.logp_tokens.detach()
    if new.values is not None:
        batch.values_old = new.values.detach()
    if batch.score is not None:
        fill_rewards(batch, kl_coef, estimator)


def collect_pairs(models: Models, examples: list[Example], max_prompt_tokens: int, max_response_tokens: int,
                  temperature: float, chunk: int, budget: Budget, with_policy: bool = True) -> Batch:
    """The task's offline (chosen, rejected) pairs as a Batch with K = 2 (index 0 = chosen); nothing is sampled."""
    P = len(examples)
    query = encode_queries(examples, models.tokenizer, max_prompt_tokens, models.device)
    tok, eos, pad = models.tokenizer, models.eos_id, models.pad_id
    chosen, chosen_mask = encode_responses([ex.chosen for ex in examples], tok, max_response_tokens, eos, pad)
    rejected, rejected_mask = encode_responses([ex.rejected for ex in examples], tok, max_response_tokens, eos, pad)
    mask = torch.stack([chosen_mask, rejected_mask], 1)
    width = _used_width(mask)
    response = torch.stack([chosen, rejected], 1)[..., :width].to(query.device)
    mask = mask[..., :width].to(query.device)
    with Timer(budget, "scoring"):
        scored = _score_flat(models, query, response.flatten(0, 1), mask.flatten(0, 1),
                             temperature, chunk, with_rewards=False, with_policy=with_policy)
    budget.prompts += P
    return Batch(query=query, response=response, mask=mask,
                 logp_old=scored["logp_old"].reshape(P, 2, -1) if with_policy else None,
                 logp_ref=scored["logp_ref"].reshape(P, 2, -1))


def policy_output(models: Models, batch: Batch, temperature: float, shared_prefix: bool = True) -> PolicyOutput:
    """pi_theta's per-token log-probs (with gradients) of the batch's responses, by the same function as pi_t's.

    shared_prefix=False: one forward per response, its prompt included (the same numbers up to float rounding).
    FSDP needs it: the shared-prefix path feeds one forward's KV cache into a second forward, and FSDP's backward
    hooks see only tensors a forward returns, not a cache object.
    """
    P, K = batch.num_prompts, batch.samples_per_prompt
    r, m = batch.flat("response"), batch.counted_mask.flatten(0, 1)
    q, group = (batch.query, K) if shared_prefix else (batch.flat("query"), 1)
    logp = sequence_logprobs(models.policy, q, r, m, models.pad_id, temperature, group=group,
                             dtype=models.precision.logprob).tokens.reshape(P, K, -1)
    values = None
    if models.critic is not None:
        values = token_values(models.critic, q, r, m, models.pad_id, group=group).reshape(P, K, -1)
    return PolicyOutput(logp_tokens=logp, values=values)
