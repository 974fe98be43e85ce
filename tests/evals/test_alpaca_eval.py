"""AlpacaEval 2.0 end to end through the alpaca_eval package, its default annotator pointed at a local stub endpoint.

The LC metric reads df_gamed.csv from the hub; here it comes from a pre-seeded hub cache (synthetic rows with the
real columns), with the hub client forced offline.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from evals.alpaca_eval import generate_outputs, load_reference_outputs, run_alpaca_eval
from evals.judge import Endpoint
from harness.core.errors import UserError
from harness.core.store import read_json, read_jsonl
from tests.openai_stub import OpenAIStub, user_text

REFERENCE = Path(__file__).parent.parent / "fixtures" / "evals" / "alpaca_reference.json"
FACTS = ["Paris", "eight", "carbon dioxide", "Mars", "100", "Shakespeare", "Pacific", "366", "Au", "9"]
KEY = "sk-alpaca-test-key-never-stored"


def fact_judge(body: dict) -> str:
    """Prefers the output that states the instruction's fact; between two that do (or don't), the shorter one."""
    text = user_text(body)
    instruction = re.search(r'"instruction": """(.*?)"""', text, re.S).group(1)
    m, big_m = re.findall(r'"output": """(.*?)"""', text, re.S)
    fact = FACTS[[r["instruction"] for r in json.loads(REFERENCE.read_text())].index(instruction)]
    key = [(fact not in out, len(out)) for out in (m, big_m)]
    return "m" if key[0] <= key[1] else "M"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A hub cache holding tatsu-lab/alpaca_eval's df_gamed.csv (two gamed baselines per instruction), offline."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    commit = "0" * 40
    repo = tmp_path / "hub" / "datasets--tatsu-lab--alpaca_eval"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    rng = random.Random(0)
    lines = ["model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline"]
    difficulty = [rng.uniform(-1, 1) for _ in FACTS]
    for model, sign in (("gamed_verbose", 1), ("gamed_concise", -1)):
        for i, d in enumerate(difficulty):
            delta = sign * rng.uniform(0.5, 1.5)
            lines.append(f"{model},{i},{min(max(0.5 + 0.3 * delta, 0), 1):.3f},{delta:.3f},{d:.3f},False")
    (repo / "snapshots" / commit / "df_gamed.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "hub"


def outputs(answers: list[str], generator: str) -> list[dict]:
    """Model outputs made the way the harness makes them, by a generate function that here answers from a list."""
    def generate(conversations):
        assert all(len(c) == 1 and c[0]["role"] == "user" for c in conversations)
        return answers
    return generate_outputs(load_reference_outputs(REFERENCE), generate, generator)


def test_reference_outputs_load_from_json_and_jsonl(tmp_path):
    rows = load_reference_outputs(REFERENCE)
    assert len(rows) == 10 and rows[0]["generator"] == "reference_model"
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps({"instruction": r["instruction"], "output": r["output"]})
                                                + "\n" for r in rows))
    assert [r["output"] for r in load_reference_outputs(tmp_path / "ref.jsonl")] == [r["output"] for r in rows]
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(UserError, match="lack"):
        load_reference_outputs(tmp_path / "bad.json")


def test_null_model_loses_and_a_better_model_wins(tmp_path, hub_cache):
    with OpenAIStub(fact_judge) as stub:
        endpoint = Endpoint("stub-judge", stub.base_url, KEY)
        null = run_alpaca_eval(outputs(["I cannot help with that."] * 10, "null-model"), REFERENCE,
                               tmp_path / "null", endpoint=endpoint, max_concurrency=2, hub_cache_dir=hub_cache)
        good = run_alpaca_eval(outputs([f"{f}." for f in FACTS], "good-model"), REFERENCE, tmp_path / "good",
                               endpoint=endpoint, max_concurrency=2, hub_cache_dir=hub_cache)
    assert null["win_rate"] == 0.0 and null["n_total"] == 10 and null["n_missing"] == 0
    assert 0.0 <= null["lc_win_rate"] < 0.2  # the LC fit is unstable on 10 rows: a range, not a value
    assert good["win_rate"] == 1.0 and good["lc_win_rate"] > 0.8
    assert null["judge"] == "stub-judge" and null["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    # the default AlpacaEval 2.0 annotator asked the configured endpoint for logprobs, with the configured model
    assert len(stub.answered) == 20
    assert all(r.body["model"] == "stub-judge" and r.body["logprobs"] for r in stub.requests)
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert read_json(tmp_path / "null" / "alpaca_eval.json") == null
    records, _ = read_jsonl(tmp_path / "null" / "alpaca_eval_samples.jsonl")
    assert len(records) == 10 and all(r["preference"] == 1.0 for r in records)
    assert {r["output"] for r in records} == {"I cannot help with that."}
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "hub" not in p.parts]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)


def test_repeated_evaluation_reuses_cached_annotations(tmp_path, hub_cache):
    with OpenAIStub(fact_judge) as stub:
        endpoint = Endpoint("stub-judge", stub.base_url, "EMPTY")
        first = run_alpaca_eval(outputs([f"{f}." for f in FACTS], "good-model"), REFERENCE, tmp_path,
                                endpoint=endpoint, hub_cache_dir=hub_cache)
        sent = len(stub.requests)
        second = run_alpaca_eval(outputs([f"{f}." for f in FACTS], "good-model"), REFERENCE, tmp_path,
                                 endpoint=endpoint, hub_cache_dir=hub_cache)
        assert len(stub.requests) == sent
        other = run_alpaca_eval(outputs([f"{f}." for f in FACTS], "good-model"), REFERENCE, tmp_path,
                                endpoint=Endpoint("other-judge", stub.base_url, "EMPTY"), hub_cache_dir=hub_cache)
    assert second["win_rate"] == first["win_rate"] == other["win_rate"] == 1.0
    assert len(stub.requests) == 2 * sent  # a different judge model is asked afresh


@pytest.mark.parametrize("outputs_,annotator,message", [
    ([{"instruction": "Unknown?", "output": "x"}], "weighted_alpaca_eval_gpt4_turbo", "no reference output"),
    (None, "claude", "does not call an OpenAI-compatible endpoint"),
    (None, "no_such_annotator", "valid: .*weighted_alpaca_eval_gpt4_turbo"),
])
def test_bad_inputs_are_refused_before_any_request(tmp_path, outputs_, annotator, message):
    with pytest.raises(UserError, match=message):
        run_alpaca_eval(outputs_ or outputs(["x"] * 10, "m"), REFERENCE, tmp_path, annotator=annotator,
                        endpoint=Endpoint("m", "http://127.0.0.1:9/v1", "EMPTY"))
