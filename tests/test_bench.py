"""`harness bench` end to end on a very small setting: every optimizer and TRL's RLOO and DPO trainers, one process,
bench.json in the keys the report's plot reads, the ratios to TRL, a PNG and a printed table."""
import json

import pytest

from algorithms.base import names
from harness.bench import PeakRss
from harness.cli import main

KEYS = {"generation_s", "scoring_s", "update_s", "total_s", "peak_memory_mb"}


def test_bench_writes_times_memory_and_trl_ratios(tiny_test_models, harness_cache, tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as done:
        main(["bench", "--preset", "tiny-test", "--iterations", "1", "--warmup", "1", "--prompts", "4", "--rounds", "1",
              "--out", str(out), "--set", f"model.cache_dir={harness_cache}", "--set", "generation.max_new_tokens=8"])
    assert done.value.code in (0, None)
    result = json.loads((out / "bench.json").read_text())
    assert set(result) == {"optimizers", "trl", "ratios", "setup"}
    assert set(result["optimizers"]) == set(names())
    for entry in [*result["optimizers"].values(), *result["trl"].values()]:
        assert KEYS <= set(entry) and entry["total_s"] > 0 and entry["peak_memory_mb"] >= 0
        assert entry["total_s"] >= entry["generation_s"] + entry["scoring_s"] - 1e-6
    opt = result["optimizers"]
    assert opt["dpo"]["generation_s"] == 0 and opt["rloo_k4"]["responses_per_prompt"] == 4
    assert opt["rebel"]["optimizer_steps_per_iteration"] == 4
    assert set(result["trl"]) == {"rloo", "dpo"} and result["trl"]["rloo"]["generation_s"] > 0
    for name, ratio in result["ratios"].items():
        assert ratio["time"] > 0 and ratio["memory"] > 0
        assert abs(ratio["time"] - ratio["ours"]["total_s"] / result["trl"][name]["total_s"]) < 0.01
    assert result["ratios"]["rloo"]["ours"]["settings"] == {"epochs": 1}  # TRL's RLOO: one update per batch
    s = result["setup"]
    assert s["preset"] == "tiny-test" and s["prompts_per_iteration"] == 4 and s["max_new_tokens"] == 8
    assert "torch.profiler" in s["memory_method"] and all("peak_rss_mb" in v for v in opt.values())
    assert (out / "bench.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "TRL rloo" in printed and "vs TRL time" in printed


def test_peak_rss_sees_a_large_allocation():
    import torch

    with PeakRss() as rss:
        rss.rebase()
        x = torch.ones(64, 2**20)  # 256 MB
        x += 1
        peak = rss.peak_mb()
        del x
    assert peak > 200
