"""Killers of the survivors of issue 34's mutation run (docs/report.md, "Mutation run"): each test checks a value,
message or edge case a reader of the report relies on, which a surviving mutant of evals/ changed unnoticed."""
import json
import math
import types
import warnings

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import TTestPower

from evals import compare, matched_kl, stats
from evals.runs import load_runs, row_labels
from evals.verdicts import verdict_table

from .conftest import write_run
from .test_matched_kl import evals_at

D5 = [1.0, 2.0, 3.0, 1.0, 2.0]  # mean 1.8, sd sqrt(0.7): d_z = 2.15; all positive, so the exact sign-flip p = 2/2^5
D6 = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]  # mean 2, sd sqrt(0.8): d_z = 2.24; exact sign-flip p = 2/2^6


def _table(scores, level=0.95, test="sign-flip", budget_note=""):
    return verdict_table("tiny", scores, {k: [{"run_id": k.lower()}] for k in scores}, "x", "points", 2, level, 200, 0,
                         "v", budget_note=budget_note, test=test)


def _order(table):
    return [row[0].text for row in table.rows]


# ---------------------------------------------------------------------------------------------------------------
# evals/verdicts.py: verdict_table's layout, caption and row order

CAPTION_HEAD = ("Every pair of optimizer rows of preset tiny on x, as better vs worse: the mean of the per-seed differences "
                "(runs of one seed share data order and initialisation) with a {pct} percentile-bootstrap CI, d = "
                "Cohen's d_z (mean / sd of the differences; d with pooled sd when no seeds are shared), n = paired "
                "seeds, p = {test}, corrected with Holm over the {m} tested pairs at alpha {alpha}. Seeds for 80% "
                "power: the paired seeds that would detect the observed difference with the observed spread at alpha "
                "{alpha}/{m} (Holm's strictest step; paired t power{floor}), itself an estimate from n seeds.")
SIGN_FLIP = "exact two-sided sign-flip permutation test (no distributional assumption)"
T_TEST = ("two-sided paired t-test (assumes roughly normal per-seed differences; Welch's t when no seeds are "
          "shared)")
FLOOR = ", never below the sign-flip test's floor 2/2^n <= alpha"


def test_verdict_table_whole_layout_at_a_92_percent_level():
    """One pair, 5 seeds, level 0.92: the Holm step tests at alpha 0.08 (not a default 0.05), so the exact p = 2/32 =
    0.0625 is significant; every column name, cell, source, the caption with its budget note, and the notes."""
    t = _table({"A": {s: 10 + d for s, d in enumerate(D5)}, "B": {s: 10.0 for s in range(5)}}, 0.92,
               budget_note="Cut at 100 prompts.")
    assert (t.name, t.title, t.label_columns) == ("v", "Pairwise verdicts (tiny, x)", 1)
    assert t.columns == ["Pair", "Difference (points) [92% CI]", "d", "n", "p", "p Holm (1 pairs)", "Verdict",
                         "Seeds for 80% power"]
    (row,) = t.rows
    # the CI: percentiles of bootstrap means of 1, 2, 3, 1, 2 (its exact ends depend on the draws, not checked here)
    assert row[1].text.startswith("+1.80 [")
    # d_z 2.15; 5 seeds; p 0.0625 printed with 3 decimals; t power at alpha 0.08 needs 3 seeds, but the sign-flip floor
    # is ceil(log2(2 / 0.08)) = 5
    assert [c.text for c in row[2:]] == ["2.2", "5", "0.062", "0.062", "significant", "5"]
    st = row[1].stats
    assert st["effect_size"] == pytest.approx(1.8 / 0.7 ** 0.5) and st["pairs"] == 1 and st["significant"] is True
    assert row[0].sources == [] and row[1].sources == row[5].sources == row[7].sources == [{"run_id": "a"},
                                                                                              {"run_id": "b"}]
    assert row[5].stats is st and row[7].stats is st
    assert t.caption == CAPTION_HEAD.format(pct="92%", test=SIGN_FLIP, m=1, alpha="0.08", floor=FLOOR) + \
        " Cut at 100 prompts."  # 2/32 <= 0.08: no floor sentence; no small-n sentence for the sign-flip test
    assert t.notes == ["tiny, x: 1 of 1 tested pairs significant after Holm correction.",
                       f"A vs B: {row[1].text.replace(' [', ' points [')}, significant after Holm correction over 1 "
                       f"pairs (p_adj=0.062, d=2.2, 5 paired seeds)."]


def test_verdict_table_floor_sentence_and_not_significant_cells():
    """Three pairs of 5 seeds at alpha 0.05: Holm's first step needs p <= 0.05/3 but the exact test's smallest p is
    2/2^5 = 0.0625, which the caption says in so many words; Holm-adjusted p 3 x 0.0625 = 0.1875 is shown to 3
    decimals, raw p 0.0625 too; ties in every number are broken by the pair's names, first row then second."""
    a = {s: 10 + d for s, d in enumerate(D5)}
    c = {s: 10 + d / 2 for s, d in enumerate(D5)}  # C - B and A - C: half of D5, the same d_z and p
    t = _table({"A": a, "B": {s: 10.0 for s in range(5)}, "C": c})
    assert _order(t) == ["A vs B", "A vs C", "C vs B"]
    assert [[c.text for c in row[3:]] for row in t.rows] == [["5", "0.062", "0.188", "not significant", "7"]] * 3
    floor = (" With 5 paired seeds the smallest p the exact test can give is 2/2^5 = 0.062, so no pair of this table "
             "can be significant after correction, whatever its difference: more seeds are the only remedy.")
    assert t.caption == CAPTION_HEAD.format(pct="95%", test=SIGN_FLIP, m=3, alpha="0.05", floor=FLOOR) + floor
    assert t.notes[0] == ("tiny, x: 0 of 3 tested pairs significant after Holm correction; of the 3 not significant, "
                          "3 would need 7 paired seeds for 80% power.")
    assert all(note.endswith("at alpha 0.05/3).") for note in t.notes[1:])


