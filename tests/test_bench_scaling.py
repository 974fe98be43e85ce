"""`harness bench --scaling sizes|prompts` (issue 16, part 3): the size and count parsing, the slope and fixed + linear
fits and their sentences on numbers made by hand, and both modes end to end on micro settings (the tiny-test preset
and one random 96x2 recipe, 1 timed iteration, 2-4 prompts, 4 new tokens) writing one bench_scaling.json with both
sections, its markdown and its log-log figure, with a clean terminal."""
from __future__ import annotations

import json
import math

import pytest

from harness.app import scaling
from harness.cli import main
from harness.app.config import resolve
from harness.core.errors import UserError


@pytest.fixture(scope="module")
def cfg():
    return resolve("tiny-test")  # hidden 64, 2 heads: head size 32


def test_sizes_and_prompt_counts_parse_and_bad_ones_fail_in_one_line(cfg):
    sizes = scaling.parse_sizes("tiny, 5m,20m,96x3", cfg)
    assert [(s.label, s.hidden_size, s.layers) for s in sizes] == [
        ("tiny", None, None), ("5m", 256, 6), ("20m", 512, 6), ("96x3", 96, 3)]
    assert scaling.parse_counts("32,8,16") == [8, 16, 32]
    bad_sizes = {"7m": "unknown size '7m'", "100x2": "multiple of the preset's head size 32", "64x0": "layers",
                 "tiny,tiny": "distinct", "": "distinct"}
    for text, message in bad_sizes.items():
        with pytest.raises(UserError, match=message):
            scaling.parse_sizes(text, cfg)
    for text in ("8,x", "0,8", "8,8", ""):
        with pytest.raises(UserError, match="--prompt-counts"):
            scaling.parse_counts(text)


def test_fit_recovers_a_power_law_and_a_fixed_plus_linear_cost():
    xs = [1e6, 4e6, 16e6]
    power = scaling.fit(xs, [3 * x**0.5 for x in xs], [2 * x for x in xs])
    assert power["seconds_slope"] == pytest.approx(0.5, abs=1e-3) and power["memory_slope"] == pytest.approx(1.0)
    assert power["local_seconds_slopes"] == [pytest.approx(0.5, abs=1e-3)] * 2
    # 2 s of fixed overhead plus 1 ms per unit: the two parts are equal at 2000 units
    xs = [500.0, 2000.0, 8000.0]
    linear = scaling.fit(xs, [2 + 1e-3 * x for x in xs], [1.0, 1.0, 1.0])
    assert linear["fixed_s"] == pytest.approx(2.0) and linear["per_unit_s"] == pytest.approx(1e-3)
    assert linear["crossover"] == pytest.approx(2000.0) and linear["memory_slope"] == pytest.approx(0.0)
    assert linear["local_seconds_slopes"][0] < 0.5 < linear["local_seconds_slopes"][1] < 1  # overhead, then work
    sentence = scaling.verdict("rebel", "prompts", xs, linear, [0.05, 0.4])
    assert "stops being overhead near 2.0k prompts" in sentence and "5% of the measured time at 500" in sentence
    beyond = scaling.verdict("rebel", "parameters", [1e3, 1e4], scaling.fit([1e3, 1e4], [2.0, 2.1], [1, 1]), [0, 0])
    assert "still mostly fixed overhead" in beyond and "extrapolated" in beyond
    flat = scaling.fit([8, 16], [1.0, 1.0], [1.0, 1.0])
    assert flat["crossover"] is None and flat["seconds_slope"] == 0
    assert "all fixed overhead" in scaling.verdict("dpo", "prompts", [8, 16], flat, [0.1, 0.1])
    # a negative intercept is not a cost: the fit goes through the origin instead
    assert scaling.fixed_plus_linear([1, 2, 3], [0.5, 2.0, 3.5])[0] == 0.0


def test_arithmetic_share_is_the_model_flops_at_peak_over_the_measured_seconds():
    entry = {"generation_s": 1.0, "scoring_s": 0.5, "update_s": 2.0, "total_s": 4.0,
             "efficiency": {"peak_gflops": 100.0,
                            "generation": {"model_gflops": 10.0, "tokens": 100},
                            "update": {"model_gflops": 50.0, "tokens": 300}}}
    a = scaling.arithmetic(entry)
    assert a == {"model_gflop": 110.0, "tokens": 400, "seconds_at_matmul_peak": 1.1, "arithmetic_share": 0.275}


def _bench(args: list[str], out, cache) -> None:
    with pytest.raises(SystemExit) as done:
        main(["bench", "--preset", "tiny-test", "--iterations", "1", "--warmup", "1", "--rounds", "1",
              "--threads", "1", "--out", str(out), "--set", f"model.cache_dir={cache}",
              "--set", "generation.max_new_tokens=4", *args])
    assert done.value.code in (0, None)


PEAKS = {"matmul_gflops": {"float32": 80.0, "bfloat16": 1.0}, "memory_bandwidth_gbs": 10.0, "device": "CPU, 1 threads",
         "cpu": "test CPU", "matmul_size": 512, "bf16_native": False}


