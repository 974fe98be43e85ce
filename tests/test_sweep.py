import json

import pytest
import yaml

from harness.core.errors import UserError
from harness.app.sweep import Job, expand, load_spec, run_sweep


def test_grid_expands_and_run_ids_are_stable(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"algorithms": ["rebel"], "seeds": [0, 1, 2], "grid": {"algo.eta": [0.3, 1.0]}}))
    jobs = expand(load_spec(f))
    assert len(jobs) == 6 and len({j.run_id for j in jobs}) == 6
    assert jobs[0].run_id == Job("rebel", "tiny", 0, {"algo.eta": 0.3}).run_id
    assert "--set" in jobs[0].command("out") and "algo.eta=0.3" in jobs[0].command("out")


def test_explicit_points_cross_the_grid_without_a_full_product(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"algorithms": ["grpo"], "seeds": [0, 1], "grid": {"train.lr": [1e-4, 2e-4]},
                                 "points": [{}, {"train.staleness": 4},
                                            {"train.staleness": 4, "train.rollout_correction": "token_truncate"}]}))
    jobs = expand(load_spec(f))
    cells = {tuple(sorted(j.settings.items())) for j in jobs}
    assert len(jobs) == 12 and len(cells) == 6 and len({j.run_id for j in jobs}) == 12
    assert (("train.lr", 2e-4), ("train.rollout_correction", "token_truncate"), ("train.staleness", 4)) in cells
    assert not any(dict(c).get("train.rollout_correction") and "train.staleness" not in dict(c) for c in cells)


def test_bad_sweep_files_fail_in_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"algorithms": ["rebel"], "sedes": [0]}))
    with pytest.raises(UserError, match="invalid sweep at sedes"):
        load_spec(f)
    f.write_text(yaml.safe_dump({"algorithms": ["nope"]}))
    with pytest.raises(UserError, match="unknown algorithm"):
        run_sweep(load_spec(f), echo=lambda *a: None)


def test_sweep_runs_skips_finished_and_reports_failures(tmp_path, tiny_test_models, harness_cache):
    spec = {"algorithms": ["rebel"], "seeds": [0], "presets": ["tiny-test"], "output_dir": str(tmp_path / "runs"),
            "grid": {"train.lr": [1e-4, -1.0]},  # the second point is invalid: that run fails
            "overrides": {"train.iterations": 1, "eval.every": 0, "eval.prompts": 16, "model.cache_dir": harness_cache}}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    first = run_sweep(load_spec(f), echo=lambda *a: None)
    assert len(first["finished"]) == 1 and len(first["failed"]) == 1 and not first["skipped"]
    summary = json.loads((tmp_path / "runs" / first["finished"][0] / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["budget"]["prompts"] == 16
    log = (tmp_path / "runs" / "_logs" / f"{first['failed'][0]}.log").read_text()
    assert "invalid config value at train.lr" in log
    again = run_sweep(load_spec(f), echo=lambda *a: None)  # re-run: the finished run is skipped, the failed retried
    assert again["skipped"] == first["finished"] and again["failed"] == first["failed"] and not again["finished"]


def test_local_workers_share_the_cores_unless_the_user_chose(monkeypatch):
    from harness.app.sweep import worker_env

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    env = worker_env(2, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert worker_env(16, {})["OMP_NUM_THREADS"] == "1"  # never zero threads
    assert worker_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's setting wins
