"""Pairwise verdicts of `harness report`: every pair of optimizer rows of a table, paired by seed, corrected over
all pairs of the table, with the seeds each pair would need; one table and one plain sentence per pair.

Why a table of its own next to the probability of improvement: P(X > Y) says how often one seed beats another but,
at 3-5 seeds, its percentile CI collapses to a point whenever one side wins every draw. The verdicts here test the
mean paired difference (exactly by sign-flip permutation, or by the paired t-test with --test t; evals/compare.py),
control the family-wise error over the m pairs of the table (Holm), and turn the observed spread into a number of
seeds for 80% power, so a reader knows whether to buy seeds or stop. The arithmetic lives in evals/compare.py; this module only lays it out.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Hashable, Mapping

from evals import compare
from evals.tables import Cell, Table

POWER = 0.8
TEST_TEXT = {"sign-flip": "exact two-sided sign-flip permutation test (no distributional assumption)",
             "t": "two-sided paired t-test (assumes roughly normal per-seed differences; Welch's t when no seeds "
                  "are shared)"}
FLOOR_TEXT = {"sign-flip": ", never below the sign-flip test's floor 2/2^n <= alpha", "t": ""}


def _orient(a: str, b: str, scores: Mapping[str, Mapping], reps: int, seed: int, level: float, test: str):
    """(winner, loser, comparison) with a non-negative mean difference, so every sentence reads 'better vs worse'
    (both tests are symmetric: the p-value does not depend on the order)."""
    res = compare.paired_difference(scores[a], scores[b], reps, seed, level, test)
    if math.isfinite(res.mean_diff) and res.mean_diff < 0:
        return b, a, compare.paired_difference(scores[b], scores[a], reps, seed, level, test)
    return a, b, res


def _seeds_text(res: compare.Comparison, alpha: float, test: str) -> tuple[str, int | None]:
    if not res.paired:
        return "n/a (no shared seeds)", None
    need = compare.seeds_needed(res.diffs, alpha, POWER, test=test)
    return (str(need.n), need.n) if need.n else (need.reason, None)


def _span(values: list[int]) -> str:
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _fmt(x: float, decimals: int, sign: bool = False) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"


def verdict_table(preset: str, scores: dict[str, dict[Hashable, float]], sources: dict[str, list[dict]], what: str,
                  unit: str, decimals: int, level: float, reps: int, seed: int, name: str,
                  budget_note: str = "", test: str = "sign-flip", only: list[tuple[str, str]] | None = None) -> Table:
    """`scores`: row label -> {seed: value, already scaled to `unit`}; `what` names the compared quantity for the
    title and caption (e.g. 'win rate, final evaluation'); `test` one of compare.TESTS; `only`: test these pairs
    of labels and no others (a pre-registered family), else every pair. Rows sorted by Holm-adjusted p, then by
    pair."""
    alpha = 1 - level
    chosen = sorted({tuple(sorted(p)) for p in only}) if only else combinations(sorted(scores), 2)
    pairs = [_orient(a, b, scores, reps, seed, level, test) for a, b in chosen]
    adjusted = compare.holm({(a, b): res.p_value for a, b, res in pairs}, alpha)
    m = sum(math.isfinite(p) for p, _ in adjusted.values())
    # strongest evidence first: adjusted p, then raw p (Holm ties many at 1), then the larger effect (an infinite
    # d_z, the same difference on every seed, is the largest; an undefined one, no difference at all, counts as 0)
    pairs.sort(key=lambda t: (not math.isfinite(adjusted[t[:2]][0]), adjusted[t[:2]][0], t[2].p_value,
                              0.0 if math.isnan(t[2].effect_size) else -abs(t[2].effect_size), t[0], t[1]))
    pct = f"{level:.0%}"
    columns = ["Pair", f"Difference ({unit}) [{pct} CI]", "d", "n", "p", f"p Holm ({m} pairs)", "Verdict",
               f"Seeds for {POWER:.0%} power"]
    rows, sentences, short, needs = [], [], [], []
    for a, b, res in pairs:
        p_adj, reject = adjusted[(a, b)]
        srcs = sources[a] + sources[b]
        verdict = "not tested" if not math.isfinite(p_adj) else "significant" if reject else "not significant"
        seeds, n_needed = _seeds_text(res, alpha / max(m, 1), test)
        st = {"a": a, "b": b, "mean_diff": res.mean_diff, "ci_low": res.low, "ci_high": res.high,
              "effect_size": res.effect_size, "n": res.n, "paired": res.paired, "p": res.p_value, "p_holm": p_adj,
              "significant": bool(reject), "pairs": m, "seeds_needed": n_needed, "method": res.method}
        rows.append([Cell(f"{a} vs {b}"),
                     Cell(f"{_fmt(res.mean_diff, decimals, True)} [{_fmt(res.low, decimals)}, "
                          f"{_fmt(res.high, decimals)}]", sources=srcs, stats=st),
                     Cell(_fmt(res.effect_size, 1)), Cell(str(res.n) if res.paired else f"{res.n_a}+{res.n_b}"),
                     Cell(_fmt(res.p_value, 3)), Cell(_fmt(p_adj, 3), sources=srcs, stats=st),
                     Cell(verdict), Cell(seeds, sources=srcs, stats=st)])
        sentences.append(compare.verdict_sentence(a, b, res, (p_adj, reject), m, unit, decimals, alpha, POWER,
                                                  test) + ".")
        if math.isfinite(p_adj) and not reject:
            (needs if n_needed else short).append(n_needed)
    which = (f"The {len(pairs)} chosen pairs (--verdict-pairs)" if only else "Every pair") + " of optimizer rows"
    caption = (f"{which} of preset {preset} on {what}, as better vs worse: the mean of the "
               f"per-seed differences (runs of one seed share data order and initialisation) with a {pct} "
               f"percentile-bootstrap CI, d = Cohen's d_z (mean / sd of the differences; d with pooled sd when no "
               f"seeds are shared), n = paired seeds, p = {TEST_TEXT[test]}, corrected "
               f"with Holm over the {m} tested pairs at alpha {alpha:.2g}. Seeds for {POWER:.0%} power: the paired "
               f"seeds that would detect the observed difference with the observed spread at alpha {alpha:.2g}/{m} "
               f"(Holm's strictest step; paired t power{FLOOR_TEXT[test]}), itself an estimate from n seeds."
               if m else
               f"{which} of preset {preset} on {what}, as better vs worse: the difference of "
               f"their means. No pair could be tested (each sentence below says why): run two or more of the same "
               f"seeds for every optimizer.")
    n_min = min((st["n"] for st in (r[1].stats for r in rows) if st["paired"]), default=0)
    if test == "sign-flip" and n_min and 2 / 2 ** n_min > alpha / max(m, 1):
        caption += (f" With {n_min} paired seeds the smallest p the exact test can give is 2/2^{n_min} = "
                    f"{2 / 2 ** n_min:.2g}, so no pair of this table can be significant after correction, "
                    f"whatever its difference: more seeds are the only remedy.")
    if test == "t" and 2 <= n_min < 5:
        caption += (f" With {n_min} paired seeds the t-test's spread is itself a guess from {n_min} numbers: a large "
                    f"d (a spread that happened to be small) can make a small difference significant. Read these "
                    f"verdicts as indicative, or use the default sign-flip test.")
    if budget_note:
        caption += " " + budget_note
    significant = sum(bool(r[5].stats["significant"]) for r in rows)
    summary = f"{preset}, {what}: {significant} of {m} tested pairs significant after Holm correction"
    if needs or short:
        summary += (f"; of the {len(needs) + len(short)} not significant, {len(needs)} would need "
                    f"{_span(needs)} paired seeds for {POWER:.0%} power" if needs else
                    f"; none of the {len(short)} not significant has a seed count for {POWER:.0%} power")
        if needs and short:
            summary += (f" and {len(short)} {'has' if len(short) == 1 else 'have'} none (no difference, or more "
                        f"than 1000 seeds)")
    return Table(name, f"Pairwise verdicts ({preset}, {what})", columns, rows, caption, label_columns=1,
                 notes=[summary + "."] + sentences)
