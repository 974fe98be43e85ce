"""`harness eval` through the command line: a finished tiny-test run (TL;DR with the gold judge and with an LLM judge
served by the local stub), the chat and Open LLM suites on tiny models, and the one-line errors."""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

from evals.runs import load_run, load_suites
from evals.tables import CHAT_METRICS, OPEN_LLM_METRICS
from harness.cli import main
from harness.core.store import read_json, read_jsonl
from tests.evals.test_alpaca_eval import REFERENCE as ALPACA_REFERENCE
from tests.evals.test_alpaca_eval import hub_cache  # noqa: F401  (fixture: df_gamed.csv in an offline hub cache)
from tests.evals.test_mt_bench import QUESTIONS, REFERENCES
from tests.evals.test_open_llm import shadow  # noqa: F401  (fixture: local data shadowing the leaderboard tasks)
from tests.evals.tiny_lm import one_torch_thread, save_tiny_chat_model
from tests.openai_stub import OpenAIStub, user_text

TLDR_KEYS = ("rm_score", "kl", "kl_exact", "win_rate", "gold_reward", "response_length", "eos_rate")
JUDGE_ENV = ("HARNESS_JUDGE_MODEL", "HARNESS_JUDGE_BASE_URL", "HARNESS_JUDGE_API_KEY", "OPENAI_BASE_URL",
             "OPENAI_API_KEY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in JUDGE_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "harness-cache"))  # judge caches of model targets


@pytest.fixture(scope="module")
def finished_run(tiny_test_models, harness_cache, tmp_path_factory) -> Path:
    """A completed tiny-test run (1 iteration at a high learning rate, so the policy moved away from SFT)."""
    from harness.app.config import resolve
    from harness.app.runner import run

    out = tmp_path_factory.mktemp("runs")
    cfg = resolve("tiny-test", {"output_dir": str(out), "run_id": "r", "model": {"cache_dir": harness_cache},
                                "train": {"iterations": 1, "lr": 1e-3}, "eval": {"every": 0, "prompts": 16}})
    with one_torch_thread():
        path = run(cfg)
    shutil.copy(path / "evals" / "tldr.json", path / "runner_tldr.json")  # the runner's own final evaluation
    return path


def harness(*argv: str) -> int:
    with one_torch_thread(), pytest.raises(SystemExit) as done:
        main(["eval", *map(str, argv)])
    return done.value.code or 0


def test_tldr_on_a_run_reproduces_the_runners_final_evaluation(finished_run):
    (finished_run / "evals" / "tldr.json").unlink()
    assert harness(finished_run, "--suite", "tldr") == 0
    runner, ours = read_json(finished_run / "runner_tldr.json"), read_json(finished_run / "evals" / "tldr.json")
    # same checkpoint, prompts, sampling seed, reference (the SFT policy) and reward model as the run's last eval
    for key in TLDR_KEYS:
        assert ours[key] == pytest.approx(runner[key], rel=1e-4, abs=1e-6), key
    assert ours["kl_exact"] > 1e-4  # measured against the SFT reference, not against a copy of the checkpoint
    assert ours["win_rate_judge"] == "gold" and ours["n"] == 16
    assert ours["checkpoint"] == str(finished_run / "checkpoints" / "final")
    assert ours["reference"] == read_json(finished_run / "config.json")["model_origin"]["policy"]
    samples, problems = read_jsonl(finished_run / "evals" / "tldr_samples.jsonl")
    assert not problems and len(samples) == 16
    assert sum(s["gold"] for s in samples) / 16 == pytest.approx(ours["gold_reward"])
    run_samples, _ = read_jsonl(finished_run / "samples.jsonl")
    assert [s["response"] for s in samples] == [s["response"] for s in run_samples]


def test_another_checkpoint_goes_to_its_own_directory(finished_run):
    shutil.copytree(finished_run / "checkpoints" / "final", finished_run / "checkpoints" / "copy", dirs_exist_ok=True)
    assert harness(finished_run, "--suite", "tldr", "--checkpoint", "copy", "--prompts", "4",
                   "--temperature", "0.5") == 0
    result = read_json(finished_run / "evals" / "checkpoints" / "copy" / "tldr.json")
    assert (result["n"], result["temperature"]) == (4, 0.5)
    assert result["checkpoint"].endswith("checkpoints/copy")


def test_tldr_on_a_model_directory_with_the_runs_models(finished_run, tmp_path):
    origin = read_json(finished_run / "config.json")["model_origin"]
    assert harness(finished_run / "checkpoints" / "final", "--suite", "tldr", "--reward-model",
                   origin["reward_model"], "--reference", origin["policy"], "--preset", "tiny-test",
                   "--source", "synthetic", "--prompts", "16", "--out", tmp_path) == 0
    ours, runner = read_json(tmp_path / "tldr.json"), read_json(finished_run / "runner_tldr.json")
    for key in TLDR_KEYS:  # the preset's settings are the run's: the same numbers
        assert ours[key] == pytest.approx(runner[key], rel=1e-4, abs=1e-6), key
    assert ours["run_dir"] is None and ours["reference"] == origin["policy"]


def longer_wins(body: dict) -> str:
    """A consistent judge: the longer summary wins; equal lengths make it answer "A" (position bias)."""
    m = re.search(r"Summary A:\n(.*?)\n\nSummary B:\n(.*?)\n\nFirst write", user_text(body), re.S)
    return f"Comparison: more content.\nPreferred: {'A' if len(m.group(1)) >= len(m.group(2)) else 'B'}"


def test_tldr_with_an_llm_judge_asks_both_orders(finished_run, monkeypatch):
    out = finished_run / "evals" / "openai"
    name = f"stub-judge-{uuid.uuid4().hex[:8]}"  # the run's judge cache may outlive the session (HARNESS_TEST_CACHE)
    with OpenAIStub(longer_wins, model_ids=(name,)) as stub:
        monkeypatch.setenv("HARNESS_JUDGE_BASE_URL", stub.base_url)
        assert harness(finished_run, "--suite", "tldr", "--judge", "openai", "--judge-model", name,
                       "--prompts", "8", "--out", out) == 0
    result = read_json(out / "tldr.json")
    samples, _ = read_jsonl(out / "tldr_samples.jsonl")
    shown = [re.search(r"Summary A:\n(.*?)\n\nSummary B:\n(.*?)\n\nFirst write", user_text(r.body), re.S).groups()
             for r in stub.answered]
    assert len(shown) == 16 and all(r.body["model"] == name for r in stub.answered)
    for s in samples:  # every pair was shown in both orders
        assert (s["response"], s["reference"]) in shown and (s["reference"], s["response"]) in shown
    wins = sum(len(s["response"]) > len(s["reference"]) for s in samples)
    ties = sum(len(s["response"]) == len(s["reference"]) for s in samples)
    assert result["win_rate"] == pytest.approx((wins + 0.5 * ties) / 8)
    assert result["judge"]["position_consistency"] == pytest.approx((8 - ties) / 8)
    assert result["win_rate_judge"] == name and result["judge"]["calls"] == 16
    assert {s["judge"]["verdict"] for s in samples} <= {"win", "loss", "tie"}


def judge_for_chat(body: dict) -> str:
    """alpaca_eval's annotator (asks for logprobs): prefers the output with more words; MT-Bench: 8 then 4."""
    text = user_text(body)
    if body.get("logprobs"):
        m, big_m = re.findall(r'"output": """(.*?)"""', text, re.S)
        return "m" if len(m.split()) >= len(big_m.split()) else "M"
    return "Rating: [[4]]" if "second question" in text else "Fine. [[8]]"


def test_chat_suite_writes_the_keys_the_report_reads(tmp_path, hub_cache, monkeypatch):  # noqa: F811
    model = save_tiny_chat_model(tmp_path / "model")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "chat.json").write_text(json.dumps({"base": {"mt_bench": {"average": 5.0}}}))  # kept across re-runs
    with OpenAIStub(judge_for_chat) as stub:
        monkeypatch.setenv("HARNESS_JUDGE_MODEL", "stub-judge")
        assert harness(model, "--suite", "chat", "--judge-base-url", stub.base_url, "--out", out,
                       "--alpaca-reference", ALPACA_REFERENCE, "--mt-bench-questions", QUESTIONS,
                       "--mt-bench-references", REFERENCES, "--hub-cache-dir", hub_cache, "--max-new-tokens", "4",
                       "--limit", "3", "--device", "cpu") == 0
    chat = read_json(out / "chat.json")
    alpaca, mt = chat["alpaca_eval"], chat["mt_bench"]
    # 4 new tokens never outnumber the references' words: the model loses every comparison (a fraction, not %)
    assert alpaca["win_rate"] == 0.0 and alpaca["n"] == 3 and alpaca["n_total"] == 3
    assert 0.0 <= alpaca["lc_win_rate"] < 0.2  # the LC fit on 3 rows: a range, not a value
    assert (mt["turn_1"], mt["turn_2"], mt["average"]) == (8.0, 4.0, 6.0)
    assert mt["per_category"] == {"math": 6.0, "reasoning": 6.0, "writing": 6.0} and mt["n_questions"] == 3
    assert chat["base"] == {"mt_bench": {"average": 5.0}}
    assert sum(bool(r.body.get("logprobs")) for r in stub.answered) == 3  # 3 instructions
    assert sum(not r.body.get("logprobs") for r in stub.answered) == 6  # 3 questions x 2 turns
    # the modules' own files stay beside chat.json
    assert read_json(out / "alpaca_eval.json")["win_rate"] == alpaca["win_rate"]
    assert read_json(out / "mt_bench.json")["score"] == mt["average"]
    assert len(read_jsonl(out / "alpaca_eval_samples.jsonl")[0]) == 3
    assert len(read_jsonl(out / "mt_bench_samples.jsonl")[0]) == 6
    # the report's own accessors find every Table 2 number that the chat suite produces
    values = {m.key: m.get({"chat": chat}) for m in CHAT_METRICS}
    assert values == {"mmlu": None, "mt1": 8.0, "mt2": 4.0, "mt_avg": 6.0, "lc": alpaca["lc_win_rate"], "wr": 0.0}


