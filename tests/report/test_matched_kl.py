"""Matched-KL values and tables against hand computation, and the notes on thin or missing trajectories."""
import math

import numpy as np
import pytest

from evals import matched_kl
from evals.runs import load_runs, row_labels

from .conftest import write_run


def evals_at(kls, wins, every_counter=64):
    """metrics.jsonl lines with one evaluation per line at the given KLs (win rates as fractions)."""
    return [{"iteration": i + 1, "prompts": every_counter * (i + 1), "eval/kl": k, "eval/win_rate": w,
             "eval/rm_score": 10 * w} for i, (k, w) in enumerate(zip(kls, wins))]


@pytest.fixture
def two_runs(results):
    sft = {"kl": 0.0, "win_rate": 0.5, "rm_score": 5.0}
    # a: 0.5 at KL 0, then 0.6 at 2 and 0.7 at 4; b: 0.5 at KL 0, then 0.7 at 1 and 0.8 at 2 (b is better at any KL)
    write_run(results, "a", "ppo", sft=sft, metrics=evals_at([2.0, 4.0], [0.6, 0.7]))
    write_run(results, "b", "rebel", sft=sft, metrics=evals_at([1.0, 2.0], [0.7, 0.8]))
    return load_runs([results])[0]


def test_trajectory_starts_at_sft_and_respects_the_budget(two_runs):
    a = next(r for r in two_runs if r.run_id == "a")
    t = matched_kl.trajectory(a, "win_rate")
    assert t.kl.tolist() == [0.0, 2.0, 4.0] and t.value.tolist() == [0.5, 0.6, 0.7] and t.iterations == ["sft", 1, 2]
    cut = matched_kl.trajectory(a, "win_rate", "prompts", 100)  # the second evaluation (prompts 128) is past it
    assert cut.kl.tolist() == [0.0, 2.0]


def test_matched_values_hand_computed(two_runs):
    mv = matched_kl.matched_values(two_runs, "win_rate")
    # common range [max of minima, min of maxima] = [0, 2]; levels at 1/4, 2/4, 3/4 of it
    assert (mv.low, mv.high) == (0.0, 2.0) and mv.levels.tolist() == [0.5, 1.0, 1.5]
    a, b = mv.values["a"], mv.values["b"]
    # a: 0.5 + 0.05 KL on [0, 2]; b: 0.5 + 0.2 KL on [0, 1], then 0.7 + 0.1 (KL - 1)
    assert [a["at0"], a["at1"], a["at2"]] == pytest.approx([0.525, 0.55, 0.575])
    assert [b["at0"], b["at1"], b["at2"]] == pytest.approx([0.6, 0.7, 0.75])
    # mean over [0, 2]: a (0.5 + 0.6) / 2 = 0.55; b ((0.5 + 0.7) / 2 + (0.7 + 0.8) / 2) / 2 = 0.675
    assert a["area"] == pytest.approx(0.55) and b["area"] == pytest.approx(0.675)
    assert "ends at 2, the largest KL every run reached (set by b)" in mv.notes[0]
    # in [0, 2] a was evaluated at KL 0 and 2 only, b at 0, 1 and 2
    assert "1 of 2 runs have fewer than 3 evaluations" in mv.notes[1]
    assert "a (2)" in mv.notes[1] and "b (" not in mv.notes[1]
    assert matched_kl.matched_values(two_runs, "gold_reward") is None  # never evaluated: no table at all


def test_matched_table_rows_columns_and_marks(two_runs):
    mv = matched_kl.matched_values(two_runs, "win_rate")
    t = matched_kl.matched_table("tiny", two_runs, row_labels(two_runs), mv, "Win rate (%)", 100.0, 1, 0.95, 50,
                                 0, "matched_kl_win_rate_tiny")
    assert t.columns[3::2] == ["Win rate (%) @ KL 0.5", "Win rate (%) @ KL 1", "Win rate (%) @ KL 1.5",
                               "Win rate (%), mean over KL 0-2"]
    rows = {r[1].text: r for r in t.rows}
    assert [c.text for c in rows["ppo"][3::2]] == ["52.5", "55.0", "57.5", "55.0"]
    assert [c.text for c in rows["rebel"][3::2]] == ["60.0", "70.0", "75.0", "67.5"]
    assert rows["rebel"][3].mark == "best" and rows["ppo"][3].mark == "second"
    assert rows["ppo"][3].sources[0]["source"] == ("summary.json:sft + metrics.jsonl:eval/kl and eval/win_rate at "
                                                   "iterations 1,2:at0")
    assert "ends at 2" in t.notes[0]


def test_too_few_evaluations_are_named_and_never_interpolated(results):
    write_run(results, "a", "ppo", sft={"kl": 0.0, "win_rate": 0.5}, metrics=evals_at([2.0, 4.0], [0.6, 0.7]))
    write_run(results, "lone", "rebel", sft={}, metrics=evals_at([3.0], [0.9]))  # one point, no SFT block
    runs = load_runs([results])[0]
    mv = matched_kl.matched_values(runs, "win_rate")
    assert "lone" not in mv.values and mv.levels.size == 3
    assert "lone logged fewer than two evaluations" in mv.notes[0] and "eval.every" in mv.notes[0]


def test_disjoint_kl_ranges_give_no_levels(results):
    write_run(results, "a", "ppo", sft={}, metrics=evals_at([1.0, 2.0], [0.6, 0.7]))
    write_run(results, "b", "rebel", sft={}, metrics=evals_at([3.0, 4.0], [0.6, 0.7]))
    mv = matched_kl.matched_values(load_runs([results])[0], "win_rate")
    assert mv.values == {} and math.isnan(mv.low) and "do not overlap" in mv.notes[0]
    assert np.asarray(mv.levels).size == 0
