"""The reward suite of a task scored by its own reward (a task file's reward functions, verifiers or format reward):
the mean task reward of sampled and greedy responses on held-out prompts, pass@k when the reward is 0/1, KL to the
reference, response length and EOS rate.

Per prompt, `eval.samples` responses (default 4) are drawn at eval.temperature and scored in one batched call of the
task's reward (harness.core.examples.score_texts). The reward is the function's own value; with
eval.missing_eos_penalty a response without EOS gets train.missing_eos_score instead (as in training). pass@k (Chen
et al.'s unbiased estimator, evals.pass_at_k) is reported only when every score is 0 or 1: a response counts as
correct when it ENDED and scored 1, as in the math suite. KL is the masked sequence sum of log pi - log pi_ref at the
training temperature (evals.tldr.KL_DEFINITION).
"""
from __future__ import annotations

import torch

from evals.math import greedy
from evals.pass_at_k import DEFAULT_KS, summary
from evals.suites import TaskSuite, num, pct, register
from evals.tldr import KL_DEFINITION, sampled_chunks
from harness.core.distributed import Runtime
from harness.core.examples import Example, TaskReward, score_texts
from harness.core.rollout import truncate_after_eos
from harness.core.scoring import has_eos, sequence_logprobs
from harness.core.tokens import decode_responses

DEFAULT_SAMPLES = 4
METRIC_KEYS = ("reward", "greedy_reward", "pass@1", "kl", "response_length", "eos_rate")


@torch.no_grad()
def score_prompts(policy, reference, tokenizer, examples: list[Example], reward: TaskReward, *, max_prompt_tokens: int,
                  max_new_tokens: int, temperature: float, kl_temperature: float, samples: int,
                  missing_eos_score: float | None, seed: int = 1234, chunk: int = 32) -> list[dict]:
    """One record per prompt: its sampled responses (text, reward, eos, length, kl) and its greedy response."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def scored(texts, ended, prompts):
        raw = score_texts(reward, texts, prompts)
        return [r if e or missing_eos_score is None else missing_eos_score for r, e in zip(raw, ended)]

    records = []
    for batch, query, response, mask in sampled_chunks(policy, tokenizer, examples, max_prompt_tokens=max_prompt_tokens,
                                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                                       seed=seed, chunk=chunk, group=samples):
        kl = (sequence_logprobs(policy, query, response, mask, pad, kl_temperature, group=samples).sum
              - sequence_logprobs(reference, query, response, mask, pad, kl_temperature, group=samples).sum).tolist()
        texts, ended = decode_responses(response, mask, tokenizer), has_eos(response, mask, eos).tolist()
        rewards = scored(texts, ended, [ex for ex in batch for _ in range(samples)])
        lengths = mask.sum(-1).tolist()
        g_response, g_mask = truncate_after_eos(greedy(policy, query, max_new_tokens, pad, eos), eos, pad)
        g_texts, g_ended = decode_responses(g_response, g_mask, tokenizer), has_eos(g_response, g_mask, eos).tolist()
        g_rewards = scored(g_texts, g_ended, batch)
        for i in range(len(batch)):
            rows = [{"response": texts[j], "reward": rewards[j], "eos": ended[j], "length": lengths[j], "kl": kl[j]}
                    for j in range(i * samples, (i + 1) * samples)]
            records.append({"samples": rows, "greedy": {"response": g_texts[i], "reward": g_rewards[i],
                                                        "eos": g_ended[i]}})
    return records


def summarize(records: list[dict], examples: list[Example], *, temperature: float, kl_temperature: float,
              samples: int) -> tuple[dict, list[dict]]:
    flat = [s for r in records for s in r["samples"]]

    def mean(key: str) -> float:
        return sum(float(s[key]) for s in flat) / len(flat)

    binary = all(s["reward"] in (0.0, 1.0) for s in flat)
    ks = tuple(k for k in DEFAULT_KS if k <= samples)
    passes = summary([[float(s["eos"] and s["reward"] == 1.0) for s in r["samples"]] for r in records], ks=ks) \
        if binary else {}
    metrics = {"reward": mean("reward"), "greedy_reward": sum(r["greedy"]["reward"] for r in records) / len(records),
               **{f"pass@{k}": passes.get(f"pass@{k}") for k in DEFAULT_KS}, "binary_reward": binary,
               "kl": mean("kl"), "response_length": mean("length"), "eos_rate": mean("eos"), "n": len(examples),
               "samples_per_prompt": samples, "temperature": temperature, "kl_temperature": kl_temperature,
               "kl_definition": KL_DEFINITION, "win_rate": None, "win_rate_judge": None}
    out = [{"prompt": ex.prompt, **ex.record(), "sample": j, **s}
           for ex, r in zip(examples, records) for j, s in enumerate(r["samples"])]
    out += [{"prompt": ex.prompt, **ex.record(), "sample": "greedy", **r["greedy"]} for ex, r in zip(examples, records)]
    return metrics, out


class RewardSuite(TaskSuite):
    """A task scored by its own reward (a task file's functions): the reward of held-out responses."""

    name = "reward"
    summary = "mean task reward (sampled and greedy), pass@k when the reward is 0/1, KL, length, EOS rate"
    metric_keys = METRIC_KEYS
    columns = ("reward", "greedy reward", "pass@1", "kl", "eos rate", "response length")
    uses_judge = False
    rate_keys = ("pass@1", "pass@4", "pass@8", "eos_rate")
    cut_keys = ("kl", "reward", "greedy_reward", "pass@1", "eos_rate")
    verdict_units = {"reward": ("task reward", 1.0, "", 3), "greedy_reward": ("greedy task reward", 1.0, "", 3),
                     "pass@1": ("pass@1", 100.0, "points", 1)}
    matched_metrics = (("reward", "reward", 1.0, 3),)
    model_suite_tables = False

    def evaluate(self, cfg, policy, reference, models, examples, data, judge, runtime):
        runtime = runtime or Runtime.single()
        samples = cfg.eval.samples or DEFAULT_SAMPLES
        eos_score = cfg.train.missing_eos_score if cfg.eval.missing_eos_penalty else None
        records = runtime.gather(score_prompts(
            policy, reference, models.tokenizer, runtime.split(examples), data.reward,
            max_prompt_tokens=cfg.task.max_prompt_tokens, max_new_tokens=cfg.generation.max_new_tokens,
            temperature=cfg.eval.temperature, kl_temperature=cfg.generation.temperature, samples=samples,
            missing_eos_score=eos_score))
        if not runtime.is_main:
            return {}, []
        return summarize(records, examples, temperature=cfg.eval.temperature,
                         kl_temperature=cfg.generation.temperature, samples=samples)

    def describe(self, result):
        passes = f", pass@1 {pct(result['pass@1'])}" if result.get("pass@1") is not None else ""
        return (f"reward ({result.get('task')}): reward {num(result['reward'])}, greedy {num(result['greedy_reward'])}"
                f"{passes}, KL {num(result['kl'])}, {result['response_length']:.1f} tokens, EOS "
                f"{pct(result['eos_rate'])}; {result['n']} prompts x {result['samples_per_prompt']} samples at "
                f"temperature {result['temperature']:g}")

    def title_note(self, m):
        return f"; sampled at T={m['temperature']}"

    def table_row(self, m):
        return [num(m["reward"]), num(m["greedy_reward"]), pct(m.get("pass@1")), num(m["kl"]), pct(m["eos_rate"]),
                f"{m['response_length']:.1f}"]


register(RewardSuite())
