"""Tables against hand computation: cell texts, marks, baselines, provenance, renderers."""
import pytest

from evals import stats, tables
from evals.runs import comparison_groups, load_runs, row_labels

from .conftest import chat_json, open_llm_json, write_run

REPS = 200


def _table1(results, **kw):
    runs, _ = load_runs([results])
    labels = row_labels(runs)
    obs = {r.run_id: (r.summary["eval"], "summary.json:eval") for r in runs}
    return tables.table1(runs, labels, obs, "gold", 0.95, REPS, 0, **kw)


def _rows(t):
    return {(r[0].text, r[1].text): r for r in t.rows}


@pytest.fixture
def two_algos(results):
    for seed, win in enumerate([0.1, 0.5, 0.6, 0.9]):
        write_run(results, f"rebel{seed}", "rebel", seed, win_rate=win, rm_score=1.0, kl=20.0 + seed)
    for seed, win in enumerate([0.3, 0.4, 0.5]):
        write_run(results, f"ppo{seed}", "ppo", seed, win_rate=win, rm_score=2.0, kl=10.0)
    return results


def test_table1_cells_match_hand_computation(two_algos):
    t = _table1(two_algos)
    assert t.columns[:5] == ["Preset", "Algorithm", "n", "Win rate (%)", "Win rate (%) IQM [95% CI]"]
    rows = _rows(t)
    assert [r[1].text for r in t.rows] == ["SFT", "ppo", "rebel"]
    rebel = rows[("tiny", "rebel")]
    assert rebel[2].text == "4"
    assert rebel[3].text == "52.5 (33.0)"            # [10, 50, 60, 90]: mean 52.5, std sqrt(3275/3)
    assert rebel[4].text.startswith("55.0 [")         # IQM: mean of 50 and 60
    # the CI is the IQM bootstrap of the four seeds with the report's level, resamples and seed (iqm_ci itself is
    # held against the exact bootstrap distribution in test_intervals.py)
    _, low, high = stats.iqm_ci([10.0, 50.0, 60.0, 90.0], 0.95, REPS, 0)
    assert (rebel[4].stats["ci_low"], rebel[4].stats["ci_high"]) == pytest.approx((low, high))
    assert rebel[4].text == f"55.0 [{low:.1f}, {high:.1f}]" and low < 55.0 < high
    assert rebel[5].text == "1.00 (0.00)"
    assert rebel[7].text == "21.5 (1.3)"             # KL 20..23
    ppo = rows[("tiny", "ppo")]
    assert ppo[3].text == "40.0 (10.0)" and ppo[4].text.startswith("40.0 [")
    sft = rows[("tiny", "SFT")]
    assert sft[2].text == "4" and sft[3].text == "25.0 (0.0)"  # one SFT value per seed (0..3), not per run
    assert len({p["run_id"] for p in sft[3].sources}) == 7


def test_table1_marks_best_and_second_but_not_kl(two_algos):
    rows = _rows(_table1(two_algos))
    assert rows[("tiny", "rebel")][3].mark == "best" and rows[("tiny", "ppo")][3].mark == "second"
    assert rows[("tiny", "ppo")][5].mark == "best" and rows[("tiny", "rebel")][5].mark == "second"
    assert rows[("tiny", "SFT")][3].mark == "" and rows[("tiny", "SFT")][5].mark == ""
    assert all(r[7].mark == "" for r in rows.values())


def test_marks_are_per_preset(two_algos):
    write_run(two_algos, "big", "dpo", 0, preset="big", win_rate=0.2, rm_score=0.1)
    rows = _rows(_table1(two_algos))
    assert rows[("big", "dpo")][3].mark == "second"  # 20.0 vs its own SFT 25.0 only
    assert rows[("big", "SFT")][3].mark == "best"
    assert rows[("tiny", "rebel")][3].mark == "best"


def test_caption_states_conventions(two_algos):
    cap = _table1(two_algos).caption
    assert "KL is not ranked" in cap and "trims nothing" not in cap  # 4 seeds: the IQM does trim
    write_run(two_algos, "x", "dpo", 0, preset="small")
    runs, _ = load_runs([two_algos])
    cap = tables.table1([r for r in runs if r.preset == "small"], row_labels(runs),
                        {"x": (runs[-1].summary["eval"], "s")}, "gold", 0.95, REPS, 0).caption
    assert "trims nothing" in cap


def test_single_seed_shows_no_std_and_no_ci(results):
    write_run(results, "a", win_rate=0.5)
    row = _rows(_table1(results))[("tiny", "rebel")]
    assert row[3].text == "50.0" and row[4].text == "50.0 [n/a: 1 seed]"


