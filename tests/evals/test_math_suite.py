"""`harness eval --suite math`: on a finished arith run it reproduces the run's own final evaluation (the same file,
the same numbers, KL against the SFT reference), on the run's checkpoint as a model directory too; bad input is a
one-line error before any model loads (a TL;DR run first of all)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evals.runs import load_run, load_suites
from harness.cli import main
from harness.app.config import resolve
from harness.core.store import read_json, read_jsonl, write_json
from tests.evals.tiny_lm import one_torch_thread
from tests.test_arith_run import MATH_KEYS, TEST_RECIPE

PROBLEMS = 4


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "harness-cache"))  # a model target's preset cache


@pytest.fixture(scope="module")
def arith_run(harness_cache, tmp_path_factory) -> Path:
    """A completed 1-iteration arith run at a high learning rate (the policy moved away from SFT), evaluated on
    4 problems; the test-size build is the one tests/test_arith_run.py uses (cached once per session)."""
    from harness.app.runner import run

    out = tmp_path_factory.mktemp("math-runs")
    cfg = resolve("arith", {"output_dir": str(out), "run_id": "r",
                            "model": {"cache_dir": harness_cache, "tiny": TEST_RECIPE},
                            "train": {"iterations": 1, "prompts_per_iteration": 4, "lr": 1e-3},
                            "eval": {"prompts": PROBLEMS, "every": 0}})
    with one_torch_thread():
        path = run(cfg)
    shutil.copy(path / "evals" / "arith.json", path / "runner_arith.json")  # the runner's own final evaluation
    return path


def harness(*argv) -> int:
    with one_torch_thread(), pytest.raises(SystemExit) as done:
        main(["eval", *map(str, argv)])
    return done.value.code or 0


def test_math_suite_on_a_run_reproduces_its_own_evaluation(arith_run, capsys):
    (arith_run / "evals" / "arith.json").unlink()
    assert harness(arith_run, "--suite", "math") == 0
    ours, runner = read_json(arith_run / "evals" / "arith.json"), read_json(arith_run / "runner_arith.json")
    for key in MATH_KEYS:  # same checkpoint, problems, sampling seed and SFT reference as the run's final evaluation
        assert ours[key] == pytest.approx(runner[key], rel=1e-4, abs=1e-6), key
    assert abs(ours["kl"]) > 0 and ours["reference"] == read_json(arith_run / "config.json")["model_origin"]["policy"]
    assert (ours["task"], ours["n"], ours["samples_per_problem"]) == ("arith", PROBLEMS, 8)
    samples, problems = read_jsonl(arith_run / "evals" / "arith_samples.jsonl")
    assert not problems and len(samples) == PROBLEMS * 8 + PROBLEMS  # 8 samples and one greedy response each
    run = load_run(arith_run)
    assert load_suites(run) == [] and run.evals["math"]["pass@1"] == ours["pass@1"]  # what the report reads
    assert f"math (arith): pass@1 {100 * ours['pass@1']:.1f}%" in capsys.readouterr().err


def test_math_suite_on_the_checkpoint_as_a_model(arith_run, tmp_path):
    reference = read_json(arith_run / "config.json")["model_origin"]["policy"]
    assert harness(arith_run / "checkpoints" / "final", "--suite", "math", "--reference", reference, "--prompts",
                   PROBLEMS, "--out", tmp_path) == 0
    ours, runner = read_json(tmp_path / "arith.json"), read_json(arith_run / "runner_arith.json")
    for key in MATH_KEYS:  # the arith preset's settings are the run's: the same numbers
        assert ours[key] == pytest.approx(runner[key], rel=1e-4, abs=1e-6), key
    assert ours["run_dir"] is None and ours["reference"] == reference


def tldr_run(root: Path) -> Path:
    """A run directory of a TL;DR run as far as `harness eval` reads it before loading anything."""
    path = root / "tldr-run"
    (path / "checkpoints" / "final").mkdir(parents=True)
    write_json(path / "config.json", {**resolve("tiny-test").model_dump(), "config_hash": "h",
                                      "model_origin": {"policy": "sft", "reward_model": "rm", "reference": "sft"}})
    return path


@pytest.mark.parametrize("case,message", [
    ("tldr run", "trained on task 'tldr': --suite math evaluates runs of arith | gsm8k | math (use --suite tldr)"),
    ("tldr flag", "--reward-model only apply to --suite tldr"),
    ("model-suite flag", "--limit only apply to --suite chat or --suite open-llm"),
    ("task on a run", "--task is for a model directory; a run directory brings its own"),
    ("task without checker", "--task tldr is not evaluated by --suite math: it evaluates arith | gsm8k"),
    ("arith from a directory", "the arith task is generated offline"),
    ("math on a math run with tldr", "--suite tldr evaluates runs of chat | tldr (use --suite math)"),
])
def test_bad_input_is_a_one_line_error(arith_run, tmp_path, capsys, case, message):
    model = arith_run / "checkpoints" / "final"
    argv = {
        "tldr run": [tldr_run(tmp_path), "--suite", "math"],
        "tldr flag": [arith_run, "--suite", "math", "--reward-model", "rm"],
        "model-suite flag": [arith_run, "--suite", "math", "--limit", "3"],
        "task on a run": [arith_run, "--suite", "math", "--task", "gsm8k"],
        "task without checker": [model, "--suite", "math", "--task", "tldr", "--out", tmp_path / "out"],
        "arith from a directory": [model, "--suite", "math", "--source", tmp_path, "--out", tmp_path / "out"],
        "math on a math run with tldr": [arith_run, "--suite", "tldr", "--out", tmp_path / "out"],
    }[case]
    assert harness(*argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in "\n".join(lines)
    assert not (tmp_path / "out").exists()  # refused before anything was written
