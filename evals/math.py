"""The math suite of a verifiable task (arith, gsm8k): pass@k, greedy pass@1, KL to the reference, response length,
and the share of answers with no extractable number, on held-out problems.

Per problem, `samples` responses are drawn at `temperature` (the run's sampling temperature: the policy is judged
on the distribution it was trained to sample from), each checked by the task's extraction rule
(harness.tasks.verifier). A response counts as correct only when it ENDED (EOS within max_new_tokens) and its final
number equals the answer: a cut-off response has not committed to an answer, as in training, where it gets the
missing-EOS score. pass@k for k in `ks` is Chen et al.'s unbiased estimator over those samples (evals.pass_at_k),
so pass@1 is the mean correctness at `temperature`. Greedy pass@1 is one argmax-decoded response per problem.
KL is the masked sequence sum of log pi - log pi_ref over the sampled responses at `kl_temperature` (the training
sampling temperature), the TL;DR suite's definition (evals.tldr.KL_DEFINITION).
"""
from __future__ import annotations

import torch

from evals.pass_at_k import DEFAULT_KS, summary
from evals.tldr import KL_DEFINITION, sampled_chunks
from harness.distributed import Runtime
from harness.examples import Example
from harness.rollout import truncate_after_eos
from harness.scoring import has_eos, sequence_logprobs
from harness.tasks.verifier import verify
from harness.tokens import decode_responses

DEFAULT_SAMPLES = 8  # per problem: enough for pass@8 with the unbiased estimator
METRIC_KEYS = ("pass@1", "pass@4", "pass@8", "greedy_pass@1", "kl", "response_length", "no_answer_frac", "eos_rate")


@torch.no_grad()
def greedy(policy, query: torch.Tensor, max_new_tokens: int, pad_id: int, eos_id: int) -> torch.Tensor:
    """Argmax decoding of left-padded queries (transformers' generate, positions from the attention mask);
    [B, max_new_tokens], padded after it stops."""
    out = policy.generate(input_ids=query, attention_mask=(query != pad_id).long(), max_new_tokens=max_new_tokens,
                          min_new_tokens=0, do_sample=False, pad_token_id=pad_id, eos_token_id=eos_id)
    new = out[:, query.shape[1]:]
    return torch.nn.functional.pad(new, (0, max_new_tokens - new.shape[1]), value=pad_id)


@torch.no_grad()
def score_problems(policy, reference, tokenizer, examples: list[Example], *, max_prompt_tokens: int,
                   max_new_tokens: int, temperature: float, kl_temperature: float, samples: int = DEFAULT_SAMPLES,
                   seed: int = 1234, chunk: int = 32) -> list[dict]:
    """One record per problem: its `samples` sampled responses (text, correct, no_answer, extracted, eos, length,
    kl) and its greedy response."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    records: list[dict] = []
    for batch, query, response, mask in sampled_chunks(policy, tokenizer, examples, max_prompt_tokens=max_prompt_tokens,
                                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                                       seed=seed, chunk=chunk, group=samples):
        kl = (sequence_logprobs(policy, query, response, mask, pad, kl_temperature, group=samples).sum
              - sequence_logprobs(reference, query, response, mask, pad, kl_temperature, group=samples).sum)
        texts, ended = decode_responses(response, mask, tokenizer), has_eos(response, mask, eos).tolist()
        lengths, kl = mask.sum(-1).tolist(), kl.tolist()
        g_response, g_mask = truncate_after_eos(greedy(policy, query, max_new_tokens, pad, eos), eos, pad)
        g_texts, g_ended = decode_responses(g_response, g_mask, tokenizer), has_eos(g_response, g_mask, eos).tolist()
        for i, ex in enumerate(batch):
            rows = []
            for j in range(i * samples, (i + 1) * samples):
                v = verify(texts[j], ex.answer)
                rows.append({"response": texts[j], "correct": v.correct if ended[j] else 0.0, "no_answer": v.no_answer,
                             "extracted": v.extracted, "eos": ended[j], "length": lengths[j], "kl": kl[j]})
            g = verify(g_texts[i], ex.answer)
            records.append({"samples": rows, "greedy": {"response": g_texts[i], "correct": g.correct if g_ended[i]
                                                        else 0.0, "extracted": g.extracted, "eos": g_ended[i]}})
    return records


def summarize(records: list[dict], examples: list[Example], *, temperature: float, kl_temperature: float,
              ks=DEFAULT_KS) -> tuple[dict, list[dict]]:
    """Metrics (pass@k per `ks`, greedy pass@1, means over every sample) and one sample record per response."""
    flat = [s for r in records for s in r["samples"]]
    passes = summary([[s["correct"] for s in r["samples"]] for r in records],
                     no_answer=[[s["no_answer"] for s in r["samples"]] for r in records], ks=ks)

    def mean(key: str) -> float:
        return sum(float(s[key]) for s in flat) / len(flat)

    metrics = {**{f"pass@{k}": passes[f"pass@{k}"] for k in ks},
               "greedy_pass@1": sum(r["greedy"]["correct"] for r in records) / len(records),
               "kl": mean("kl"), "response_length": mean("length"), "no_answer_frac": passes["no_answer_frac"],
               "eos_rate": mean("eos"), "n": len(examples), "samples_per_problem": passes["min_samples"],
               "temperature": temperature, "kl_temperature": kl_temperature, "kl_definition": KL_DEFINITION,
               "win_rate": None, "win_rate_judge": None}
    samples = [{"prompt": ex.prompt, "answer": ex.answer, "sample": j, **s}
               for ex, r in zip(examples, records) for j, s in enumerate(r["samples"])]
    samples += [{"prompt": ex.prompt, "answer": ex.answer, "sample": "greedy", **r["greedy"]}
                for ex, r in zip(examples, records)]
    return metrics, samples


def evaluate_math(policy, reference, tokenizer, examples: list[Example], *, max_prompt_tokens: int,
                  max_new_tokens: int, temperature: float, kl_temperature: float, samples: int = DEFAULT_SAMPLES,
                  seed: int = 1234, chunk: int = 32, runtime: Runtime | None = None) -> tuple[dict, list[dict]]:
    """Metrics and per-sample records; every example needs `answer`. With several processes each scores its share
    and rank 0 returns the metrics (the others get ({}, []))."""
    missing = [i for i, ex in enumerate(examples) if ex.answer is None]
    if missing:
        raise ValueError(f"the math suite needs Example.answer; evaluation example {missing[0]} has none")
    runtime = runtime or Runtime.single()
    records = runtime.gather(score_problems(policy, reference, tokenizer, runtime.split(examples),
                                            max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
                                            temperature=temperature, kl_temperature=kl_temperature, samples=samples,
                                            seed=seed, chunk=chunk))
    if not runtime.is_main:
        return {}, []
    ks = tuple(k for k in DEFAULT_KS if k <= samples)
    return summarize(records, examples, temperature=temperature, kl_temperature=kl_temperature, ks=ks)
