"""Pairwise verdicts against hand computation, `harness report` on synthetic runs with known effects (a real
difference is detected, a null one and a drift-bought one at matched KL are not), and equal-budget cuts on every
budget axis."""
import numpy as np
import pytest
from scipy import stats

import harness.app.report as report
from evals.verdicts import verdict_table
from harness.core.errors import UserError
from harness.core.experience import Budget

from .conftest import default_metrics, read, write_run
from .test_report_cli import invoke

DIFFS = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]  # mean 2, sd sqrt(0.8): d_z = 2.236; all positive over 6 seeds


def test_verdict_table_two_rows_hand_values():
    scores = {"A": {s: 10 + d for s, d in enumerate(DIFFS)}, "B": {s: 10.0 for s in range(6)}}
    t = verdict_table("tiny", scores, {"A": [{"run_id": "a"}], "B": [{"run_id": "b"}]}, "RM score, final", "RM score",
                      2, 0.95, 500, 0, "v")
    (row,) = t.rows
    st = row[1].stats
    assert row[0].text == "A vs B" and st["mean_diff"] == pytest.approx(2.0)
    assert row[2].text == "2.2" and row[3].text == "6"  # d_z = 2 / sqrt(0.8); 6 paired seeds
    # exact sign flip: only all-plus and all-minus reach |sum| = 12, p = 2 / 2^6; one pair, so Holm changes nothing
    assert st["p"] == pytest.approx(2 / 64) and st["p_holm"] == pytest.approx(2 / 64) and row[6].text == "significant"
    assert 1.0 <= st["ci_low"] < 2.0 < st["ci_high"] <= 3.0  # bootstrap means of the differences stay in [1, 3]
    # d_z 2.2 needs 4 seeds by the t power, but the sign-flip test cannot reach p < 0.05 below ceil(log2(40)) = 6
    assert row[7].text == "6"
    with_t = verdict_table("tiny", scores, {"A": [{"run_id": "a"}], "B": [{"run_id": "b"}]}, "RM score, final",
                           "RM score", 2, 0.95, 500, 0, "v", test="t")
    assert with_t.rows[0][7].text == "4"  # the t-test has no floor: its power alone asks for 4 seeds
    assert t.notes[1].startswith("A vs B: +2.00 RM score [") and "significant after Holm correction over 1 pairs" in \
        t.notes[1]
    assert t.notes[0] == "tiny, RM score, final: 1 of 1 tested pairs significant after Holm correction."


def test_verdict_table_holm_over_three_pairs_hand_values():
    noise = [0.1, -0.1, 0.2, -0.2, 0.1, -0.1]  # C - B: mean 0, a null pair
    scores = {"A": {s: 10 + d for s, d in enumerate(DIFFS)}, "B": {s: 10.0 for s in range(6)},
              "C": {s: 10 + n for s, n in enumerate(noise)}}
    t = verdict_table("tiny", scores, {k: [{"run_id": k}] for k in scores}, "win rate, final", "points", 1, 0.95, 200,
                      0, "v")
    rows = {r[0].text: r[1].stats for r in t.rows}
    assert set(rows) == {"A vs B", "A vs C", "B vs C"}
    # raw p: A vs B = A vs C = 2/64 (all six differences positive), B vs C = 1 (sum 0); Holm: 3 x 2/64, then
    # max(that, 2 x 2/64), then 1: 0.094, 0.094, 1 -- nothing survives at 0.05
    assert rows["A vs B"]["p_holm"] == pytest.approx(3 / 32) and rows["A vs C"]["p_holm"] == pytest.approx(3 / 32)
    assert rows["B vs C"]["p_holm"] == 1.0 and not any(r["significant"] for r in rows.values())
    # power at alpha 0.05/3: the sign-flip floor ceil(log2(2 / (0.05/3))) = ceil(log2(120)) = 7 seeds
    assert rows["A vs B"]["seeds_needed"] == 7
    assert "no pair of this table can be significant after correction" in t.caption  # 2/64 > 0.05/3
    assert t.rows[0][0].text in ("A vs B", "A vs C") and t.rows[-1][0].text == "B vs C"  # strongest evidence first