def test_verdict_table_floor_sentence_boundaries():
    """The floor sentence appears exactly when 2/2^n > alpha/m: not at 2/2^5 = alpha = 0.0625 (p can reach it), not
    at alpha 0.08 over one pair, and never for the t-test, which has no floor."""
    scores = {"A": {s: 10 + d for s, d in enumerate(D5)}, "B": {s: 10.0 for s in range(5)}}
    at = _table(scores, 1 - 0.0625)
    assert at.rows[0][6].text == "significant" and "smallest p" not in at.caption
    assert "smallest p" not in _table(scores, 0.92).caption
    four = _table({"A": {s: 10 + d for s, d in enumerate(D5[:4])}, "B": {s: 10.0 for s in range(4)}}, 0.85)
    assert "smallest p" not in four.caption  # 2/16 = 0.125 <= 0.15 < 3/16
    assert "smallest p" in _table({"A": {s: 10 + d for s, d in enumerate(D5[:4])},
                                   "B": {s: 10.0 for s in range(4)}}).caption  # 0.125 > 0.05


def test_verdict_table_t_test_caption_with_two_seeds_and_unpaired_rows():
    """With the t-test the caption names it, has no floor clause, and warns about a spread guessed from 2 seeds (the
    warning starts at 2 paired seeds); unpaired rows show n as 'n_a+n_b', no seed count, and no floor or small-n
    sentence (no paired seeds at all), under either test."""
    two = _table({"A": {0: 1.0, 1: 2.0, 2: 1.5}, "B": {0: 1.0, 1: 1.2}}, test="t")
    assert two.rows[0][3].text == "2"
    assert two.caption == CAPTION_HEAD.format(pct="95%", test=T_TEST, m=1, alpha="0.05", floor="") + (
        " With 2 paired seeds the t-test's spread is itself a guess from 2 numbers: a large d (a spread that happened "
        "to be small) can make a small difference significant. Read these verdicts as indicative, or use the default "
        "sign-flip test.")
    four = _table({"A": {s: 10 + d for s, d in enumerate(D5[:4])}, "B": {s: 10.0 for s in range(4)}})
    assert "a guess from" not in four.caption  # the sign-flip test is exact: no such warning
    unpaired = {"A": {0: 1.0, 1: 2.0, 2: 1.5}, "B": {5: 1.0, 6: 1.2, 7: 1.4}}
    for test, name in (("sign-flip", SIGN_FLIP), ("t", T_TEST)):
        t = _table(unpaired, test=test)
        assert [c.text for c in t.rows[0][3:4]] + [t.rows[0][7].text] == ["3+3", "n/a (no shared seeds)"]
        assert t.caption == CAPTION_HEAD.format(pct="95%", test=name, m=1, alpha="0.05",
                                                floor=FLOOR if test == "sign-flip" else "")


def test_verdict_table_caption_when_nothing_could_be_tested():
    """One seed a side: no test, so the caption says what to run instead of naming a test."""
    t = _table({"A": {0: 1.0}, "B": {0: 0.5}})
    assert t.caption == ("Every pair of optimizer rows of preset tiny on x, as better vs worse: the difference of "
                         "their means. No pair could be tested (each sentence below says why): run two or more of the "
                         "same seeds for every optimizer.")
    assert t.columns[5] == "p Holm (0 pairs)"


def test_verdict_table_order_evidence_then_effect_then_names():
    """Rows: smaller Holm p first, then smaller raw p, then the larger |d|, then names; significant before not, and
    untested pairs (no p) last, whatever their names."""
    z = {s: 20.0 for s in range(5)}
    t = _table({"A": {s: 20 - d for s, d in enumerate(D5)}, "B": {s: 20 - d for s, d in enumerate([1, 1, 1, 1, 2.0])},
                "Z": z})
    # Z - B: d_z 1.2 / sqrt(0.2) = 2.68 and Z - A: 2.15, both p 2/32 (Holm 0.1875); B - A: zeros, 1, 2: p 1/2
    assert _order(t) == ["Z vs B", "Z vs A", "B vs A"]
    a = {s: 10.0 for s in range(6)}
    scores = {"A": a, "B": {s: 10 + d for s, d in enumerate(D6)},
              "C": {s: 10 + n for s, n in enumerate([0.1, -0.1, 0.2, -0.2, 0.1, -0.1])}, "D": {0: 5.0}}
    t = _table(scores, 0.9)
    # B - C (d_z 2.3) and B - A (2.24): p 2/64, Holm 3/32 < 0.1; A - C: mean 0, p 1; D has one seed: not tested
    assert _order(t) == ["B vs C", "B vs A", "A vs C", "A vs D", "B vs D", "C vs D"]
    assert [row[6].text for row in t.rows] == ["significant"] * 2 + ["not significant"] + ["not tested"] * 3


def test_verdict_table_infinite_and_undefined_effect_sizes_in_ties():
    """d_z is infinite when every seed differs by the same amount (the largest effect there is) and undefined (NaN)
    when no seed differs: in a tie of p-values the infinite one comes first, the undefined one ranks as d 0."""
    scores = {"A": {s: 10.0 for s in range(6)}, "B": {s: 10 + d for s, d in enumerate(D6)},
              "E": {s: 9.0 for s in range(6)}}
    # all three p = 2/64; A - E = 1 on every seed: d_z inf; B - E = 1 + D6: d_z 3 / sqrt(0.8) = 3.35; B - A: 2.24
    assert _order(_table(scores)) == ["A vs E", "B vs E", "B vs A"]
    same = {"A": {s: 1.0 for s in range(4)}, "B": {s: 1.0 for s in range(4)},
            "C": {s: 1.0 + (-1) ** s for s in range(4)}}
    t = _table(same)  # every p is 1: A - B has d NaN, the others d 0, so the names decide
    assert _order(t) == ["A vs B", "A vs C", "B vs C"]
    assert t.notes[0] == ("tiny, x: 0 of 3 tested pairs significant after Holm correction; none of the 3 not "
                          "significant has a seed count for 80% power.")


