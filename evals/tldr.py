"""The TL;DR suite: RM score, KL to the reference (sequence estimate and exact), win rate against human references.

Generation uses the evaluation temperature (the reference code: 0.01); the KL is computed on those samples at the
sampling temperature of training (stated as `kl_temperature`), because log-probs at 0.01 measure nothing useful.
"""
from __future__ import annotations

import torch

from evals.suites import TaskSuite, num, pct, register
from harness.core.distributed import Runtime
from harness.core.experience import encode_queries
from harness.core.rollout import sample, truncate_after_eos
from harness.core.examples import Example, Gold
from harness.core.scoring import ScoreRule, exact_kl, has_eos, reward_scores, sequence_logprobs
from harness.core.tokens import decode_responses

KL_DEFINITION = "masked_sequence_sum"


def sampled_chunks(policy, tokenizer, examples: list[Example], *, max_prompt_tokens: int, max_new_tokens: int,
                   temperature: float, seed: int, chunk: int, group: int = 1):
    """The evaluations' sampling loop: chunks of examples -> (examples, query, response, mask), `group` responses per
    example cut after EOS, from one seeded generator (the same sampling noise for every policy evaluated), the
    policy in eval mode meanwhile."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(policy.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    was_training = policy.training
    policy.eval()
    try:
        for start in range(0, len(examples), chunk):
            batch = examples[start : start + chunk]
            query = encode_queries(batch, tokenizer, max_prompt_tokens, device)
            raw = sample(policy, query, max_new_tokens, temperature, pad, generator, group=group)
            yield (batch, query, *truncate_after_eos(raw, eos, pad))
    finally:
        policy.train(was_training)


@torch.no_grad()
def score_responses(policy, reference, reward_model, tokenizer, examples: list[Example], *, max_prompt_tokens: int,
                    max_new_tokens: int, temperature: float, kl_temperature: float, seed: int = 1234,
                    chunk: int = 64, rule: ScoreRule = ScoreRule(missing_eos_score=None)) -> list[dict]:
    """Sample one response per example at `temperature`; its text, RM score, KL (both estimates), length, EOS."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    records: list[dict] = []
    for batch, query, response, mask in sampled_chunks(policy, tokenizer, examples, max_prompt_tokens=max_prompt_tokens,
                                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                                       seed=seed, chunk=chunk):
        pi = sequence_logprobs(policy, query, response, mask, pad, kl_temperature, keep_logits=True)
        ref = sequence_logprobs(reference, query, response, mask, pad, kl_temperature, keep_logits=True)
        columns = {"response": decode_responses(response, mask, tokenizer),
                   "score": reward_scores(reward_model, query, response, mask, pad, rule=rule).tolist(),
                   "kl": (pi.sum - ref.sum).tolist(), "kl_exact": exact_kl(pi.logits, ref.logits, mask).tolist(),
                   "length": mask.sum(-1).tolist(), "eos": has_eos(response, mask, eos).tolist()}
        records += [dict(zip(columns, row)) for row in zip(*columns.values())]
    return records


def summarize(records: list[dict], examples: list[Example], *, temperature: float, kl_temperature: float,
              judge=None, gold: Gold | None = None) -> tuple[dict, list[dict]]:
    """Metrics (means over `examples`) and per-sample records, with the judge's verdicts when there is a judge and
    the task's gold reward when it has one."""
    mean = lambda key: sum(r[key] for r in records) / len(records)  # noqa: E731
    metrics = {"rm_score": mean("score"), "kl": mean("kl"), "kl_exact": mean("kl_exact"),
               "response_length": mean("length"), "eos_rate": mean("eos"),
               "n": len(examples), "temperature": temperature, "kl_temperature": kl_temperature,
               "kl_definition": KL_DEFINITION, "win_rate": None, "win_rate_judge": None, "gold_reward": None}
    texts, ended = [r["response"] for r in records], [r["eos"] for r in records]
    samples = [{"prompt": ex.prompt, "response": r["response"], "reference": ex.reference, "score": r["score"],
                "kl": r["kl"], "eos": r["eos"]} for ex, r in zip(examples, records)]
    if gold is not None:
        golds = [gold(t, ex, terminated=e) for ex, t, e in zip(examples, texts, ended)]
        metrics["gold_reward"] = sum(golds) / len(golds)
        for rec, g in zip(samples, golds):
            rec["gold"] = g
    if judge is not None:
        kwargs = {"terminated": ended} if getattr(judge, "sees_termination", False) else {}
        verdicts = judge.win_rate([ex.prompt for ex in examples], texts, [ex.reference for ex in examples], **kwargs)
        metrics["win_rate"], metrics["win_rate_judge"] = verdicts["win_rate"], judge.name
        metrics["judge"] = {k: v for k, v in verdicts.items() if k != "per_sample"}
        for rec, v in zip(samples, verdicts["per_sample"]):
            rec["judge"] = v
    return metrics, samples


