"""The math suite of a verifiable task (arith, gsm8k, math): pass@k, greedy pass@1, KL to the reference, response length,
and the share of answers with no extractable number, on held-out problems.

Per problem, `samples` responses are drawn at `temperature` (the run's sampling temperature: the policy is judged
on the distribution it was trained to sample from), each scored by the task's reward (its checker: 1.0 right, 0.0
wrong, harness.core.examples.TaskReward; its optional `details` say whether an answer was found). A response counts as
correct only when it ENDED (EOS within max_new_tokens) and its checker accepts it: a cut-off response has not
committed to an answer, as in training, where it gets the missing-EOS score. pass@k for k in `ks` is Chen et al.'s unbiased estimator over those samples (evals.pass_at_k),
so pass@1 is the mean correctness at `temperature`. Greedy pass@1 is one argmax-decoded response per problem.
KL is the masked sequence sum of log pi - log pi_ref over the sampled responses at `kl_temperature` (the training
sampling temperature), the TL;DR suite's definition (evals.tldr.KL_DEFINITION).
"""
from __future__ import annotations

import torch

from evals.pass_at_k import DEFAULT_KS, summary
from evals.tldr import KL_DEFINITION, sampled_chunks
from evals.suites import TaskSuite, num, pct, register
from harness.core.distributed import Runtime
from harness.core.examples import Example, TaskReward, score_texts
from harness.core.rollout import truncate_after_eos
from harness.core.scoring import has_eos, sequence_logprobs
from harness.core.tokens import decode_responses

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
def score_problems(policy, reference, tokenizer, examples: list[Example], reward: TaskReward, *,
                   max_prompt_tokens: int, max_new_tokens: int, temperature: float, kl_temperature: float,
                   samples: int = DEFAULT_SAMPLES, seed: int = 1234, chunk: int = 32) -> list[dict]:
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
        # one batched call for the samples and one for the greedy responses (a reward may call a server)
        scores = score_texts(reward, texts, [ex for ex in batch for _ in range(samples)])
        g_scores = score_texts(reward, g_texts, batch)
        for i, ex in enumerate(batch):
            rows = []
            for j in range(i * samples, (i + 1) * samples):
                d = _details(reward, texts[j], ex)
                rows.append({"response": texts[j], "correct": scores[j] if ended[j] else 0.0,
                             "no_answer": d["no_answer"], "extracted": d["extracted"], "eos": ended[j],
                             "length": lengths[j], "kl": kl[j]})
            g = _details(reward, g_texts[i], ex)
            records.append({"samples": rows, "greedy": {"response": g_texts[i], "correct": g_scores[i]
                                                        if g_ended[i] else 0.0, "extracted": g["extracted"],
                                                        "eos": g_ended[i]}})
    return records


def _details(reward: TaskReward, text: str, example: Example) -> dict:
    """The checker's record of one response (no_answer, extracted); a reward without `details` found an answer."""
    details = getattr(reward, "details", None)
    return {"no_answer": False, "extracted": None, **(details(text, example) if details else {})}


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
    samples = [{"prompt": ex.prompt, **ex.record(), "sample": j, **s}
               for ex, r in zip(examples, records) for j, s in enumerate(r["samples"])]
    samples += [{"prompt": ex.prompt, **ex.record(), "sample": "greedy", **r["greedy"]}
                for ex, r in zip(examples, records)]
    return metrics, samples


def evaluate_math(policy, reference, tokenizer, examples: list[Example], reward: TaskReward, *,
                  max_prompt_tokens: int, max_new_tokens: int, temperature: float, kl_temperature: float,
                  samples: int = DEFAULT_SAMPLES, seed: int = 1234, chunk: int = 32,
                  runtime: Runtime | None = None) -> tuple[dict, list[dict]]:
    """Metrics and per-sample records, every response scored by the task's `reward`. With several processes each
    scores its share and rank 0 returns the metrics (the others get ({}, []))."""
    runtime = runtime or Runtime.single()
    records = runtime.gather(score_problems(policy, reference, tokenizer, runtime.split(examples), reward,
                                            max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
                                            temperature=temperature, kl_temperature=kl_temperature, samples=samples,
                                            seed=seed, chunk=chunk))
    if not runtime.is_main:
        return {}, []
    ks = tuple(k for k in DEFAULT_KS if k <= samples)
    return summarize(records, examples, temperature=temperature, kl_temperature=kl_temperature, ks=ks)


class MathSuite(TaskSuite):
    """A checker task's runs (arith, gsm8k, math): pass@k and the rest, graded by the task's checker (no judge)."""

    name = "math"
    summary = "pass@k (k = 1, 4, 8), greedy pass@1, KL, no-answer share, graded by the task's checker"
    metric_keys = METRIC_KEYS
    columns = ("pass@1", "pass@4", "pass@8", "greedy pass@1", "kl", "no answer frac", "response length")
    uses_judge = False
    default_task = "arith"
    rate_keys = ("pass@1", "pass@4", "pass@8", "greedy_pass@1", "no_answer_frac")

    cut_keys = ("kl",) + rate_keys
    verdict_units = {k: (k.replace("_", " "), 100.0, "points", 1) for k in ("pass@1", "pass@4", "pass@8",
                                                                            "greedy_pass@1")}
    matched_metrics = (("pass@1", "pass@1 (%)", 100.0, 1),)
    model_suite_tables = False  # chat and open-llm files are not expected of a math run

    def file_name(self, task: str) -> str:
        return f"{task}.json"  # arith.json, gsm8k.json: what `harness eval --suite math` writes

    def main_table(self, members, labels, observations, key, opts, suffix, budget_note, notes):
        from evals.math_tables import math_observations, math_table

        if not opts.budget_metric:
            observations = math_observations(members, observations, notes)
        task = str(key.get("task"))
        slug = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in task)
        return math_table(members, labels, observations, task, opts.level, opts.reps, opts.seed,
                          f"math_{slug}{suffix}", budget_note), observations

    def figures(self, members, labels, opts, suffix):
        from evals import plots

        return [(plots.pass_at_1_curves, members, labels, opts.x_metric, opts.level,
                 opts.out / "plots" / f"pass_at_1_curves{suffix}.png")]

    def evaluate(self, cfg, policy, reference, models, examples, data, judge, runtime):
        return evaluate_math(policy, reference, models.tokenizer, examples, data.reward,
                             max_prompt_tokens=cfg.task.max_prompt_tokens,
                             max_new_tokens=cfg.generation.max_new_tokens, temperature=cfg.eval.temperature,
                             kl_temperature=cfg.generation.temperature, runtime=runtime,
                             samples=cfg.eval.samples or DEFAULT_SAMPLES)

    def describe(self, result):
        return (f"math ({result.get('task')}): pass@1 {pct(result['pass@1'])}, pass@4 {pct(result.get('pass@4'))}, "
                f"pass@8 {pct(result.get('pass@8'))}, greedy pass@1 {pct(result['greedy_pass@1'])}, KL "
                f"{num(result['kl'])}, {result['response_length']:.1f} tokens, no answer "
                f"{pct(result['no_answer_frac'])}; {result['n']} problems x {result['samples_per_problem']} "
                f"samples at temperature {result['temperature']:g}")

    def title_note(self, m):
        return f"; sampled at T={m['temperature']}"

    def table_row(self, m):
        keys = ("pass@1", "pass@4", "pass@8", "greedy_pass@1", "kl", "no_answer_frac", "response_length")
        return [num(m.get(k)) if k in ("kl", "response_length") else pct(m.get(k)) for k in keys]


register(MathSuite())