def test_verdict_table_summary_counts_several_pairs_without_a_seed_count():
    """'2 have none' (plural) when more than one not-significant pair has no seed count beside some that have one."""
    scores = {"A": {s: 10 + d for s, d in enumerate(D6)}, "B": {s: 10.0 for s in range(6)},
              "C": {s: 10.0 for s in range(6)}, "D": {s: 10.0 for s in range(6)}}
    note = _table(scores, 0.99).notes[0]
    assert note.endswith("and 3 have none (no difference, or more than 1000 seeds).")


# ---------------------------------------------------------------------------------------------------------------
# evals/stats.py

SEVEN = [0.1, 0.9, 0.35, 0.6, 0.2, 0.75, 0.5]


def test_bootstrap_defaults_are_the_reports_2000_resamples_and_seed_0():
    """Called bare, the interval functions give the numbers `harness report` prints with its defaults (--reps 2000,
    seed 0), so a reader can reproduce a cell in a notebook without knowing the report's settings."""
    # 40 seeds a side: enough distinct resample statistics that one resample more or another seed moves the ends
    x, y = list(np.random.default_rng(1).normal(0, 1, 40)), list(np.random.default_rng(2).normal(0.2, 1, 40))
    assert stats.iqm_ci(x) == stats.iqm_ci(x, 0.95, 2000, 0)
    assert stats.probability_of_improvement(x, y) == stats.probability_of_improvement(x, y, 0.95, 2000, 0)
    assert stats.poi_matrix({"A": x, "B": y}) == stats.poi_matrix({"A": x, "B": y}, 0.95, 2000, 0)


def test_poi_matrix_one_entry_per_ordered_pair_mirrored_with_the_given_seed():
    """P(row > column) for every ordered pair of distinct rows, nothing on the diagonal; the lower triangle is the
    mirror of the upper one (P(Y > X) = 1 - P(X > Y), CI [1 - high, 1 - low]); the seed reaches the bootstrap."""
    scores = {"A": SEVEN, "B": [0.3, 0.1, 0.4, 0.2, 0.15, 0.05, 0.45], "C": [0.5, 0.4, 0.6, 0.55, 0.3, 0.7, 0.2]}
    pm = stats.poi_matrix(scores, 0.9, 300, 5)
    assert set(pm) == {(a, b) for a in scores for b in scores if a != b}
    for a, b in (("A", "B"), ("A", "C"), ("B", "C")):
        assert pm[(a, b)] == stats.probability_of_improvement(scores[a], scores[b], 0.9, 300, 5)
        p, lo, hi = pm[(a, b)]
        assert lo < hi and pm[(b, a)] == (1 - p, 1 - hi, 1 - lo)


def test_significant_only_when_the_ci_excludes_one_half():
    """A CI that touches 0.5 does not exclude it (with few seeds percentile ends land on 0.5 exactly); a missing
    end means no CI at all."""
    assert stats.significant(0.5, 0.8) is False and stats.significant(0.2, 0.5) is False
    assert stats.significant(0.51, 0.8) is True and stats.significant(0.1, 0.49) is True
    assert stats.significant(math.nan, 0.7) is None and stats.significant(0.3, math.nan) is None


def test_rank_marks_one_shown_value_and_missing_values():
    """Two rows that look the same are both best (no second); a missing value gets no mark, not a placeholder."""
    assert stats.rank_marks([1.0, 1.004], 2) == ["best", "best"]
    assert stats.rank_marks([1.0, None, 2.0, math.nan], 1) == ["second", "", "best", ""]