# ---------------------------------------------------------------------------------------------------------------
# the done-means test: `harness report` on synthetic runs with known effects

SEEDS = range(10)  # 2/2^10 x 6 pairs < 0.05: a consistent difference can survive Holm over 6 pairs
EVALS = 8
ARMS = {"base": (4.0, 0.0), "twin": (4.0, 0.0), "better": (4.0, 0.03), "drifter": (6.0, 0.0)}  # final KL, shift


def frontier(kl: float) -> float:
    """Win rate vs KL shared by every arm but `better` (+3 points); linear, so interpolation is exact."""
    return 0.3 + 0.06 * kl


@pytest.fixture(scope="module")
def known_effects(tmp_path_factory):
    root = tmp_path_factory.mktemp("effects") / "results"
    rng = np.random.default_rng(1234)
    for seed in SEEDS:
        offset = rng.normal(0, 0.02)  # what a seed shares across arms (data order, initialisation)
        sft = {"kl": 0.0, "win_rate": frontier(0) + offset, "rm_score": 10 * (frontier(0) + offset)}
        for arm, (final_kl, shift) in ARMS.items():
            lines = []
            for i in range(1, EVALS + 1):
                kl = final_kl * i / EVALS
                w = frontier(kl) + shift + offset + rng.normal(0, 0.004)
                lines.append({"iteration": i, "prompts": 64 * i, "responses": 128 * i, "rm_queries": 128 * i,
                              "optimizer_steps": 4 * i, "wall_time_s": 10.0 * i, "eval/kl": kl, "eval/win_rate": w,
                              "eval/rm_score": 10 * w})
            write_run(root, f"{arm}-{seed}", arm, seed, win_rate=w, rm_score=10 * w, kl=final_kl, sft=sft,
                      metrics=lines)
    out = root.parent / "out"
    res = invoke(root, "--out", out, "--reps", 200, "--no-plots")
    assert res.exit_code == 0, res.output
    return out, res.output


def verdict(out, family: str, a: str, b: str) -> dict:
    cells = [c for c in read(out / "provenance.json")["cells"]
             if c["table"] == f"verdicts_{family}_tiny" and c["column"].startswith("p Holm")]
    (cell,) = [c for c in cells if {c["stats"]["a"], c["stats"]["b"]} == {a, b}]
    return cell["stats"]


@pytest.mark.parametrize("family, a, b, real", [
    ("final", "better", "base", True), ("final", "better", "twin", True), ("final", "twin", "base", False),
    ("final", "drifter", "base", True),  # drift buys final win rate: a real difference of final numbers...
    ("matched_kl", "better", "base", True), ("matched_kl", "twin", "base", False),
    ("matched_kl", "drifter", "base", False),  # ...which vanishes at matched KL: same frontier
])
def test_report_detects_real_differences_and_not_null_ones(known_effects, family, a, b, real):
    st = verdict(known_effects[0], family, a, b)
    assert st["pairs"] == 6 and st["n"] == len(SEEDS) and st["paired"]
    assert st["significant"] is real, st
    if real:
        assert st["a"] == a and st["ci_low"] > 0  # oriented better vs worse, CI excludes 0


def test_report_prints_matched_tables_sentences_and_seeds(known_effects):
    out, printed = known_effects
    md = (out / "report.md").read_text()
    for name in ("matched_kl_win_rate_tiny", "matched_kl_rm_score_tiny", "verdicts_final_tiny",
                 "verdicts_matched_kl_tiny", "poi_tiny"):
        assert (out / "tables" / f"{name}.csv").is_file(), name
    assert "### Matched KL (tiny): Win rate (%)" in md and "Win rate (%) @ KL 1" in md
    assert "mean over KL 0-4" in md  # the common range ends where the non-drifting arms stop
    assert "better vs base: +" in md and "significant after Holm correction over 6 pairs" in md
    assert "Seeds for 80% power" in md and "not significant after Holm correction over 6 pairs" in printed
    assert "evaluations (SFT included) in the common KL range" not in md  # 8 evaluations: none is thin
    assert "P(row > column)" in md  # rliable's probability of improvement stays