def test_open_llm_suite_on_a_run_is_read_by_the_report(finished_run, shadow):  # noqa: F811
    assert harness(finished_run, "--suite", "open-llm", "--include-path", shadow, "--limit", "2",
                   "--tasks", "arc_challenge,mmlu,winogrande", "--device", "cpu") == 0
    result = read_json(finished_run / "evals" / "open_llm.json")
    assert list(result["tasks"]) == ["arc_challenge", "mmlu", "winogrande"]
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in result["tasks"].values())
    assert result["average"] == pytest.approx(sum(result["tasks"].values()) / 3)
    assert result["details"]["arc_challenge"]["num_fewshot"] == 25 and result["limit"] == 2
    records, _ = read_jsonl(finished_run / "evals" / "open_llm_samples.jsonl")
    assert {r["task"] for r in records} == {"arc_challenge", "mmlu", "winogrande"}
    run = load_run(finished_run)
    assert load_suites(run) == [] and run.evals["open_llm"] == result
    values = {m.key: m.get(run.evals) for m in OPEN_LLM_METRICS}
    assert values["mmlu"] == result["tasks"]["mmlu"] and values["average"] == pytest.approx(result["average"])


@pytest.mark.parametrize("case,message", [
    ("unknown suite", "unknown suite 'bleu'; valid suites: tldr, math, reward, chat, open-llm"),
    ("no final checkpoint", "has no checkpoints/final"),
    ("remote judge without key", "no API key for the judge at https://judge.example.com/v1: set HARNESS_JUDGE_API_KEY"),
    ("chat judge without key", "no API key for the judge at https://judge.example.com/v1: set HARNESS_JUDGE_API_KEY"),
    ("model without reward model", "needs --reward-model"),
    ("checkpoint of a model", "--checkpoint needs a run directory"),
    ("missing directory", "no such directory: ./no/such/run"),
    ("tldr flag without tldr", "--prompts only apply to --suite tldr or --suite math"),
])
def test_bad_input_is_a_one_line_error(finished_run, tmp_path, capsys, case, message):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(finished_run / "config.json", unfinished / "config.json")
    model = finished_run / "checkpoints" / "final"
    argv = {
        "unknown suite": [finished_run, "--suite", "tldr", "--suite", "bleu"],
        "no final checkpoint": [unfinished, "--suite", "tldr"],
        "remote judge without key": [finished_run, "--suite", "tldr", "--judge", "openai",
                                     "--judge-base-url", "https://judge.example.com/v1"],
        "chat judge without key": [model, "--suite", "chat", "--judge-base-url", "https://judge.example.com/v1",
                                   "--out", tmp_path / "out"],
        "model without reward model": [model, "--suite", "tldr", "--out", tmp_path / "out"],
        "checkpoint of a model": [model, "--suite", "tldr", "--checkpoint", "final"],
        "missing directory": ["./no/such/run", "--suite", "tldr"],
        "tldr flag without tldr": [finished_run, "--suite", "open-llm", "--prompts", "3"],
    }[case]
    assert harness(*argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in "\n".join(lines)
    assert not (tmp_path / "out").exists()  # refused before anything was written