def test_iqm_of_no_finite_value_is_nan_without_a_warning():
    """No runs (or only NaN / None scores): the IQM is NaN and nothing warns, so an empty cell does not flood a
    report's output with numpy's small-sample warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(stats.iqm([])) and math.isnan(stats.iqm([None, math.nan]))


def test_mean_std_of_one_and_two_seeds():
    """Two seeds have a sample std (|a - b| / sqrt 2); one seed has none (NaN), and saying so raises no warning."""
    assert stats.mean_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2), 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, std, n = stats.mean_std([4.0, None])
    assert (mean, n) == (4.0, 1) and math.isnan(std)


def test_probability_of_improvement_with_one_two_and_no_seeds():
    """A side with no runs: nothing (NaN); one run a side: the point P but no CI; two runs a side are enough for a
    bootstrap CI (here every resample of 0.8, 0.9 beats every resample of 0.1, 0.2: [1, 1])."""
    for x, y in (([1.0, 2.0], []), ([], [1.0, 2.0])):
        assert all(math.isnan(v) for v in stats.probability_of_improvement(x, y))
    p, lo, hi = stats.probability_of_improvement([0.9], [0.1, 0.2])
    assert p == 1.0 and math.isnan(lo) and math.isnan(hi)
    assert stats.probability_of_improvement([0.8, 0.9], [0.1, 0.2], reps=100) == (1.0, 1.0, 1.0)
    p, lo, hi = stats.probability_of_improvement([0.1, 0.2], [0.15, 0.9], reps=100)  # 2 x 2 pairs: 1 of 4 wins
    assert p == 0.25 and lo == 0.0 and hi > 0.25


# ---------------------------------------------------------------------------------------------------------------
# evals/matched_kl.py


def test_matched_table_caption_names_the_few_seed_iqm_only_below_four_seeds(results):
    """rliable trims nothing below 4 runs, so the caption says 'IQM equals the mean' for rows of at most 3 seeds
    and not at 4; the sentence is added to the caption, not put in its place."""
    sft = {"kl": 0.0, "win_rate": 0.5, "rm_score": 5.0}
    for seed in range(4):
        write_run(results, f"p{seed}", "ppo", seed=seed, sft=sft, metrics=evals_at([1.0, 2.0], [0.6, 0.6 + seed / 100]))
    runs = load_runs([results])[0]

    def caption(members):
        mv = matched_kl.matched_values(members, "win_rate")
        return matched_kl.matched_table("tiny", members, row_labels(members), mv, "Win rate (%)", 100.0, 1, 0.95, 50,
                                        0, "m").caption

    four, three = caption(runs), caption([r for r in runs if r.run_id != "p3"])
    assert four.startswith("Matched KL, preset tiny: each run's win_rate linearly interpolated") and three.startswith(
        "Matched KL, preset tiny: each run's win_rate linearly interpolated")
    assert "IQM equals the mean" not in four and four.endswith("best, underlined: second best per column.")
    assert three.endswith(" With at most 3 seeds per row the IQM equals the mean and the CI is about [min, max].")


def test_matched_table_name_title_budget_note_and_its_bootstrap_settings(results):
    """The table is named and titled as the report files it; the budget note ends the caption; the IQM CI of a
    matched cell is the stratified bootstrap with the table's resamples and seed."""
    sft = {"kl": 0.0, "win_rate": 0.5, "rm_score": 5.0}
    wins = [0.6, 0.62, 0.65, 0.61]
    for seed, w in enumerate(wins):
        write_run(results, f"p{seed}", "ppo", seed=seed, sft=sft, metrics=evals_at([1.0, 2.0], [w, w]))
    runs = load_runs([results])[0]
    mv = matched_kl.matched_values(runs, "win_rate")
    t = matched_kl.matched_table("tiny", runs, row_labels(runs), mv, "Win rate (%)", 100.0, 1, 0.5, 40, 7, "m",
                                 budget_note="Cut at 100 prompts.")
    assert (t.name, t.title) == ("m", "Matched KL (tiny): Win rate (%)")
    assert t.caption.endswith("second best per column. Cut at 100 prompts.")
    (row,) = t.rows
    at0 = [100 * (0.5 + 0.5 * (w - 0.5)) for w in wins]  # levels 0.5, 1, 1.5 of [0, 2]: at0 halfway to w at KL 1
    # IQM of four: one trimmed from each end, the mean of the middle two (0.61 and 0.62 read at KL 0.5)
    assert row[4].stats["iqm"] == pytest.approx((55.5 + 56.0) / 2) and sorted(at0)[1:3] == pytest.approx([55.5, 56.0])
    expected = stats.iqm_ci(at0, 0.5, 40, 7)  # a 50% CI: its ends depend on which 40 resamples the seed draws
    assert expected != stats.iqm_ci(at0, 0.5, 40, 8)
    assert expected[1] < expected[2] and (row[4].stats["ci_low"], row[4].stats["ci_high"]) == pytest.approx(
        expected[1:], rel=1e-12)


def test_matched_values_under_a_budget_cut(results):
    """With a counter and a budget only the evaluations within it count, a line exactly at the budget included:
    a evaluated at KL 2 (64 prompts) and 4 (128); b at 1 (64) and 2 (128)."""
    sft = {"kl": 0.0, "win_rate": 0.5, "rm_score": 5.0}
    write_run(results, "a", "ppo", sft=sft, metrics=evals_at([2.0, 4.0], [0.6, 0.7]))
    write_run(results, "b", "rebel", sft=sft, metrics=evals_at([1.0, 2.0], [0.7, 0.8]))
    runs = load_runs([results])[0]
    cut = matched_kl.matched_values(runs, "win_rate", "prompts", 100)  # 64 prompts: a to KL 2, b to KL 1
    assert (cut.low, cut.high) == (0.0, 1.0) and cut.values["b"]["area"] == pytest.approx(0.6)
    assert cut.notes[0] == ("win_rate: the common KL range ends at 1, the largest KL every run reached within the "
                            "budget (set by b); rows that drift further are compared below their final KL.")
    at = matched_kl.matched_values(runs, "win_rate", "prompts", 128)  # at the budget: both evaluations count
    assert at.high == 2.0 and "within the budget" in at.notes[0]
    assert "within the budget" not in matched_kl.matched_values(runs, "win_rate").notes[0]


def test_matched_values_without_the_sft_point_and_without_any_interpolation(results):
    """No SFT point: the common range starts at the runs' first evaluations, the mean is over that range (not from
    KL 0) and the source names metrics.jsonl only. Runs with a single evaluation: an empty result that still says
    which metric it is for. Only SFT points: no matched values at all (None)."""
    write_run(results, "a", "ppo", sft={}, metrics=evals_at([1.0, 3.0], [0.6, 0.8]))
    write_run(results, "b", "rebel", sft={}, metrics=evals_at([2.0, 4.0], [0.6, 0.6]))
    runs = load_runs([results])[0]
    mv = matched_kl.matched_values(runs, "win_rate")
    assert (mv.low, mv.high) == (2.0, 3.0)
    # a on [2, 3]: 0.7 to 0.8, mean 0.75; b is 0.6 there
    assert mv.values["a"]["area"] == pytest.approx(0.75) and mv.values["b"]["area"] == pytest.approx(0.6)
    assert mv.sources["a"] == "metrics.jsonl:eval/kl and eval/win_rate at iterations 1,2"
    (results / "runs" / "a" / "metrics.jsonl").write_text(
        json.dumps(evals_at([1.0], [0.6])[0]) + "\n")  # one evaluation, no SFT point: nothing to interpolate
    (results / "runs" / "b" / "metrics.jsonl").write_text(json.dumps(evals_at([2.0], [0.6])[0]) + "\n")
    lone = matched_kl.matched_values(load_runs([results])[0], "win_rate")
    assert lone.metric == "win_rate" and lone.levels.size == 0 and lone.values == {}
    assert math.isnan(lone.low) and math.isnan(lone.high)
    assert lone.notes[0].startswith("win_rate: a, b logged fewer than two evaluations")


