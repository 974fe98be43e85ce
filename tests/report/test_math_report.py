"""`harness report` on runs of a task with a checker (arith): the math table against hand computation and the
statistics functions, pass@1 in P(improvement), the verdicts and matched KL, the pass@1 curves, an equal-budget
cut, a re-evaluated evals/arith.json, and TL;DR runs never sharing a table with math runs."""
import pytest

from evals import stats
from harness.app.report import Options, build, report
from harness.core.errors import UserError
from harness.core.store import read_json, write_json

from .conftest import write_run

ARITH = {"task": "arith", "data_source": "synthetic-arith", "judge": None, "eval_temperature": 1.0}
REPS = 200
CURVE_KEYS = ("pass@1", "pass@4", "pass@8", "greedy_pass@1", "kl", "response_length", "no_answer_frac")


def math_eval(pass1: float, kl: float = 0.3, **extra) -> dict:
    """A block of the math suite (evals/math.py) as summary.json and evals/arith.json hold it."""
    return {"pass@1": pass1, "pass@4": pass1 + 0.25, "pass@8": pass1 + 0.4, "greedy_pass@1": pass1 + 0.1, "kl": kl,
            "response_length": 34.0, "no_answer_frac": 0.01, "eos_rate": 0.99, "n": 200, "samples_per_problem": 8,
            "temperature": 1.0, "kl_temperature": 1.0, "kl_definition": "masked_sequence_sum", "win_rate": None,
            "win_rate_judge": None, **extra}


SFT = math_eval(0.29, kl=0.0)


def math_metrics(final: dict, n_iter: int = 6, eval_every: int = 2) -> list[dict]:
    """metrics.jsonl as the runner writes it: counters per iteration, eval/* every eval_every iterations (going
    linearly from the SFT values to the final ones) and the final evaluation as an extra line."""
    lines = []
    for i in range(1, n_iter + 1):
        line = {"iteration": i, "prompts": 32 * i, "responses": 64 * i, "rm_queries": 64 * i, "optimizer_steps": 4 * i,
                "wall_time_s": 5.0 * i, "score": 0.3, "kl": 0.1 * i, "tie_frac": 0.5}
        if eval_every and i % eval_every == 0 and i != n_iter:
            f = i / n_iter
            line.update({f"eval/{k}": SFT[k] + f * (final[k] - SFT[k]) for k in CURVE_KEYS})
        lines.append(line)
    return lines + [{**lines[-1], "final": True, **{f"eval/{k}": final[k] for k in CURVE_KEYS}}]


def write_math_run(results, run_id: str, algorithm: str, seed: int, pass1: float, kl: float = 0.3,
                   eval_every: int = 2, file: dict | None = None):
    """A completed arith run: the math block in summary.json (eval and sft) and in evals/arith.json (`file`
    replaces the latter, as `harness eval RUN --suite math` does)."""
    final = math_eval(pass1, kl)
    path = write_run(results, run_id, algorithm, seed, preset="arith", comparison=ARITH,
                     metrics=math_metrics(final, eval_every=eval_every))
    summary = read_json(path / "summary.json")
    write_json(path / "summary.json", {**summary, "task": "arith", "data_source": "synthetic-arith", "eval": final,
                                       "sft": SFT})
    write_json(path / "evals" / "arith.json", file or final)
    return path


@pytest.fixture
def arith(results):
    for seed, p in enumerate([0.30, 0.34, 0.36, 0.50]):
        write_math_run(results, f"rebel{seed}", "rebel", seed, p, kl=0.2 + 0.1 * seed)
    for seed, p in enumerate([0.31, 0.32, 0.36]):
        write_math_run(results, f"ppo{seed}", "ppo", seed, p)
    return results


def sections(root, tmp_path, **options):
    built, skipped, notes = build([root], Options(tmp_path / "out", plots=False, reps=REPS, **options))
    return built, skipped


def tables_of(section) -> dict:
    return {t.name: t for t in section.tables}


def rows_of(table) -> dict:
    return {r[1].text: r for r in table.rows}


def test_math_table_cells_match_the_statistics(arith, tmp_path):
    (sec,), _ = sections(arith, tmp_path)
    t = tables_of(sec)["math_arith"]
    assert "table1" not in tables_of(sec)
    assert t.columns[3::2] == ["pass@1 (%)", "pass@4 (%)", "pass@8 (%)", "Greedy pass@1 (%)", "KL(π‖π_ref)",
                               "Length (tokens)", "No answer (%)"]
    assert [r[1].text for r in t.rows] == ["SFT", "ppo", "rebel"]
    rebel, ppo, sft = rows_of(t)["rebel"], rows_of(t)["ppo"], rows_of(t)["SFT"]
    assert rebel[2].text == "4" and rebel[3].text == "37.5 (8.7)"  # [30, 34, 36, 50]: std sqrt(227/3)
    iqm, low, high = stats.iqm_ci([30, 34, 36, 50], 0.95, REPS, 0)
    assert iqm == pytest.approx(35.0)  # 4 seeds: the IQM trims the lowest and the highest
    assert rebel[4].text == f"35.0 [{low:.1f}, {high:.1f}]"
    assert rebel[9].text == "47.5 (8.7)"  # greedy = pass@1 + 10 points
    assert rebel[11].text == "0.35 (0.13)" and rebel[11].mark == ""  # KL 0.2..0.5, not ranked
    assert ppo[3].text == "33.0 (2.6)" and sft[2].text == "4" and sft[3].text == "29.0 (0.0)"
    assert (rebel[3].mark, ppo[3].mark, sft[3].mark) == ("best", "second", "")
    assert {p["source"] for p in rebel[3].sources} == {"evals/arith.json:pass@1"}
    assert "200 held-out problems x 8 samples at temperature 1" in t.caption and "NOT" not in t.caption