def evaluate_tldr(policy, reference, reward_model, tokenizer, examples: list[Example], *, max_prompt_tokens: int,
                  max_new_tokens: int, temperature: float, kl_temperature: float, judge=None, seed: int = 1234,
                  chunk: int = 64, runtime: Runtime | None = None,
                  rule: ScoreRule = ScoreRule(missing_eos_score=None), gold: Gold | None = None) -> tuple[dict, list[dict]]:
    """Metrics and per-sample records. `judge` may be None (win rate not computed). With several processes each
    scores its share of the examples and rank 0 alone judges and returns the metrics (the others get ({}, []))."""
    runtime = runtime or Runtime.single()
    records = runtime.gather(score_responses(policy, reference, reward_model, tokenizer, runtime.split(examples),
                                             max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
                                             temperature=temperature, kl_temperature=kl_temperature, seed=seed,
                                             chunk=chunk, rule=rule))
    if not runtime.is_main:
        return {}, []
    return summarize(records, examples, temperature=temperature, kl_temperature=kl_temperature, judge=judge,
                     gold=gold)


class TldrSuite(TaskSuite):
    """A reward-model task's runs (TL;DR, chat prompts): RM score, KL, win rate against the references."""

    name = "tldr"
    summary = "RM score, KL to the reference and win rate against the human references, on held-out prompts"
    metric_keys = ("rm_score", "kl", "kl_exact", "win_rate", "gold_reward", "response_length")
    columns = ("win rate", "RM score", "KL(pi||ref)", "exact KL", "gold reward", "length")
    rate_keys = ("win_rate",)
    default_task = "tldr"

    def evaluate(self, cfg, policy, reference, models, examples, data, judge, runtime):
        from harness.core.train import score_rule

        return evaluate_tldr(policy, reference, models.reward_model, models.tokenizer, examples,
                             max_prompt_tokens=cfg.task.max_prompt_tokens,
                             max_new_tokens=cfg.generation.max_new_tokens, temperature=cfg.eval.temperature,
                             kl_temperature=cfg.generation.temperature, judge=judge, runtime=runtime,
                             rule=score_rule(cfg, missing_eos=cfg.eval.missing_eos_penalty), gold=data.gold)

    def summary_table(self, summary):
        table = super().summary_table(summary)
        table.columns[1].header = f"win rate ({summary['eval'].get('win_rate_judge') or 'no judge'})"
        return table

    cut_keys = ("win_rate", "rm_score", "kl")
    verdict_units = {"win_rate": ("win rate", 100.0, "points", 1), "rm_score": ("RM score", 1.0, "RM score", 2)}
    matched_metrics = (("win_rate", "Win rate (%)", 100.0, 1), ("rm_score", "RM score", 1.0, 2),
                       ("gold_reward", "Gold reward", 1.0, 3))

    def verdict_metric(self, metric, members, observations):
        if metric == "win_rate" and not any(observations[r.run_id][0].get("win_rate") is not None for r in members):
            return "rm_score", "no win rates (no judge), so P(improvement) and the verdicts use rm_score."
        return metric, ""

    def main_table(self, members, labels, observations, key, opts, suffix, budget_note, notes):
        from evals.tables import table1

        return table1(members, labels, observations, str(key.get("judge")), opts.level, opts.reps, opts.seed,
                      "table1" + suffix, budget_note), observations

    def figures(self, members, labels, opts, suffix):
        from evals import plots

        pdir = opts.out / "plots"
        return [(plots.frontier, members, labels, pdir / f"frontier{suffix}.png"),
                (plots.learning_curves, members, labels, opts.x_metric, opts.level,
                 pdir / f"learning_curves{suffix}.png"),
                (plots.mt_bench_radar, members, labels, pdir / f"mt_bench_radar{suffix}.png"),
                (plots.eta_ablation, members, pdir / f"eta_ablation{suffix}.png"),
                (plots.winrate_vs_length, members, labels, pdir / f"winrate_vs_length{suffix}.png")]

    def describe(self, result):
        return (f"tldr: win rate {pct(result['win_rate'])} ({result['win_rate_judge'] or 'no judge'}), RM score "
                f"{num(result['rm_score'])}, KL {num(result['kl'])}, {result['n']} prompts")

    def table_row(self, m):
        return [pct(m["win_rate"]), num(m["rm_score"]), num(m["kl"]), num(m["kl_exact"]),
                num(m["gold_reward"]), f"{m['response_length']:.1f}"]


register(TldrSuite())