def test_t_test_and_a_chosen_family_of_pairs(known_effects, tmp_path):
    root = known_effects[0].parent / "results"
    res = invoke(root, "--out", tmp_path, "--reps", 50, "--no-plots", "--test", "t",
                 "--verdict-family", "better,base,twin")
    assert res.exit_code == 0, res.output
    st = verdict(tmp_path, "final", "better", "base")
    assert st["pairs"] == 3 and st["method"] == "paired t-test" and st["significant"]
    assert not verdict(tmp_path, "final", "twin", "base")["significant"]
    md = (tmp_path / "report.md").read_text()
    assert "two-sided paired t-test" in md and "only the pairs among base, better, twin" in md
    assert "the t-test's spread is itself a guess" not in md  # 10 seeds
    three = verdict_table("tiny", {"A": {0: 1.0, 1: 2.0, 2: 3.3}, "B": {0: 0.0, 1: 1.0, 2: 2.0}},
                          {"A": [{}], "B": [{}]}, "pass@1, final", "points", 1, 0.95, 50, 0, "v", test="t")
    assert "With 3 paired seeds the t-test's spread is itself a guess" in three.caption
    assert three.rows[0][1].stats["p"] == pytest.approx(stats.ttest_rel([1.0, 2.0, 3.3], [0.0, 1.0, 2.0]).pvalue)
    assert "drifter vs" not in md.split("Pairwise verdicts")[1]  # outside the family: not tested
    bad = invoke(root, "--out", tmp_path, "--no-plots", "--verdict-family", "better,nosuch")
    assert isinstance(bad.exception, UserError) and "no row nosuch" in str(bad.exception)
    assert "at least two" in str(invoke(root, "--verdict-family", "better").exception)
    assert "--test must be one of" in str(invoke(root, "--test", "wilcoxon").exception)


def test_chosen_pairs_are_the_whole_family(known_effects, tmp_path):
    """--verdict-pairs tests exactly the listed pairs: Holm's m is their count, a pair outside is never tested, and
    the raw p of a pair does not depend on which family it sits in."""
    root = known_effects[0].parent / "results"
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text("- [better, base]\n- [twin, base]\n- [base, better]\n")  # a repeated pair counts once
    res = invoke(root, "--out", tmp_path / "out", "--reps", 50, "--no-plots", "--test", "t", "--verdict-pairs", pairs)
    assert res.exit_code == 0, res.output
    chosen, twin = (verdict(tmp_path / "out", "final", a, "base") for a in ("better", "twin"))
    assert chosen["pairs"] == twin["pairs"] == 2 and chosen["significant"] and not twin["significant"]
    res = invoke(root, "--out", tmp_path / "all", "--reps", 50, "--no-plots", "--test", "t")
    every = verdict(tmp_path / "all", "final", "better", "base")
    assert every["pairs"] == 6 and every["p"] == pytest.approx(chosen["p"])  # same raw p, smaller family
    low, high = sorted([chosen["p"], twin["p"]])  # Holm over 2 by hand
    assert min(chosen["p_holm"], twin["p_holm"]) == pytest.approx(min(1.0, 2 * low))
    assert max(chosen["p_holm"], twin["p_holm"]) == pytest.approx(min(1.0, max(2 * low, high)))
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("Pairwise verdicts")[1]
    assert "The 2 chosen pairs (--verdict-pairs)" in md and "only these 2 pairs" in md
    assert "better vs twin" not in section and "twin vs better" not in section
    pairs.write_text("- [better, nosuch]\n")
    bad = invoke(root, "--out", tmp_path / "bad", "--no-plots", "--verdict-pairs", pairs)
    assert isinstance(bad.exception, UserError) and "no row nosuch" in str(bad.exception)
    pairs.write_text("- [better]\n")
    assert "two different row labels" in str(invoke(root, "--no-plots", "--verdict-pairs", pairs).exception)
    pairs.write_text("- [better, base]\n")
    both = invoke(root, "--no-plots", "--verdict-pairs", pairs, "--verdict-family", "better,base")
    assert "pass one of them" in str(both.exception)


