"""The six leaderboard tasks through lm-eval on a tiny saved model, with local data shadowing the real task names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evals.open_llm import LEADERBOARD, run_open_llm, write_shadow_tasks
from harness.core.errors import UserError
from harness.core.store import read_json, read_jsonl
from tests.evals.tiny_lm import one_torch_thread, save_tiny_chat_model

DATA = Path(__file__).parent.parent / "fixtures" / "evals" / "open_llm"


@pytest.fixture(scope="module")
def shadow(tmp_path_factory) -> Path:
    files = {d.name: {f.stem: f for f in d.glob("*.jsonl")} for d in DATA.iterdir() if d.is_dir()}
    return write_shadow_tasks(files, tmp_path_factory.mktemp("shadow"), groups={"mmlu": ["mmlu_abstract_algebra"]})


def test_shadow_yaml_includes_the_builtin_and_swaps_only_the_data(shadow):
    arc = yaml.safe_load((shadow / "arc_challenge.yaml").read_text())
    assert arc["include"].endswith("arc/arc_challenge.yaml") and Path(arc["include"]).is_absolute()
    assert arc["dataset_path"] == "json" and arc["dataset_name"] is None
    assert set(arc["dataset_kwargs"]["data_files"]) == {"train", "validation", "test"}
    assert set(arc) == {"include", "task", "dataset_path", "dataset_name", "dataset_kwargs"}
    mmlu = yaml.safe_load((shadow / "mmlu.yaml").read_text())
    assert mmlu["group"] == "mmlu" and mmlu["task"] == ["mmlu_abstract_algebra"]
    assert mmlu["aggregate_metric_list"][0]["metric"] == "acc"  # kept from the built-in group


def test_six_tasks_end_to_end_on_a_tiny_model(shadow, tmp_path):
    model = save_tiny_chat_model(tmp_path / "model")
    with one_torch_thread():
        summary = run_open_llm(model, tmp_path / "evals", include_path=shadow, limit=2, device="cpu")
    tasks = summary["details"]
    assert list(tasks) == list(LEADERBOARD)
    assert summary["tasks"] == {t: v["score"] for t, v in tasks.items()}  # the shape `harness report` reads
    assert {t: v["num_fewshot"] for t, v in tasks.items()} == {
        "arc_challenge": 25, "hellaswag": 10, "truthfulqa_mc2": 0, "mmlu": 5, "winogrande": 5, "gsm8k": 5}
    assert all(0.0 <= v["score"] <= 1.0 and v["n"] == 2 for v in tasks.values())
    assert summary["average"] == pytest.approx(sum(v["score"] for v in tasks.values()) / 6)
    assert summary["limit"] == 2
    assert read_json(tmp_path / "evals" / "open_llm.json")["details"]["gsm8k"]["metric"] == "exact_match,strict-match"
    records, problems = read_jsonl(tmp_path / "evals" / "open_llm_samples.jsonl")
    assert not problems
    # the documents came from the local files: arc's first test question and its answer index
    first_arc = json.loads((DATA / "arc_challenge" / "test.jsonl").read_text().splitlines()[0])
    arc0 = next(r for r in records if r["task"] == "arc_challenge" and r["doc_id"] == 0)
    assert arc0["target"] == str(first_arc["choices"]["label"].index(first_arc["answerKey"]))
    assert len(arc0["response"]) == 4  # one log-likelihood per choice
    assert {r["subtask"] for r in records if r["task"] == "mmlu"} == {"mmlu_abstract_algebra"}
    gsm = [r for r in records if r["task"] == "gsm8k"]
    assert {r["filter"] for r in gsm} == {"strict-match", "flexible-extract"} and "####" in gsm[0]["target"]


def test_unknown_task_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserError, match="arc_challenge"):
        run_open_llm("unused", tmp_path, tasks=["arc_easy"])


def test_shadowing_a_task_lm_eval_lacks_is_refused(tmp_path):
    with pytest.raises(UserError, match="no built-in task"):
        write_shadow_tasks({"not_a_task": {"test": DATA / "gsm8k" / "test.jsonl"}}, tmp_path)
