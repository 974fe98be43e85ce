"""The committed reference results are what their committed runs give: the main table rebuilt from each result
set's runs equals its committed CSV (results/tiny: Table 1; results/arith: the pass@k table), and every run in it
completed on the set's preset, with seeds 0, 1, 2 (arith: up to 4) of every registered optimizer."""
from pathlib import Path

import pytest

import harness.app.report as report
from evals import tables
from harness.core.store import read_json

RESULTS = Path(__file__).resolve().parents[2] / "results"
SETS = [("tiny", "table1.csv"), ("arith", "math_arith.csv")]  # (preset = folder, its main table)


@pytest.mark.parametrize("preset,table", SETS)
def test_committed_table_is_what_the_committed_runs_give(preset, table, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_poi_tables", lambda *a, **k: [])  # only the main table is compared (saves time)
    sections, skipped, _ = report.build([RESULTS / preset / "runs"], report.Options(out=tmp_path, plots=False))
    assert not skipped and len(sections) == 1
    rebuilt = tables.to_csv(sections[0].tables[0])
    assert rebuilt == (RESULTS / preset / "report" / "tables" / table).read_bytes().decode("utf-8")


# optimizers registered after a set's runs were made: each set's README says they are not in its tables
ADDED_AFTER = {"tiny": {"sapo", "astar_po", "m2po"}, "arith": {"sapo", "astar_po", "m2po"}}


@pytest.mark.parametrize("preset", [p for p, _ in SETS])
def test_committed_runs_are_complete_runs_of_every_optimizer(preset):
    summaries = [read_json(p) for p in sorted((RESULTS / preset / "runs").glob("*/summary.json"))]
    assert all(s["status"] == "completed" and s["preset"] == preset for s in summaries)
    seeds: dict[str, set] = {}
    for s in summaries:
        seeds.setdefault(s["algorithm"], set()).add(s["seed"])
    from algorithms.base import names

    assert set(seeds) == set(names()) - ADDED_AFTER[preset] and all({0, 1, 2} <= v <= set(range(5)) for v in seeds.values())
    readme = (RESULTS / preset / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in ADDED_AFTER[preset])  # named there as not run
    if preset == "arith":  # the family results/arith/sweep.yaml fixed before seeds 3-4 ran has all five
        assert all(seeds[a] == set(range(5)) for a in ("rebel", "ppo", "rloo"))
