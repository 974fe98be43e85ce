"""Turning prompts into a scored Batch: the same code for every optimizer (fairness is a backbone property)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.batch import Batch, PolicyOutput
from harness.models import Models
from harness.rollout import sample, truncate_after_eos
from harness.scoring import kl_penalised_reward, reward_scores, sequence_kl, sequence_logprobs, token_values
from harness.tasks.tldr import Example, truncate_prompt
from harness.tokens import encode_responses, left_pad


@dataclass
class Budget:
    """Cumulative work done by a run: the axes along which tables can be cut at equal budget."""

    prompts: int = 0
    responses: int = 0
    rm_queries: int = 0
    optimizer_steps: int = 0
    wall_time_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # per-phase seconds of the current iteration

    def counters(self) -> dict:
        return {"prompts": self.prompts, "responses": self.responses, "rm_queries": self.rm_queries,
                "optimizer_steps": self.optimizer_steps, "wall_time_s": round(self.wall_time_s, 3)}


class Timer:
    def __init__(self, budget: Budget, phase: str):
        self.budget, self.phase = budget, phase

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.budget.timings[self.phase] = self.budget.timings.get(self.phase, 0.0) + time.perf_counter() - self.t


def encode_queries(examples: list[Example], tokenizer, max_prompt_tokens: int) -> Tensor:
    return left_pad([truncate_prompt(ex, tokenizer, max_prompt_tokens) for ex in examples], tokenizer.pad_token_id)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def _score_flat(models: Models, query: Tensor, response: Tensor, mask: Tensor, temperature: float, chunk: int,
                with_rewards: bool) -> dict[str, Tensor]:
    """pi_t and pi_ref per-token log-probs (and RM scores, critic values) of flat [N] sequences, in chunks."""
    parts: dict[str, list[Tensor]] = {"logp_old": [], "logp_ref": [], "score": [], "values_old": []}
    pad = models.pad_id
    for s in _chunks(len(query), chunk):
        q, r, m = query[s], response[s], mask[s]
        parts["logp_old"].append(sequence_logprobs(models.policy, q, r, m, pad, temperature).tokens)
        with models.as_reference() as ref:
            parts["logp_ref"].append(sequence_logprobs(ref, q, r, m, pad, temperature).tokens)
        if with_rewards:
            parts["score"].append(reward_scores(models.reward_model, q, r, m, pad))
        if models.critic is not None:
            parts["values_old"].append(token_values(models.critic, q, r, m, pad))
    return {k: torch.cat(v) for k, v in parts.items() if v}


def collect_online(models: Models, examples: list[Example], samples_per_prompt: int, max_prompt_tokens: int,
                   max_new_tokens: int, temperature: float, kl_coef: float, chunk: int, budget: Budget,
                   generator: torch.Generator) -> Batch:
    """Sample K responses per prompt from pi_t, cut at EOS, score them: the on-policy Batch."""
    P, K = len(examples), samples_per_prompt
    query = encode_queries(examples, models.tokenizer, max_prompt_tokens)
    flat_query = query.repeat_interleave(K, dim=0)
    with Timer(budget, "generation"):
        raw = torch.cat([sample(models.policy, flat_query[s], max_new_tokens, temperature, models.pad_id, generator)
                         for s in _chunks(len(flat_query), chunk)])
        response, mask = truncate_after_eos(raw, models.eos_id, models.pad_id)
    with Timer(budget, "scoring"):
        scored = _score_flat(models, flat_query, response, mask, temperature, chunk, with_rewards=True)
    kl = sequence_kl(scored["logp_old"].sum(-1), scored["logp_ref"].sum(-1))
    reward = kl_penalised_reward(scored["score"], kl, kl_coef)
    budget.prompts += P
    budget.responses += P * K
    budget.rm_queries += P * K

    def grouped(x: Tensor) -> Tensor:
        return x.reshape(P, K, *x.shape[1:])

    return Batch(query=query, response=grouped(response), mask=grouped(mask), logp_old=grouped(scored["logp_old"]),
                 logp_ref=grouped(scored["logp_ref"]), score=grouped(scored["score"]), kl=grouped(kl),
                 reward=grouped(reward), values_old=grouped(scored["values_old"]) if "values_old" in scored else None)


def collect_pairs(models: Models, examples: list[Example], max_prompt_tokens: int, max_response_tokens: int,
                  temperature: float, chunk: int, budget: Budget) -> Batch:
    """The task's offline (chosen, rejected) pairs as a Batch with K = 2 (index 0 = chosen); nothing is sampled."""
    P = len(examples)
    query = encode_queries(examples, models.tokenizer, max_prompt_tokens)
    tok, eos, pad = models.tokenizer, models.eos_id, models.pad_id
    chosen, chosen_mask = encode_responses([ex.chosen for ex in examples], tok, max_response_tokens, eos, pad)
    rejected, rejected_mask = encode_responses([ex.rejected for ex in examples], tok, max_response_tokens, eos, pad)
    response = torch.stack([chosen, rejected], 1)
    mask = torch.stack([chosen_mask, rejected_mask], 1)
    with Timer(budget, "scoring"):
        scored = _score_flat(models, query.repeat_interleave(2, 0), response.flatten(0, 1), mask.flatten(0, 1),
                             temperature, chunk, with_rewards=False)
    budget.prompts += P
    return Batch(query=query, response=response, mask=mask, logp_old=scored["logp_old"].reshape(P, 2, -1),
                 logp_ref=scored["logp_ref"].reshape(P, 2, -1))


def policy_output(models: Models, batch: Batch, temperature: float) -> PolicyOutput:
    """pi_theta's per-token log-probs (with gradients) of the batch's responses, by the same function as pi_t's."""
    P, K = batch.num_prompts, batch.samples_per_prompt
    q, r, m = batch.flat("query"), batch.flat("response"), batch.flat("mask")
    logp = sequence_logprobs(models.policy, q, r, m, models.pad_id, temperature).tokens.reshape(P, K, -1)
    values = None
    if models.critic is not None:
        values = token_values(models.critic, q, r, m, models.pad_id).reshape(P, K, -1)
    return PolicyOutput(logp_tokens=logp, values=values)
