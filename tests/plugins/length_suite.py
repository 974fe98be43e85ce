"""A test-only suite: the mean task reward and response length of sampled responses on the held-out prompts."""
from __future__ import annotations

import torch

from evals.suites import TaskSuite, num, register
from evals.tldr import sampled_chunks
from harness.core.tokens import decode_responses


class LengthSuite(TaskSuite):
    name = "length"
    summary = "mean task reward and response length (a test plugin)"
    metric_keys = ("reward", "response_length")
    rate_keys = ("reward",)
    cut_keys = ("reward",)
    verdict_units = {"reward": ("reward", 100.0, "points", 1)}
    columns = ("reward", "length")
    uses_judge = False

    @torch.no_grad()
    def evaluate(self, cfg, policy, reference, models, examples, data, judge, runtime):
        samples = []
        for batch, _, response, mask in sampled_chunks(policy, models.tokenizer, examples,
                                                      max_prompt_tokens=cfg.task.max_prompt_tokens,
                                                      max_new_tokens=cfg.generation.max_new_tokens,
                                                      temperature=cfg.eval.temperature, seed=1234, chunk=16):
            texts = decode_responses(response, mask, models.tokenizer)
            for ex, text, length in zip(batch, texts, mask.sum(-1).tolist()):
                samples.append({"prompt": ex.prompt, **ex.record(), "response": text, "length": length,
                                "reward": data.reward(text, ex)})
        n = len(samples)
        metrics = {"reward": sum(s["reward"] for s in samples) / n,
                   "response_length": sum(s["length"] for s in samples) / n, "n": n,
                   "win_rate": None, "win_rate_judge": None}
        return metrics, samples

    def describe(self, result):
        return f"length: reward {result['reward']:.3f}, {result['response_length']:.1f} tokens, {result['n']} prompts"

    def table_row(self, m):
        return [num(m["reward"]), f"{m['response_length']:.1f}"]


register(LengthSuite())