# ---------------------------------------------------------------------------------------------------------------
# equal-budget cuts on every axis the budget counts

AT_ITERATION_3 = {"prompts": 192, "responses": 384, "rm_queries": 384, "optimizer_steps": 12, "wall_time_s": 30.0}


@pytest.fixture(scope="module")
def budget_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget") / "results"
    for seed in range(2):
        write_run(root, f"rebel-{seed}", "rebel", seed, metrics=default_metrics(final_win=0.6 + seed / 100))
        write_run(root, f"ppo-{seed}", "ppo", seed, metrics=default_metrics(final_win=0.5 + seed / 100))
    offline = [dict(m, responses=0, rm_queries=0) for m in default_metrics(final_win=0.55)]
    write_run(root, "dpo-0", "dpo", 0, metrics=offline)
    return root


def test_every_budget_counter_has_a_cut_and_the_report_knows_it():
    assert set(AT_ITERATION_3) == set(Budget.COUNTERS) == set(report.BUDGET_CHOICES), \
        "a new budget counter: log it in conftest.default_metrics and give its iteration-3 value here"


@pytest.mark.parametrize("counter", Budget.COUNTERS)
def test_equal_budget_cut_on_every_axis(budget_runs, tmp_path, counter):
    budget = AT_ITERATION_3[counter]
    opts = report.Options(out=tmp_path, budget_metric=counter, budget=budget, reps=50, plots=False)
    sections, skipped, _ = report.build([budget_runs], opts)
    tables = {t.name: t for t in sections[0].tables}
    assert {"table1", "matched_kl_win_rate_tiny", "poi_tiny", "verdicts_final_tiny",
            "verdicts_matched_kl_tiny"} <= set(tables)
    for t in tables.values():
        assert f"Equal-budget cut: {counter} <= {budget:g}" in t.caption, t.name
    rebel = next(r for r in tables["table1"].rows if r[1].text == "rebel")
    assert all(f"cut at iteration 3 ({counter}={budget:g}" in s["source"] for s in rebel[3].sources)
    # eval/win_rate of iteration 2, the latest at or before the cut: (0.60 + 0.61) / 2 x 2/6 = 20.17%, sd 0.24
    assert rebel[3].text == "20.2 (0.2)"
    assert any("lag the cut iteration by up to 1 iterations" in n for n in sections[0].notes)
    dpo_skip = [s.reason for s in skipped if s.path.endswith("dpo-0")]
    if counter in ("responses", "rm_queries"):  # offline pairs: it spends none of these, so it has no cut
        assert dpo_skip == [f"dpo-0: left out of the equal-budget table: it spends no {counter} (0 over the whole "
                            f"run), so no cut on this axis"]
    else:
        assert dpo_skip == []


def test_a_counter_no_run_logged_is_one_clear_error(budget_runs, tmp_path):
    opts = report.Options(out=tmp_path, budget_metric="generated_tokens", budget=100, reps=50, plots=False)
    with pytest.raises(UserError, match="no run's metrics.jsonl logs this counter"):
        report.build([budget_runs], opts)


