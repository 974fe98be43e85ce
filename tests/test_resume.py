"""Checkpoints and resume: a run killed mid-iteration and started again with the same command ends with the same
numbers as a run that was never interrupted (CPU, fixed seed); a crash or a NaN keeps the last good checkpoint."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from algorithms.base import make
from harness.core import checkpoint
from harness.app.config import resolve
from harness.core.distributed import Runtime
from harness.core.errors import UserError
from harness.core.experience import Budget
from harness.app.runner import run
from harness.core.store import read_json, read_jsonl, write_json
from harness.core.train import Trainer

EVAL = ("rm_score", "kl", "kl_exact", "gold_reward", "win_rate", "response_length")
TRAIN = ("loss", "score", "kl", "reward", "gold", "lr", "prompts", "responses", "optimizer_steps")


def command(cache, out, run_id, algo="rebel"):
    return [sys.executable, "-m", "harness", "run", "--algo", algo, "--preset", "tiny-test", "--iterations", "6",
            "-o", str(out), "--run-id", run_id, "--set", f"model.cache_dir={cache}", "--set", "eval.every=3",
            "--set", "train.checkpoint_every=2", "--set", "eval.prompts=32"]


def training_lines(run_dir):
    records, problems = read_jsonl(run_dir / "metrics.jsonl")
    assert not problems
    return [r for r in records if not r.get("final")]


def assert_same_run(a, b):
    sa, sb = read_json(a / "summary.json"), read_json(b / "summary.json")
    for key in EVAL:
        assert sa["eval"][key] == sb["eval"][key], key
    la, lb = training_lines(a), training_lines(b)
    assert [r["iteration"] for r in la] == [r["iteration"] for r in lb] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(la, lb):
        assert {k: ra[k] for k in TRAIN} == {k: rb[k] for k in TRAIN}
        assert ra.get("eval/rm_score") == rb.get("eval/rm_score")
    assert sa["budget"]["prompts"] == sb["budget"]["prompts"] == 6 * 16


def test_killed_run_resumes_to_the_same_final_metrics(tiny_test_models, harness_cache, tmp_path):
    subprocess.run(command(harness_cache, tmp_path, "whole"), check=True, capture_output=True)
    proc = subprocess.Popen(command(harness_cache, tmp_path, "killed"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill it inside iteration 4 (checkpoint at 2)
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert read_json(tmp_path / "killed" / "checkpoints" / "latest.json")["iteration"] == 2
    done = subprocess.run(command(harness_cache, tmp_path, "killed"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "from the checkpoint of iteration 2" in done.stderr
    assert_same_run(tmp_path / "whole", tmp_path / "killed")
    summary = read_json(tmp_path / "killed" / "summary.json")
    assert summary["resumed_from"] == 2
    superseded, _ = read_jsonl(tmp_path / "killed" / "metrics.superseded.jsonl")
    assert [r["iteration"] for r in superseded] == [3]  # logged before the kill, redone after: kept aside
    assert not list((tmp_path / "killed" / "checkpoints").glob("iter-*"))  # resume state dropped when complete
    assert (tmp_path / "killed" / "checkpoints" / "final" / "model.safetensors").exists()


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])  # a critic and an optimizer with state of its own
def test_crashed_run_resumes_critic_and_optimizer_state(algo, tiny_test_models, harness_cache, tmp_path,
                                                        monkeypatch):
    def cfg(run_id, **train):
        return resolve("tiny-test", {"algo": algo, "output_dir": str(tmp_path), "run_id": run_id,
                                     "model": {"cache_dir": harness_cache}, "eval": {"every": 3, "prompts": 32},
                                     "train": {"iterations": 6, "checkpoint_every": 2, **train}})

    run(cfg("whole"))
    real = Trainer.iteration

    def crash_at_5(self, iteration):
        if iteration == 5:
            raise Crash("injected")
        return real(self, iteration)

    monkeypatch.setattr(Trainer, "iteration", crash_at_5)
    with pytest.raises(Crash):
        run(cfg("crashed"))
    failed = read_json(tmp_path / "crashed" / "failed.json")
    assert failed["iteration"] == 5 and failed["checkpoint"]["iteration"] == 4
    monkeypatch.setattr(Trainer, "iteration", real)
    run(cfg("crashed"))
    assert_same_run(tmp_path / "whole", tmp_path / "crashed")
    attempts, _ = read_jsonl(tmp_path / "crashed" / "attempts.jsonl")
    assert [a["event"] for a in attempts] == ["started", "failed", "started"] and attempts[2]["resumed_from"] == 4


def test_nan_reward_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny_test_models, harness_cache,
                                                                             tmp_path, monkeypatch):
    import harness.core.experience as experience

    real = experience.reward_scores
    calls = {"n": 0}

    def nan_after_three_iterations(*args, **kwargs):
        calls["n"] += 1
        score = real(*args, **kwargs)
        return torch.full_like(score, float("nan")) if calls["n"] > 3 else score

    monkeypatch.setattr(experience, "reward_scores", nan_after_three_iterations)
    cfg = resolve("tiny-test", {"output_dir": str(tmp_path), "run_id": "nan", "model": {"cache_dir": harness_cache},
                                "eval": {"every": 0}, "train": {"iterations": 6, "checkpoint_every": 2}})
    with pytest.raises(UserError) as err:
        run(cfg)
    message = str(err.value)
    assert "non-finite rewards at iteration 4" in message and "iteration 2" in message and "resumes" in message
    assert read_json(tmp_path / "nan" / "checkpoints" / "latest.json")["iteration"] == 2
    assert (tmp_path / "nan" / "checkpoints" / "iter-000002" / "policy" / "model.safetensors").exists()
    assert [r["iteration"] for r in training_lines(tmp_path / "nan")] == [1, 2, 3]
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_same_command_finds_its_run_and_other_settings_are_refused(tiny_test_models, harness_cache, tmp_path):
    base = {"output_dir": str(tmp_path), "model": {"cache_dir": harness_cache}, "eval": {"every": 0, "prompts": 16},
            "train": {"iterations": 1}}
    first = run(resolve("tiny-test", base))
    again = run(resolve("tiny-test", base))  # complete: reported, not trained again
    assert again == first and json.loads((first / "summary.json").read_text())["status"] == "completed"
    other = run(resolve("tiny-test", {**base, "seed": 1}))
    assert other != first  # the run id follows the settings
    with pytest.raises(UserError, match="holds a run with other settings"):
        run(resolve("tiny-test", {**base, "seed": 2, "run_id": first.name}))


def test_a_checkpoint_from_another_world_size_is_refused(tiny_test_models, tmp_path):
    write_json(tmp_path / "latest.json", {"iteration": 2, "dir": "iter-000002", "world_size": 4})
    (tmp_path / "iter-000002").mkdir()
    (tmp_path / "iter-000002" / "trainer.pt").write_bytes(b"")
    cfg, models, data = tiny_test_models
    with pytest.raises(UserError, match="written by 4 processes"):
        checkpoint.restore(tmp_path, Trainer(cfg, make("rebel"), models, data.sft_train, Budget()), Runtime.single())