def test_tldr_and_math_runs_never_share_a_table(arith, tmp_path):
    for seed in range(2):
        write_run(arith, f"tldr{seed}", "rebel", seed, win_rate=0.6)
    built, _ = sections(arith, tmp_path)
    by_task = {("math" if any(n.startswith("math_") for n in tables_of(s)) else "tldr"): s for s in built}
    assert len(built) == 2 and set(by_task) == {"math", "tldr"}
    math_names, tldr_names = set(tables_of(by_task["math"])), set(tables_of(by_task["tldr"]))
    assert not any(n.startswith("table1") for n in math_names) and not any(n.startswith("math_") for n in tldr_names)
    for task, prefix in (("math", ("rebel", "ppo")), ("tldr", ("tldr",))):
        runs = {p["run_id"] for t in by_task[task].tables for row in t.rows for c in row for p in c.sources}
        assert runs and all(r.startswith(prefix) for r in runs), (task, runs)
    assert not any("Table 2" in n for n in by_task["math"].notes)  # no chat-suite noise in a math group


def test_pass_at_1_drives_poi_verdicts_and_matched_kl(arith, tmp_path):
    (sec,), _ = sections(arith, tmp_path)
    names = tables_of(sec)
    assert names["poi_arith"].title == "Probability of improvement (arith, pass@1)"
    assert names["verdicts_final_arith"].title == "Pairwise verdicts (arith, pass@1, final evaluation)"
    assert "matched_kl_pass_1_arith" in names and "verdicts_matched_kl_arith" in names
    diff = names["verdicts_final_arith"].rows[0][1].stats
    assert diff["mean_diff"] == pytest.approx(100 * (0.30 + 0.34 + 0.36) / 3 - 33.0)  # seeds 0-2 paired, points
    (sec,), _ = sections(arith, tmp_path, poi_metric="greedy_pass@1")
    assert tables_of(sec)["verdicts_final_arith"].title.startswith("Pairwise verdicts (arith, greedy pass@1")
    (sec,), _ = sections(arith, tmp_path, poi_metric="rm_score")
    assert "arith: --poi-metric rm_score does not apply to the math suite's runs: pass@1 is used." in sec.notes


def test_poi_metric_spellings(arith, tmp_path):
    report([arith], tmp_path / "out", poi_metric="pass_at_1", reps=REPS, no_plots=True)
    assert (tmp_path / "out" / "tables" / "poi_arith.csv").is_file()
    with pytest.raises(UserError, match="--poi-metric must be one of win_rate, rm_score, pass@1, pass@4"):
        report([arith], tmp_path / "out", poi_metric="accuracy")


def test_equal_budget_cut_reads_the_logged_pass_at_1(arith, tmp_path):
    (sec,), _ = sections(arith, tmp_path, budget_metric="prompts", budget=100)
    rebel = rows_of(tables_of(sec)["math_arith"])["rebel"]
    # cut at iteration 3 (prompts 96); the latest evaluation is iteration 2's: SFT + 2/6 of the way to the final
    expected = [100 * (0.29 + (p - 0.29) / 3) for p in (0.30, 0.34, 0.36, 0.50)]
    assert rebel[3].stats["mean"] == pytest.approx(sum(expected) / 4)
    source = rebel[3].sources[0]["source"]
    assert source.startswith("metrics.jsonl:cut at iteration 3 (prompts=96;") and "pass@1@2" in source


def test_a_re_evaluated_file_is_used_and_said(results, tmp_path):
    write_math_run(results, "a", "rebel", 0, 0.3, file=math_eval(0.6, n=500))
    write_math_run(results, "b", "rebel", 1, 0.4)
    (sec,), _ = sections(results, tmp_path)
    t = tables_of(sec)["math_arith"]
    assert rows_of(t)["rebel"][3].text == "50.0 (14.1)"  # 60 (the file) and 40, not 30 (the summary)
    assert any(n.startswith("a: evals/arith.json differs from summary.json eval") for n in sec.notes)
    assert "NOT evaluated alike" in t.caption and "500 held-out problems x 8 samples" in t.caption


def test_percentages_are_refused(results, tmp_path):
    write_math_run(results, "pct", "rebel", 0, 30.0)
    write_math_run(results, "ok", "rebel", 1, 0.3)
    _, skipped = sections(results, tmp_path)
    assert any("eval.pass@1 = 30.0 is not a fraction in [0, 1]" in s.reason for s in skipped)


def test_pass_at_1_curves_say_which_runs_logged_only_the_end(results, tmp_path):
    write_math_run(results, "periodic", "rebel", 0, 0.4)
    write_math_run(results, "final-only", "rebel", 1, 0.5, eval_every=0)
    built, _, _ = build([results], Options(tmp_path / "out", reps=REPS))
    (fig,) = [f for f in built[0].figures if f.name == "pass_at_1_curves"]
    assert fig.path.stat().st_size > 1000
    assert "1 of 2 runs logged pass@1 only at the end" in fig.caption and "final-only" in fig.caption