def test_verdict_table_orients_worse_first_rows_with_the_same_options():
    """When the alphabetically first row is the worse one, the pair is recomputed as better vs worse with the
    table's own resamples, seed, level and test (mutation-run survivors in the swap branch)."""
    from evals import compare

    scores = {"A": {s: 10.0 for s in range(5)}, "B": {s: 10 + d for s, d in enumerate([1.0, 2.5, 0.5, 3.0, 1.5])}}
    t = verdict_table("tiny", scores, {"A": [{}], "B": [{}]}, "score, final", "points", 2, 0.9, 300, 3, "v", test="t")
    (row,) = t.rows
    st = row[1].stats
    expected = compare.paired_difference(scores["B"], scores["A"], 300, 3, 0.9, "t")
    assert (st["a"], st["b"], st["method"]) == ("B", "A", "paired t-test")
    assert (st["mean_diff"], st["ci_low"], st["ci_high"], st["p"]) == pytest.approx(
        (expected.mean_diff, expected.low, expected.high, expected.p_value), rel=1e-12)
    assert row[1].text == f"+{expected.mean_diff:.2f} [{expected.low:.2f}, {expected.high:.2f}]"
    assert t.columns[1] == "Difference (points) [90% CI]"
    assert t.caption.endswith("itself an estimate from n seeds.")  # no budget note, no small-n warning at 5
    ordered = verdict_table("tiny", {"A": scores["B"], "B": scores["A"]}, {"A": [{}], "B": [{}]}, "score, final",
                            "points", 2, 0.9, 300, 3, "v", test="t").rows[0][1].stats
    direct = compare.paired_difference(scores["B"], scores["A"], 300, 3, 0.9, "t")  # no swap: the first call counts
    assert (ordered["a"], ordered["method"]) == ("A", "paired t-test")
    assert (ordered["ci_low"], ordered["ci_high"], ordered["p"]) == pytest.approx(
        (direct.low, direct.high, direct.p_value), rel=1e-12)


def test_verdict_table_cells_for_untestable_unpaired_and_null_pairs():
    """One seed a side: no interval and no test ('–'); no shared seeds: no seed count; a zero difference: the
    reason instead of a number; the summary line gives the range of seed counts."""
    t = verdict_table("tiny", {"A": {0: 1.0}, "B": {0: 0.5}}, {"A": [{}], "B": [{}]}, "x", "points", 1, 0.95, 50, 0,
                      "v")
    (row,) = t.rows
    assert row[1].text == "+0.5 [–, –]" and row[4].text == "–" and row[6].text == "not tested"
    unpaired = verdict_table("tiny", {"A": {0: 1.0, 1: 2.0, 2: 1.5}, "B": {5: 1.0, 6: 1.2, 7: 1.4}},
                             {"A": [{}], "B": [{}]}, "x", "points", 1, 0.95, 50, 0, "v")
    assert unpaired.rows[0][7].text == "n/a (no shared seeds)"
    null = verdict_table("tiny", {"A": {s: float(s % 2) for s in range(4)}, "B": {s: 0.5 for s in range(4)}},
                         {"A": [{}], "B": [{}]}, "x", "points", 1, 0.95, 50, 0, "v")
    assert null.rows[0][7].text == "the mean difference is 0: no number of seeds detects it"
    rng = np.random.default_rng(8)
    three = {k: {s: v for s, v in enumerate(rng.normal(m, 1.0, 6))} for k, m in (("A", 0.0), ("B", 0.3), ("C", 0.5))}
    summary = verdict_table("tiny", three, {k: [{}] for k in three}, "x", "points", 1, 0.95, 50, 0, "v").notes[0]
    needs = sorted(r[7].stats["seeds_needed"] for r in verdict_table("tiny", three, {k: [{}] for k in three}, "x",
                                                                     "points", 1, 0.95, 50, 0, "v").rows)
    assert f"would need {needs[0]}-{needs[-1]} paired seeds" in summary and needs[0] < needs[-1]
    assert verdict_table("tiny", three, {k: [{}] for k in three}, "x", "points", 1, 0.95, 50, 0, "v").caption.endswith(
        "more seeds are the only remedy.")
    twins = {"A": {s: 1.0 + s % 3 for s in range(6)}, "B": {s: 0.0 for s in range(6)}, "C": {s: 0.0 for s in range(6)}}
    note = verdict_table("tiny", twins, {k: [{}] for k in twins}, "x", "points", 1, 0.95, 50, 0, "v").notes[0]
    assert note == ("tiny, x: 0 of 3 tested pairs significant after Holm correction; of the 3 not significant, 2 "
                    "would need 7 paired seeds for 80% power and 1 has none (no difference, or more than 1000 seeds).")
