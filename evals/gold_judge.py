"""The synthetic stand-in's offline judge: compares two summaries by the programmatic gold reward.

Same interface and result keys as the LLM judge (evals/judge.py), so the TL;DR suite does not care which it gets.
The gold reward is order-free, so position consistency is 1 by construction and there are no parse failures.
"""
from __future__ import annotations

from harness.tasks.synthetic import Facts, gold_reward


class GoldJudge:
    name = "gold"
    sees_termination = True  # the gold reward scores a response that never ended as -1

    def __init__(self, facts: list[dict]):
        self.facts = [Facts(**f) for f in facts]

    def win_rate(self, prompts: list[str], responses: list[str], references: list[str],
                 terminated: list[bool] | None = None) -> dict:
        terminated = terminated or [True] * len(responses)
        wins = losses = ties = 0
        per_sample = []
        for i, (resp, ref, facts, ended) in enumerate(zip(responses, references, self.facts, terminated)):
            g_resp, g_ref = gold_reward(resp, facts, terminated=ended), gold_reward(ref, facts)
            verdict = "win" if g_resp > g_ref else "loss" if g_resp < g_ref else "tie"
            wins, losses, ties = wins + (verdict == "win"), losses + (verdict == "loss"), ties + (verdict == "tie")
            per_sample.append({"index": i, "verdict": verdict, "gold_response": g_resp, "gold_reference": g_ref})
        n = len(per_sample)
        return {"win_rate": (wins + 0.5 * ties) / n if n else None, "wins": wins, "losses": losses, "ties": ties,
                "position_consistency": 1.0, "parse_failures": 0, "n": n, "calls": 0, "prompt_tokens": 0,
                "completion_tokens": 0, "cache_hits": 0, "per_sample": per_sample}