def test_matched_values_is_none_with_only_sft_points(results):
    """The SFT point alone is not a trajectory: no table (None), not a table of empty cells."""
    sft = {"kl": 0.0, "win_rate": 0.5, "rm_score": 5.0}
    for run_id in ("a", "b"):
        write_run(results, run_id, "ppo", sft=sft, metrics=[{"iteration": 1, "prompts": 64, "loss": 0.1}])
    assert matched_kl.matched_values(load_runs([results])[0], "win_rate") is None


def test_trajectory_skips_lines_without_the_counter_and_named_lists_six():
    """A metrics line without the budget counter is skipped, not the end of the run; notes name at most six runs."""
    run = types.SimpleNamespace(summary={}, metrics=[{"iteration": 1, "eval/kl": 1.0, "eval/win_rate": 0.6},
                                                     {"iteration": 2, "prompts": 64, "eval/kl": 2.0,
                                                      "eval/win_rate": 0.7}])
    assert matched_kl.trajectory(run, "win_rate", "prompts", 100).kl.tolist() == [2.0]
    ids = [f"r{i}" for i in range(8)]
    assert matched_kl._named(ids[:6]) == "r0, r1, r2, r3, r4, r5"
    assert matched_kl._named(ids) == "r0, r1, r2, r3, r4, r5 and 2 more"


# ---------------------------------------------------------------------------------------------------------------
# evals/compare.py


def test_p_values_of_one_row_are_plain_floats():
    """A 1-D input gives a Python float (what the report's JSON and f-strings take), not a 0-d numpy array."""
    p = compare.paired_t_p([1.0, 2.0, 4.0])
    assert type(p) is float and p == pytest.approx(sps.ttest_1samp([1.0, 2.0, 4.0], 0.0).pvalue)
    assert json.loads(json.dumps({"p": p})) == {"p": p}
    assert type(compare.paired_t_p([1.0, 1.0, 1.0])) is float and type(compare.sign_flip_p([1.0, -2.0, 3.0])) is float