def test_no_win_rate_shows_dash(results):
    write_run(results, "a", win_rate=None, sft={"rm_score": 0.0, "kl": 0.0, "win_rate": None})
    rows = _rows(_table1(results))
    assert rows[("tiny", "rebel")][3].text == "–" and rows[("tiny", "rebel")][5].text == "1.00"


def test_differing_comparison_keys_go_to_separate_tables(results):
    write_run(results, "a", seed=0, win_rate=0.9)
    write_run(results, "b", seed=1, win_rate=0.1, comparison={"judge": "gpt-4"})
    runs, _ = load_runs([results])
    groups = comparison_groups(runs)
    cells = []
    for _, members in groups:
        obs = {r.run_id: (r.summary["eval"], "s") for r in members}
        t = tables.table1(members, row_labels(members), obs, "x", 0.95, REPS, 0)
        cells.append(_rows(t)[("tiny", "rebel")][3].text)
    assert sorted(cells) == ["10.0", "90.0"]  # never "50.0 (56.6)"


def test_chat_and_open_llm_tables_with_differences_to_base(results):
    write_run(results, "a", chat=chat_json(mt=6.0, lc=0.2, wr=0.18), open_llm=open_llm_json(0.5))
    write_run(results, "b", algorithm="dpo", chat=chat_json(mt=7.0, lc=0.3, wr=0.25), open_llm=open_llm_json(0.45))
    runs, _ = load_runs([results])
    labels = row_labels(runs)
    t2 = tables.suite_table(runs, labels, tables.CHAT_METRICS, "table2", "T2", 0.95, REPS, 0)
    rows = _rows(t2)
    assert t2.columns[3:] == ["MMLU", "MT-Bench turn 1", "MT-Bench turn 2", "MT-Bench avg", "AlpacaEval LC (%)",
                              "AlpacaEval WR (%)"]
    assert [c.text for c in rows[("tiny", "rebel")][3:]] == ["50.0 (+10.0)", "6.50 (+1.00)", "5.50 (+1.00)",
                                                              "6.00 (+1.00)", "20.0 (+10.0)", "18.0 (+10.0)"]
    assert rows[("tiny", "Base")][6].text == "5.00"
    assert rows[("tiny", "dpo")][6].mark == "best" and rows[("tiny", "rebel")][6].mark == "second"
    assert rows[("tiny", "rebel")][3].mark == "best"  # MMLU 50 > 45
    t6 = tables.suite_table(runs, labels, tables.OPEN_LLM_METRICS, "table6", "T6", 0.95, REPS, 0)
    assert _rows(t6)[("tiny", "dpo")][-1].text == "45.0 (+5.0)"


def test_suite_table_absent_without_files(results):
    write_run(results, "a")
    runs, _ = load_runs([results])
    assert tables.suite_table(runs, row_labels(runs), tables.CHAT_METRICS, "t", "T", 0.95, REPS, 0) is None


def test_poi_table_statements():
    t = tables.poi_table("tiny", {"a": [0.7, 0.8, 0.9], "b": [0.1, 0.2, 0.3], "c": [0.15, 0.25, 0.2]},
                         {"a": [], "b": [], "c": []}, "win_rate", 0.95, REPS, 0, "poi")
    assert t.rows[0][2].text == "1.00 [1.00, 1.00]" and t.rows[1][1].text == "0.00 [0.00, 0.00]"
    assert any(n.startswith("a vs b") and "the seeds order these two" in n for n in t.notes)
    assert any(n.startswith("b vs c") and "do not order" in n for n in t.notes)
    assert not any("significant at" in n for n in t.notes)  # significance is the corrected verdicts' word alone


def test_renderers_carry_marks(two_algos):
    t = _table1(two_algos)
    md, tex, csv_, page = tables.to_markdown(t), tables.to_latex(t), tables.to_csv(t), tables.to_html(t)
    assert "**52.5 (33.0)**" in md and "<u>40.0 (10.0)</u>" in md
    assert r"\textbf{52.5 (33.0)}" in tex and r"\underline{40.0 (10.0)}" in tex and r"$\pi$" in tex
    assert r"Win rate (\%)" in tex
    assert csv_.splitlines()[0].startswith("Preset,Algorithm,n,Win rate (%)") and "52.5 (33.0)" in csv_
    assert "<b>52.5 (33.0)</b>" in page and "rebel0" in page  # run ids in the cell's title
