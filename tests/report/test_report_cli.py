"""`harness report` end to end on synthetic run directories: files written, images embedded, errors are one line."""
import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from harness.commands import report
from harness.core.errors import UserError

from .conftest import chat_json, default_metrics, open_llm_json, read, write_run


def invoke(*args):
    """The report verb in a multi-command app, as harness.cli builds it once several verbs exist."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    report.register(app)
    return CliRunner().invoke(app, ["report", *map(str, args)])


@pytest.fixture
def full(results):
    for seed, (w, s) in enumerate([(0.55, 1.8), (0.60, 1.9), (0.50, 1.7)]):
        write_run(results, f"rebel-{seed}", "rebel", seed, win_rate=w, rm_score=s, kl=30 + seed,
                  chat=chat_json(6.0 + seed / 10), open_llm=open_llm_json(0.5))
        write_run(results, f"ppo-{seed}", "ppo", seed, win_rate=w - 0.05, rm_score=s - 0.1, kl=28 + seed,
                  chat=chat_json(5.5), open_llm=open_llm_json(0.48))
        write_run(results, f"rebel-eta2-{seed}", "rebel", seed, algorithm_config={"eta": 2.0}, win_rate=w - 0.1)
    write_run(results, "crashed", "ppo", 9, summary=False)
    (write_run(results, "broken", "ppo", 8) / "summary.json").write_text("{", encoding="utf-8")
    with open(write_run(results, "trunc", "dpo", 0) / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 7')
    (results / "bench").mkdir()
    opt = {"generation_s": 1.0, "scoring_s": 0.5, "update_s": 0.4, "total_s": 1.9, "peak_memory_mb": 1000}
    (results / "bench" / "bench.json").write_text(json.dumps({"optimizers": {"rebel": opt, "ppo": opt},
                                                              "trl": {"ppo": opt}}))
    return results


def test_full_report_writes_every_file(full, tmp_path):
    out = tmp_path / "out"
    res = invoke(full, "--out", out, "--reps", 200)
    assert res.exit_code == 0, res.output
    for f in ("report.md", "report.html", "provenance.json", "provenance.csv", "tables/table1.csv",
              "tables/table1.tex", "tables/table2.csv", "tables/table6.tex", "tables/poi_tiny.csv"):
        assert (out / f).is_file(), f
    for png in ("frontier", "learning_curves", "mt_bench_radar", "eta_ablation", "winrate_vs_length", "bench"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000, png
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "<b>" in page
    md = (out / "report.md").read_text()
    assert "no summary.json" in md and "corrupt summary.json" in md and "truncated" in md
    assert "rebel (eta=2.0)" in md and "Table 1" in res.output


def test_provenance_traces_every_cell(full, tmp_path):
    out = tmp_path / "out"
    assert invoke(full, "--out", out, "--reps", 200, "--no-plots").exit_code == 0
    prov = read(out / "provenance.json")
    cell = next(c for c in prov["cells"] if c["table"] == "table1" and c["row"] == "tiny / rebel (eta=1.0)"
                and c["column"] == "Win rate (%)")
    assert cell["text"] == "55.0 (5.0)" and cell["stats"]["n"] == 3
    assert sorted(r["run_id"] for r in cell["runs"]) == ["rebel-0", "rebel-1", "rebel-2"]
    assert {r["config_hash"] for r in cell["runs"]} == {"h-rebel-0", "h-rebel-1", "h-rebel-2"}
    assert all(r["code_version"] == "abc1234" and r["source"] == "summary.json:eval:win_rate" for r in cell["runs"])
    assert all(c["runs"] for c in prov["cells"])
    lines = (out / "provenance.csv").read_text().splitlines()
    assert lines[0].startswith("table,row,column,text,run_id,config_hash,code_version")
    assert any("rebel-0,h-rebel-0,abc1234" in ln for ln in lines)


def test_budget_cut_caption_and_skips(results, tmp_path):
    for seed in range(2):
        write_run(results, f"long{seed}", seed=seed, metrics=default_metrics(n_iter=6, final_win=0.6))
    write_run(results, "short", "ppo", metrics=default_metrics(n_iter=2))  # reaches prompts = 128 only
    out = tmp_path / "out"
    res = invoke(results, "--out", out, "--reps", 200, "--no-plots", "--budget-metric", "prompts", "--budget", 200)
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    assert "prompts <= 200" in md and "short: left out of the equal-budget table: never reached prompts = 200" in md
    cell = next(c for c in read(out / "provenance.json")["cells"]
                if c["table"] == "table1" and c["row"] == "tiny / rebel" and c["column"] == "Win rate (%)")
    assert cell["text"] == "20.0 (0.0)"  # eval/win_rate at iteration 2 = 0.6 * 2/6, cut at iteration 3
    assert "cut at iteration 3 (prompts=192" in cell["runs"][0]["source"]


def test_separate_groups_are_explained(results, tmp_path):
    write_run(results, "a", seed=0)
    write_run(results, "b", seed=1, comparison={"kl_definition": "unmasked"})
    out = tmp_path / "out"
    res = invoke(results, "--out", out, "--reps", 200, "--no-plots")
    assert res.exit_code == 0
    assert (out / "tables" / "table1_g1.csv").is_file() and (out / "tables" / "table1_g2.csv").is_file()
    assert "differs in kl_definition" in (out / "report.md").read_text()


def test_missing_plot_data_is_noted(results, tmp_path):
    write_run(results, "a", win_rate=None)
    out = tmp_path / "out"
    assert invoke(results, "--out", out, "--reps", 200).exit_code == 0
    md = (out / "report.md").read_text()
    assert "MT-Bench radar skipped" in md and "no bench/bench.json" in md and "Table 2: chat benchmarks skipped" in md


def test_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    res = invoke(tmp_path / "empty")
    assert isinstance(res.exception, UserError) and "no run directories" in str(res.exception)
    res = invoke(tmp_path / "empty", "--budget", 5)
    assert "go together" in str(res.exception)
    res = invoke(tmp_path / "empty", "--budget-metric", "gpu", "--budget", 5)
    assert "--budget-metric must be one of" in str(res.exception)
    for bad in (-5, 0, "nan"):
        res = invoke(tmp_path / "empty", "--budget-metric", "prompts", "--budget", bad)
        assert isinstance(res.exception, UserError) and "--budget must be a positive number of prompts" in str(
            res.exception), bad


def test_cli_refuses_a_negative_budget_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(tmp_path / "empty"), "--budget-metric",
                           "prompts", "--budget", "-5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == ("error: --budget must be a positive number of prompts "
                                                            "(the equal-budget cut), not -5"), proc.stderr


def test_all_runs_unusable_is_an_error(results):
    write_run(results, "crashed", summary=False)
    res = invoke(results)
    assert isinstance(res.exception, UserError) and "none of the 1 runs" in str(res.exception)
    assert "no summary.json" in res.output


def test_cli_exit_code_2_and_one_line_for_empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(tmp_path / "empty")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_help_works():
    proc = subprocess.run([sys.executable, "-m", "harness", "report", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--budget-metric" in proc.stdout