def test_matched_kl_helpers_drop_missing_and_non_finite_points():
    """A missing evaluation (None) or a NaN value drops its (KL, value) pair; it neither breaks the arithmetic nor
    turns a neighbouring interpolation into NaN. Lengths that differ are an error that says both lengths."""
    assert compare.at_kl([0.0, None, 2.0], [0.5, 0.7, 0.9], [1.0]).tolist() == pytest.approx([0.7])
    assert compare.at_kl([0.0, 1.0, 2.0], [0.5, None, 0.9], [1.0]).tolist() == pytest.approx([0.7])
    assert compare.at_kl([0.0, 1.0, 2.0], [0.5, math.nan, 0.9], [1.0]).tolist() == pytest.approx([0.7])
    assert compare.common_kl_levels([[0.0, None, 2.0], [0.0, 4.0]]).tolist() == pytest.approx([0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match=r"^kl and value differ in length \(3 != 2\)$"):
        compare.at_kl([0.0, 1.0, 2.0], [0.5, 0.9], [1.0])


def test_frontier_area_of_no_evaluation_or_one_starting_at_kl_max_is_nan():
    """No evaluation, or a run whose first evaluation is at kl_max, measured nothing of [kl_min, kl_max]: NaN,
    not a mean of 0."""
    assert math.isnan(compare.frontier_area([], [], 1.0))
    assert math.isnan(compare.frontier_area([1.0, 2.0], [0.5, 0.6], 1.0))
    assert compare.frontier_area([0.5, 2.0], [0.5, 0.8], 1.0) == pytest.approx((0.5 * (0.5 + 0.6) / 2) / 1.0)


def test_common_kl_levels_edges():
    """One level is the midpoint; a run with a single finite KL still bounds the range; a run with no finite KL,
    no runs at all, or no level asked for give an empty array (size 0)."""
    assert compare.common_kl_levels([[0.0, 2.0], [0.0, 4.0]], 1).tolist() == [1.0]
    assert compare.common_kl_levels([[1.0], [0.0, 2.0]]).tolist() == [1.0]
    for runs, n in (([[0.0, 1.0], [math.nan]], 3), ([], 3), ([[0.0, 1.0]], 0)):
        levels = compare.common_kl_levels(runs, n)
        assert levels.size == 0 and levels.tolist() == []


def test_unpaired_monte_carlo_p_is_reproducible_from_the_seed():
    """Beyond MAX_EXACT splits the label-permutation p is drawn from `seed`: the same as scipy's permutation_test
    with that generator (two-sided via |difference|), so a report's p-value can be reproduced."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.3, 1.0, 9), rng.normal(0.0, 1.0, 9)  # C(18, 9) = 48620 > MAX_EXACT
    for seed in (0, 4):
        res = compare.paired_difference(dict(enumerate(x)), {20 + i: v for i, v in enumerate(y)}, reps=2000,
                                        seed=seed)
        ref = sps.permutation_test((x, y), lambda u, v, axis: np.abs(u.mean(axis=axis) - v.mean(axis=axis)),
                                   permutation_type="independent", vectorized=True, n_resamples=2000,
                                   alternative="greater", rng=np.random.default_rng(seed))
        assert res.method == "unpaired label permutation (Monte-Carlo)" and 0.05 < res.p_value < 0.95
        assert res.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_holm_default_alpha_is_0_05():
    """Bare holm() tests at 5%: 0.01 x 2 = 0.02 is rejected, 0.3 is not."""
    assert compare.holm({"a": 0.01, "b": 0.3}) == {"a": (pytest.approx(0.02), True), "b": (pytest.approx(0.3), False)}


def test_paired_t_power_at_no_effect_is_the_size_of_the_test():
    """With d_z = 0 the two-sided test rejects with probability alpha (both tails count); power grows with d_z."""
    paired_t_power = compare.paired_t_power
    assert paired_t_power(10, 0.0, 0.05) == pytest.approx(0.05) and paired_t_power(4, 0.0, 0.2) == pytest.approx(0.2)
    assert paired_t_power(10, 0.5, 0.05) == pytest.approx(TTestPower().power(0.5, 10, 0.05), rel=1e-9)


def test_seeds_needed_against_statsmodels_and_its_edges():
    """The paired t power's answer (statsmodels' TTestPower, rounded up) above the sign-flip floor; the floor is the
    smallest n with 2/2^n <= alpha; max_n bounds the search exactly; the reasons are exact sentences."""
    two = np.array([1.0, 3.0])  # two differences are enough to plan from: d_z = 2 / sqrt(2)
    assert compare.seeds_needed(two).n == max(6, math.ceil(TTestPower().solve_power(2 / math.sqrt(2), None, 0.05,
                                                                                    0.8)))
    d = np.array([1.0, 2.0, 4.0, 0.5])
    dz = float(d.mean()) / float(d.std(ddof=1))
    n01 = math.ceil(TTestPower().solve_power(dz, None, 0.01, 0.8))
    assert compare.seeds_needed(d, 0.01, test="t").n == n01
    assert compare.seeds_needed(d, 0.01, max_n=n01, test="t").n == n01  # the bound itself is searched
    assert compare.seeds_needed(d, 0.01, max_n=n01 - 1, test="t") == (None, f"more than {n01 - 1} seeds (d_z = 1.2)")
    exact = compare.paired_t_power(n01, dz, 0.01)  # asking for exactly the power n01 seeds give: n01 is enough
    assert compare.seeds_needed(d, 0.01, float(exact), test="t").n == n01
    assert compare.seeds_needed([10.0, 10.5], test="t").n == 2  # a huge effect: the t-test's two seeds suffice
    # floors: 2/2^2 = 0.5, 2/2^6 = 1/32 <= 0.05, 2/2^7 = 1/64 <= 0.05/3; the t-test's floor is 2
    for alpha, floor in ((0.5, 2), (0.05, 6), (0.05 / 3, 7)):
        assert compare.seeds_needed([1.0, 1.0, 1.0], alpha) == (
            floor, "no spread in the differences: only the sign-flip test's floor applies")
    assert compare.seeds_needed([1.0, 1.0, 1.0], test="t") == (2, "no spread in the differences: only the t test's "
                                                                   "floor applies")
    assert compare.seeds_needed([1.0]) == (None, "fewer than two paired differences: no spread to plan from")
    assert compare.seeds_needed([1.0, None, 3.0]) == compare.seeds_needed(two)  # a missing difference is dropped
    # mean 0.05, sd sqrt(4 x 0.95^2 / 3) = 1.097: d_z 0.046, far beyond 1000 seeds
    assert compare.seeds_needed([1.0, -0.9, 1.0, -0.9]) == (None, "more than 1000 seeds (d_z = 0.046)")


def test_verdict_sentence_defaults_and_a_side_without_scores():
    """Defaults: alpha 0.05 in the seed estimate (0.05/3 over three pairs: the sign-flip floor of 7 seeds); a side
    without finite scores reads 'nan points, not tested' and says why."""
    res = compare.paired_difference({s: 10 + d for s, d in enumerate(D5)}, {s: 10.0 for s in range(5)}, 200, 0)
    text = compare.verdict_sentence("A", "B", res, (0.19, False), 3)
    assert text.endswith("(p_adj=0.19, d=2.2, 5 paired seeds; ~7 seeds for 80% power at alpha 0.05/3)")
    empty = compare.paired_difference({0: 1.0, 1: 2.0}, {1: None, 2: math.nan})
    assert compare.verdict_sentence("A", "B", empty, (math.nan, False), 1) == (
        "A vs B: nan points, not tested (a side has no finite scores)")


def test_sign_flip_p_of_no_one_and_many_differences():
    """Fewer than two differences: NaN (a float for one row, an array of the rows' shape for several), where
    scipy's permutation_test would raise for one; 14 differences (2^14 > MAX_EXACT): Monte-Carlo from the seed, by default 2000
    draws from seed 0, the same as scipy's permutation_test with that generator."""
    for few in ([], [2.0]):
        p = compare.sign_flip_p(few)
        assert type(p) is float and math.isnan(p)
    for shape in ((3, 0), (2, 3, 0), (3, 1)):
        rows = compare.sign_flip_p(np.empty(shape))
        assert rows.shape == shape[:-1] and np.isnan(rows).all()
    d = np.random.default_rng(3).normal(0.3, 1.0, 14)
    ref = sps.permutation_test((d,), lambda x, axis: np.abs(np.mean(x, axis=axis)), permutation_type="samples",
                               vectorized=True, n_resamples=2000, alternative="greater",
                               rng=np.random.default_rng(0))
    assert 0.05 < ref.pvalue < 0.95
    assert compare.sign_flip_p(d) == pytest.approx(ref.pvalue, abs=1e-12)
    assert compare.sign_flip_p(d) == compare.sign_flip_p(d, 2000, 0)


def test_paired_difference_drops_nan_scores_and_defaults_to_the_reports_settings():
    """A NaN score is no score: the seed is unmatched and counted in the note; called bare, the CI is the report's
    default bootstrap (2000 resamples, seed 0)."""
    res = compare.paired_difference({0: 1.0, 1: 2.0, 2: math.nan, 3: 4.0}, {0: 0.0, 1: 0.5, 2: 0.0, 3: 1.0})
    assert (res.n, res.mean_diff, res.note) == (3, pytest.approx((1.0 + 1.5 + 3.0) / 3), "1 unmatched seed(s) ignored")
    vals = [0.31, 2.07, 1.13, 0.72, 2.64, 1.93, 0.05, 1.48, 0.88]  # 9 uneven seeds: percentiles move with the draws
    a, b = {s: 10 + d for s, d in enumerate(vals)}, {s: 10.0 for s in range(9)}
    bare, explicit = compare.paired_difference(a, b), compare.paired_difference(a, b, 2000, 0)
    assert bare.low < bare.high and (bare.low, bare.high) == (explicit.low, explicit.high)


def test_verdict_sentence_seed_estimate_uses_the_given_power_test_and_pairs():
    """The seed estimate in a sentence is seeds_needed with the sentence's own power, test and alpha / n_pairs (one
    pair: alpha itself); no estimate gives the reason; an unpaired pair keeps p_adj and d before its seed counts."""
    res = compare.paired_difference({s: 10 + d for s, d in enumerate(D5)}, {s: 10.0 for s in range(5)}, 200, 0,
                                    test="t")
    need = compare.seeds_needed(res.diffs, 0.05, 0.9, test="t")
    assert need.n != compare.seeds_needed(res.diffs, 0.05, 0.8, test="t").n  # power, test and alpha all matter here
    assert need.n not in (compare.seeds_needed(res.diffs, 0.05, 0.9).n, compare.seeds_needed(res.diffs, 0.025, 0.9,
                                                                                               test="t").n)
    assert compare.verdict_sentence("A", "B", res, (0.2, False), 1, power=0.9, test="t").endswith(
        f"(p_adj=0.2, d=2.2, 5 paired seeds; ~{need.n} seeds for 90% power at alpha 0.05/1)")
    zero = compare.paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert compare.verdict_sentence("A", "B", zero, (1.0, False), 1).endswith(
        "(p_adj=1, d=nan, 2 paired seeds; the mean difference is 0: no number of seeds detects it)")
    unpaired = compare.paired_difference({0: 1.0, 1: 2.0, 2: 1.5}, {5: 1.0, 6: 1.2, 7: 1.4}, 50, 0)
    assert compare.verdict_sentence("A", "B", unpaired, (0.5, False), 1).endswith(
        "not significant after Holm correction over 1 pairs (p_adj=0.5, d=0.8, unpaired 3 vs 3 seeds (no shared "
        "seeds))")
    untested = compare.Comparison(1.0, math.nan, math.nan, 2, math.nan, math.nan, True, "none")  # no note
    assert compare.verdict_sentence("A", "B", untested, (math.nan, False), 1) == (
        "A vs B: +1.0 points, not tested (no p-value)")


def test_sign_flip_p_of_two_differences_by_hand():
    """Two differences 1 and 2: of the four sign vectors, ++ and -- reach |mean| 1.5: p = 2/4."""
    assert compare.sign_flip_p([1.0, 2.0]) == 0.5


def test_verdict_table_undefined_effect_ranks_as_zero_in_a_tie():
    """Two seeds with differences 3 and -1 give p = 1 (every sign vector is as extreme) and d_z 0.35; identical rows
    give p = 1 and an undefined d_z, which ranks as 0: after the pairs with an effect, not wherever it happened to be."""
    a = {0: 3.0, 1: -1.0}
    assert _order(_table({"A": a, "B": {0: 0.0, 1: 0.0}, "C": dict(a)})) == ["A vs B", "C vs B", "A vs C"]


def test_verdict_table_sentences_use_the_tables_test():
    """Under --test t the sentence's seed estimate is the t-test's, the same number as the table's seeds column
    (the sign-flip floor would say ceil(log2(2 / 0.001)) = 11 here)."""
    t = _table({"A": {s: 10 + d for s, d in enumerate(D5)}, "B": {s: 10.0 for s in range(5)}}, 0.999, test="t")
    (row,) = t.rows
    assert row[6].text == "not significant" and row[7].text != "11"
    assert t.notes[1].endswith(f"~{row[7].text} seeds for 80% power at alpha 0.001/1).")


# ---------------------------------------------------------------------------------------------------------------
# evals/compare.py: paired_difference, every field of its Comparison (the run of its 315 mutants)

def _fields(got, **want):
    """Each named field of a Comparison: NaN where NaN is meant (a float, not None), floats to 1e-12, everything else
    equal and of the same type (an int count, a bool flag, a str)."""
    for name, w in want.items():
        g = getattr(got, name)
        if isinstance(w, float) and math.isnan(w):
            assert isinstance(g, float) and math.isnan(g), name
        elif isinstance(w, float):
            assert isinstance(g, float) and g == pytest.approx(w, rel=1e-12, abs=1e-12), name
        else:
            assert type(g) is type(w) and g == w, name


def _boot(samples, stat, reps, level, seed):
    """scipy.stats.bootstrap's percentile interval from the same generator: the report's CI, reproducible."""
    ci = sps.bootstrap(samples, stat, n_resamples=reps, method="percentile", confidence_level=level, vectorized=True,
                       rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


D9 = [0.31, 2.07, 1.13, 0.72, 2.64, 1.93, 0.05, 1.48, 0.88]  # all positive: the exact sign-flip p is 2/2^9


def test_paired_difference_every_field_against_scipy():
    """9 paired seeds (2^9 = 512 sign vectors: exact), one seed only in a and two only in b, a 90% CI from 300
    resamples of seed 5: the CI is scipy's percentile bootstrap, p = 2/512 by hand (only all-plus and all-minus reach
    the observed |mean|), or scipy's ttest_rel under test="t"; d_z = mean / sd (ddof 1); the counts and the note."""
    a = {s: 10 + v for s, v in enumerate(D9)} | {20: 50.0}
    b = {s: 10.0 for s in range(9)} | {30: 0.0, 31: 1.0}
    d = np.array(D9) + 10 - 10
    low, high = _boot((d,), np.mean, 300, 0.9, 5)
    want = dict(mean_diff=float(d.mean()), low=low, high=high, n=9, effect_size=float(d.mean() / d.std(ddof=1)),
                paired=True, n_a=10, n_b=11, note="3 unmatched seed(s) ignored")
    res = compare.paired_difference(a, b, 300, 5, 0.9)
    _fields(res, p_value=2 / 512, method="paired sign-flip permutation (exact)", **want)
    assert res.diffs.tolist() == pytest.approx(d.tolist())
    t = compare.paired_difference(a, b, 300, 5, 0.9, "t")
    _fields(t, p_value=float(sps.ttest_rel([10 + v for v in D9], [10.0] * 9).pvalue), method="paired t-test", **want)
    matched = compare.paired_difference({s: 10 + v for s, v in enumerate(D9)}, {s: 10.0 for s in range(9)}, 300, 5,
                                        0.9)
    _fields(matched, n_a=9, n_b=9, note="", low=low, high=high)


def test_paired_difference_monte_carlo_sign_flip_uses_its_reps_and_seed():
    """14 paired seeds: 2^14 > MAX_EXACT sign vectors, so `reps` random ones drawn from `seed` -- the same p-value as
    scipy's permutation_test with that generator over the differences in their seeds' text order (0, 1, 10, ..., 13,
    2, ..., 9: the draws are tied to positions), and the method says Monte-Carlo."""
    v = np.random.default_rng(8).normal(0.4, 1.0, 14)
    d = v[sorted(range(14), key=str)]
    ref = sps.permutation_test((d,), lambda x, axis: np.abs(np.mean(x, axis=axis)), permutation_type="samples",
                               vectorized=True, n_resamples=300, alternative="greater", rng=np.random.default_rng(4))
    assert 0.05 < ref.pvalue < 0.95 and ref.pvalue != compare.sign_flip_p(d, 300, 0)  # seed 0's draws differ
    res = compare.paired_difference({s: 5 + x for s, x in enumerate(v)}, {s: 5.0 for s in range(14)}, 300, 4)
    _fields(res, p_value=float(ref.pvalue), method="paired sign-flip permutation (Monte-Carlo)", n=14)


def test_paired_difference_seeds_of_mixed_types():
    """Seeds are any hashable (run ids, ints): an int and a str seed in one dict are ordered by their text, not
    compared with each other (which would raise TypeError), paired and unpaired."""
    res = compare.paired_difference({1: 3.0, "b": 5.0, 2: 4.0}, {1: 1.0, "b": 1.0, 2: 1.0}, 50)
    _fields(res, n=3, mean_diff=3.0, paired=True)
    assert res.diffs.tolist() == [2.0, 3.0, 4.0]  # seeds in the order "1", "2", "b"
    un = compare.paired_difference({1: 3.0, "b": 5.0}, {2: 1.0, "c": 2.0, 3: 0.0}, 50)
    _fields(un, n=5, mean_diff=3.0, paired=False)


def test_unpaired_difference_every_field_against_scipy():
    """4 vs 3 seeds sharing one (seed 0, so fewer than two shared: unpaired, every seed used): the CI is scipy's
    percentile bootstrap of the difference of means (each side resampled), p the exact label permutation over
    C(7, 4) = 35 splits (scipy's permutation_test) or Welch's t-test; d = mean difference / pooled sd."""
    x, y = np.array([1.0, 2.5, 0.3, 4.0]), np.array([0.2, 0.1, 1.9])
    a, b = dict(enumerate(x)), {0: 0.2, 11: 0.1, 12: 1.9}
    diff = lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis)  # noqa: E731
    low, high = _boot((x, y), diff, 300, 0.9, 5)
    pooled = math.sqrt((3 * x.var(ddof=1) + 2 * y.var(ddof=1)) / 5)
    want = dict(mean_diff=float(x.mean() - y.mean()), low=low, high=high, n=7,
                effect_size=float((x.mean() - y.mean()) / pooled), paired=False, n_a=4, n_b=3,
                note="unpaired: fewer than two shared seeds")
    perm = sps.permutation_test((x, y), lambda u, v, axis: np.abs(diff(u, v, axis)), permutation_type="independent",
                                vectorized=True, n_resamples=np.inf, alternative="greater")
    _fields(compare.paired_difference(a, b, 300, 5, 0.9), p_value=float(perm.pvalue),
            method="unpaired label permutation (exact)", **want)
    _fields(compare.paired_difference(a, b, 300, 5, 0.9, "t"), p_value=float(sps.ttest_ind(x, y, equal_var=False).pvalue),
            method="unpaired Welch t-test", **want)


def test_unpaired_difference_without_spread_single_seeds_and_empty_sides():
    """Constant sides: d is +-inf when their means differ (the largest effect there is), NaN when they do not; one
    seed a side: the difference of means and nothing else; a side without finite scores: nothing at all. Every
    field, with the exact notes."""
    nan = math.nan
    up = compare.paired_difference({0: 2.0, 1: 2.0, 2: 2.0}, {5: 1.0, 6: 1.0}, 50)
    _fields(up, mean_diff=1.0, effect_size=math.inf, p_value=1 / 10, paired=False, n=5)  # 1 of C(5, 3) splits
    _fields(compare.paired_difference({0: 1.0, 1: 1.0}, {5: 2.0, 6: 2.0, 7: 2.0}, 50), effect_size=-math.inf)
    _fields(compare.paired_difference({0: 2.0, 1: 2.0}, {5: 2.0, 6: 2.0, 7: 2.0}, 50), mean_diff=0.0, effect_size=nan)
    single = compare.paired_difference({0: 3.0, 1: 1.0}, {5: 0.5}, 50)
    _fields(single, mean_diff=1.5, low=nan, high=nan, n=3, effect_size=nan, p_value=nan, paired=False, method="none",
            n_a=2, n_b=1, note="unpaired: fewer than two shared seeds; a side has a single seed, no test")
    empty = compare.paired_difference({0: 1.0, 1: 2.0, 2: math.inf}, {1: None, 2: math.nan}, 50)
    _fields(empty, mean_diff=nan, low=nan, high=nan, n=2, effect_size=nan, p_value=nan, paired=False, method="none",
            n_a=2, n_b=0, note="a side has no finite scores")
    _fields(compare.paired_difference({}, {0: 1.0, 1: 2.0, 2: 3.0}, 50), n=3, n_a=0, n_b=3)
