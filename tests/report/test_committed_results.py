"""The committed reference results (results/tiny/) are what their committed runs give: Table 1 rebuilt from
results/tiny/runs equals results/tiny/report/tables/table1.csv, and every run in it completed on the tiny preset."""
from pathlib import Path

import harness.app.report as report
from evals import tables
from harness.store import read_json

RESULTS = Path(__file__).resolve().parents[2] / "results" / "tiny"


def test_committed_table1_is_what_the_committed_runs_give(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_poi_tables", lambda *a, **k: [])  # only Table 1 is compared (saves time)
    sections, skipped, _ = report.build([RESULTS / "runs"], report.Options(out=tmp_path, plots=False))
    assert not skipped and len(sections) == 1
    rebuilt = tables.to_csv(sections[0].tables[0])
    assert rebuilt == (RESULTS / "report" / "tables" / "table1.csv").read_bytes().decode("utf-8")


def test_committed_runs_are_complete_tiny_runs_of_every_optimizer():
    summaries = [read_json(p) for p in sorted((RESULTS / "runs").glob("*/summary.json"))]
    assert all(s["status"] == "completed" and s["preset"] == "tiny" for s in summaries)
    seeds: dict[str, set] = {}
    for s in summaries:
        seeds.setdefault(s["algorithm"], set()).add(s["seed"])
    from algorithms.base import names

    assert set(seeds) == set(names()) and all(v == {0, 1, 2} for v in seeds.values())