def test_both_modes_write_one_file_with_tables_slopes_and_a_figure(harness_cache, tmp_path, capfd, monkeypatch):
    """Ours runs for real; TRL's trainer (real in tests/test_bench.py, about 15 s more here) and the machine probes
    are stand-ins: the test is about what the scaling mode pairs, fits and writes."""
    trl_calls = []

    def fake_trl(kind, cfg, data, iterations, warmup, rss, k, checkpointing, peaks):
        trl_calls.append((kind, cfg.model.policy, cfg.train.prompts_per_iteration, k, checkpointing))
        return {"generation_s": 0.1, "scoring_s": 0.1, "update_s": 0.2, "total_s": 0.4, "peak_memory_mb": 50.0,
                "peak_rss_mb": 0.0, "work_settings": {"compute_dtype": "float32"},
                "efficiency": {"peak_gflops": 80.0, "update": {"model_gflops": 4.0, "tokens": 100}}}

    from harness import tasks

    load, loaded = tasks.load, {}  # the synthetic data set is made once for both invocations (about 4 s each)
    monkeypatch.setattr(tasks, "load", lambda *a: loaded[a] if a in loaded else loaded.setdefault(a, load(*a)))
    monkeypatch.setattr(scaling, "bench_trl", fake_trl)
    monkeypatch.setattr(scaling, "machine_peaks", lambda threads: PEAKS)
    out = tmp_path / "scaling"
    _bench(["--scaling", "sizes", "--sizes", "tiny,96x2", "--algo", "rloo", "--prompts", "2"], out, harness_cache)
    _bench(["--scaling", "prompts", "--prompt-counts", "2,4", "--algo", "rebel", "--no-trl"], out, harness_cache)
    result = json.loads((out / "bench_scaling.json").read_text())
    assert set(result) == {"sizes", "prompts"}  # the second mode kept the first one's section
    sizes = result["sizes"]
    tiny, larger = sizes["points"]
    assert (tiny["weights"], larger["weights"]) == ("trained", "random")
    assert (larger["hidden_size"], larger["layers"]) == (96, 2) and larger["parameters"] > tiny["parameters"]
    # TRL ran on the same models and batch as ours: the preset's, then the random 96x2 recipe saved for the point
    assert [c[0] for c in trl_calls] == ["rloo", "rloo"] and trl_calls[0][1] == "builtin:tiny"
    assert trl_calls[1][1].endswith("96x2/policy") and all(c[2:] == (2, 2, False) for c in trl_calls)
    for point in sizes["points"]:
        assert set(point["contenders"]) == {"rloo", "TRL rloo"} and point["prompts_per_iteration"] == 2
        ours = point["contenders"]["rloo"]
        assert ours["settings"] == {"epochs": 1}  # TRL-matched: one update per batch, as TRL's RLOO
        assert ours["work_settings"]["compute_dtype"] == "float32" and ours["total_s"] > 0
        assert ours["peak_memory_mb"] > 0 and ours["arithmetic"]["tokens"] > 0
        assert 0 < ours["arithmetic"]["arithmetic_share"] < 1
    assert point["contenders"]["TRL rloo"]["arithmetic"]["arithmetic_share"] == pytest.approx(0.2 * 4 / 80 / 0.4)
    assert set(sizes["fits"]) == {"rloo", "TRL rloo"}
    assert all(math.isfinite(f["seconds_slope"]) for f in sizes["fits"].values())
    assert sizes["summary"][0].startswith("rloo: seconds per iteration grow as parameters^")
    assert "all fixed overhead" in sizes["summary"][1]  # the stand-in TRL costs the same at every size
    prompts = result["prompts"]
    assert [p["prompts_per_iteration"] for p in prompts["points"]] == [2, 4]
    assert {p["size"] for p in prompts["points"]} == {"tiny"} and set(prompts["fits"]) == {"rebel"}
    assert prompts["setup"]["mode"] == "prompts" and "randomly initialised" in prompts["setup"]["weights"]
    md = (out / "bench_scaling.md").read_text()
    assert "## Cost vs parameters" in md and "## Cost vs prompts" in md and "| 96x2 (random) |" in md
    assert (out / "bench_scaling.png").stat().st_size > 10_000
    captured = capfd.readouterr()  # fd level: kineto writes to fd 2 itself
    assert "Cost vs prompts" in captured.out and "seconds slope" in captured.out
    assert "USDT" not in captured.err + captured.out and "Traceback" not in captured.err


@pytest.mark.parametrize("args, message", [
    (["--scaling", "depth"], "--scaling must be one of sizes, prompts"),
    (["--scaling", "sizes", "--checkpointing", "both"], "not both"),
    (["--scaling", "sizes", "--sizes", "3m"], "unknown size '3m'"),
    (["--scaling", "prompts", "--algo", "rebel,nope"], "nope"),
    (["--sizes", "tiny,5m"], "belong to --scaling"),
])
def test_bad_scaling_options_fail_in_one_line(args, message, tmp_path, capfd):
    with pytest.raises(SystemExit) as done:
        main(["bench", "--preset", "tiny-test", "--out", str(tmp_path), *args])
    err = capfd.readouterr().err.strip()
    assert done.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bench_scaling.json").exists()
