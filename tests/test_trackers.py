"""log.trackers: the metrics lines reach TensorBoard (read back from its event files) and W&B offline (its run
directory), secrets never do, and bad names fail in one line."""
import json

import pytest

from harness.core.errors import UserError
from harness.app.trackers import Trackers, flat_config, scalars, tracker_names

SECRET = "sk-abcdefghijklmnop1234"
CONFIG = {"train": {"lr": 3e-5, "max_new_tokens": 8}, "eval": {"judge_api_key": "plain-text-key", "judge": "gold",
          "judge_model": SECRET}, "hf_token": "hf_abcdefghijkl", "model": {"lora": None}}
LINES = [{"iteration": 1, "loss": 0.5, "score": -1.25, "final": False, "note": "text"},
         {"iteration": 2, "loss": 0.25, "score": float("nan")}]


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (logdir,) = [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _no_secret_in(path):
    blobs = b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())
    return all(s.encode() not in blobs for s in (SECRET, "plain-text-key", "hf_abcdefghijkl"))


def test_names_settings_and_errors():
    assert tracker_names(None) == tracker_names("none") == tracker_names([]) == []
    assert tracker_names("tensorboard, wandb") == tracker_names(["tensorboard", "wandb"]) == ["tensorboard", "wandb"]
    assert tracker_names("auto") == ["tensorboard"]  # installed in this environment
    with pytest.raises(UserError, match="unknown tracker 'tensorbord'"):
        tracker_names("tensorbord")
    with pytest.raises(UserError, match="pip install aim"):
        tracker_names("aim")
    assert flat_config(CONFIG) == {"train.lr": 3e-5, "train.max_new_tokens": 8, "eval.judge": "gold",
                                   "model.lora": "none"}
    assert scalars(LINES[0]) == {"loss": 0.5, "score": -1.25} and scalars(LINES[1]) == {"loss": 0.25}


def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    trackers = Trackers(["tensorboard"], tmp_path, "run-a", CONFIG)
    for line in LINES:
        trackers.log(line)
    trackers.finish()
    events = _events(tmp_path)
    assert events["loss"] == [(1, 0.5), (2, 0.25)] and events["score"] == [(1, -1.25)]
    assert _no_secret_in(tmp_path)


def test_wandb_offline_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    trackers = Trackers(["wandb"], tmp_path, "run-b", CONFIG)
    for line in LINES:
        trackers.log(line)
    trackers.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("run-*.wandb"))
    assert _no_secret_in(tmp_path)


def test_run_sends_its_metrics_lines_to_tensorboard(tiny_test_models, harness_cache, tmp_path):
    from harness.app.config import resolve
    from harness.app.runner import run

    cfg = resolve("tiny-test", {"algo": "reinforce", "output_dir": str(tmp_path), "run_id": "tb",
                                "model": {"cache_dir": harness_cache}, "log": {"trackers": "tensorboard"},
                                "train": {"iterations": 2, "checkpoint_every": 0}, "eval": {"every": 0, "prompts": 8}})
    run_dir = run(cfg)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = _events(run_dir)
    assert events["loss"] == [(r["iteration"], pytest.approx(r["loss"])) for r in lines if "loss" in r]
    assert events["eval/rm_score"] == [(2, pytest.approx(lines[-1]["eval/rm_score"]))]
