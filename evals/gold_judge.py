"""The offline judge of a task with a gold reward (the synthetic stand-in): compares two responses by it.

Same interface and result keys as the LLM judge (evals/judge.py), so the TL;DR suite does not care which it gets.
The gold reward is order-free, so position consistency is 1 by construction and there are no parse failures.
"""
from __future__ import annotations

from harness.core.examples import Example, Gold


class GoldJudge:
    name = "gold"
    sees_termination = True  # the gold reward scores a response that never ended as -1

    def __init__(self, gold: Gold, examples: list[Example]):
        self.gold, self.examples = gold, examples

    def win_rate(self, prompts: list[str], responses: list[str], references: list[str],
                 terminated: list[bool] | None = None) -> dict:
        terminated = terminated or [True] * len(responses)
        wins = losses = ties = 0
        per_sample = []
        for i, (resp, ref, ex, ended) in enumerate(zip(responses, references, self.examples, terminated)):
            g_resp, g_ref = self.gold(resp, ex, terminated=ended), self.gold(ref, ex)
            verdict = "win" if g_resp > g_ref else "loss" if g_resp < g_ref else "tie"
            wins, losses, ties = wins + (verdict == "win"), losses + (verdict == "loss"), ties + (verdict == "tie")
            per_sample.append({"index": i, "verdict": verdict, "gold_response": g_resp, "gold_reference": g_ref})
        n = len(per_sample)
        return {"win_rate": (wins + 0.5 * ties) / n if n else None, "wins": wins, "losses": losses, "ties": ties,
                "position_consistency": 1.0, "parse_failures": 0, "n": n, "calls": 0, "prompt_tokens": 0,
                "completion_tokens": 0, "cache_hits": 0, "per_sample": per_sample}
