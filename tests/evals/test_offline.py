"""`harness eval` with HF_HUB_OFFLINE=1 and no command-line paths: every asset is read from where the libraries look
(the hub cache for AlpacaEval's files, the datasets cache for MT-Bench's questions and lm-eval's data), filled here
from tests/fixtures/evals; with one asset removed, one line names it and the `harness prepare` command. No hub is
reachable on this machine, so nothing here was ever downloaded: the caches hold the fixtures in the libraries'
own layouts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evals.answer_cache import CachedAnswers
from harness.core.store import read_json, read_jsonl
from tests.evals.test_alpaca_eval import REFERENCE as ALPACA_REFERENCE
from tests.evals.test_alpaca_eval import hub_cache  # noqa: F401  (df_gamed.csv in a hub cache, hub offline)
from tests.evals.test_eval_cli import JUDGE_ENV, harness, judge_for_chat
from tests.evals.test_mt_bench import QUESTIONS, REFERENCES
from tests.evals.tiny_lm import save_tiny_chat_model
from tests.openai_stub import OpenAIStub

FIXTURES = Path(__file__).parent.parent / "fixtures" / "evals"
ROOT = Path(__file__).resolve().parents[2]


def cache_dataset(root: Path, repo_id: str, config: str | None, files: dict[str, Path]) -> Path:
    """Local JSONL splits where `datasets` finds a hub data set it loaded before (<root>/<org>___<name>/<config>/
    <version>/<hash>), written by datasets' own json builder; a builder takes a repo's namespace only with hub data
    files, so the directory is moved under it afterwards. Returns the config's directory."""
    from datasets.packaged_modules.json.json import Json

    org, name = repo_id.split("/")
    config = config or "default"
    staging = root / "_staging"
    builder = Json(cache_dir=str(staging), dataset_name=name, config_name=config, config_id=config, hash="fixture",
                   data_files={split: str(Path(f).resolve()) for split, f in files.items()})
    builder.download_and_prepare()
    target = root / f"{org}___{builder.dataset_name}" / config
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging / builder.dataset_name / config), str(target))
    shutil.rmtree(staging)
    return target


@pytest.fixture
def offline_caches(tmp_path, hub_cache, monkeypatch):  # noqa: F811
    """HF_HOME in tmp_path with the chat and arc_challenge assets in it; the hub and datasets clients offline."""
    import datasets.config
    import huggingface_hub.constants

    for var in JUDGE_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "harness-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # the libraries read these at import: set them as the environment above would have
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    snapshot = next((hub_cache / "datasets--tatsu-lab--alpaca_eval" / "snapshots").iterdir())
    shutil.copy(ALPACA_REFERENCE, snapshot / "alpaca_eval_gpt4_baseline.json")  # the hub file's name
    # MT-Bench in the hub set's schema (prompt, prompt_id, category, reference), references merged in
    refs = {r["question_id"]: r["choices"][0]["turns"] for r in map(json.loads, REFERENCES.read_text().splitlines())}
    rows = [{"prompt": q["turns"], "prompt_id": q["question_id"], "category": q["category"],
             "reference": refs.get(q["question_id"]) or q.get("reference") or []}
            for q in map(json.loads, QUESTIONS.read_text().splitlines())]
    (tmp_path / "mt_bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache_dataset(tmp_path / "datasets", "HuggingFaceH4/mt_bench_prompts", None, {"train": tmp_path / "mt_bench.jsonl"})
    arc = FIXTURES / "open_llm" / "arc_challenge"
    arc_dir = cache_dataset(tmp_path / "datasets", "allenai/ai2_arc", "ARC-Challenge",
                            {f.stem: f for f in arc.glob("*.jsonl")})
    return {"hub": hub_cache, "snapshot": snapshot, "arc": arc_dir, "root": tmp_path}


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    return save_tiny_chat_model(tmp_path_factory.mktemp("model"))


def eval_offline(model, out, *suites, extra=()):
    with OpenAIStub(judge_for_chat) as stub:
        code = harness(model, *[a for s in suites for a in ("--suite", s)], "--judge-base-url", stub.base_url,
                       "--judge-model", "stub-judge", "--out", out, "--max-new-tokens", "4", "--limit", "2",
                       "--device", "cpu", *extra)
    return code, stub


def test_chat_and_open_llm_run_offline_from_the_caches(offline_caches, chat_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    code, stub = eval_offline(chat_model, out, "chat", "open-llm", extra=("--tasks", "arc_challenge"))
    assert code == 0
    chat, open_llm = read_json(out / "chat.json"), read_json(out / "open_llm.json")
    assert chat["alpaca_eval"]["n"] == 2 and chat["alpaca_eval"]["lc_win_rate"] is not None  # df_gamed.csv read
    assert chat["alpaca_eval"]["reference"] == "hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline.json"
    assert chat["mt_bench"]["n_questions"] == 2 and chat["mt_bench"]["turn_1"] == 8.0  # the hub set's questions
    assert list(open_llm["tasks"]) == ["arc_challenge"] and open_llm["details"]["arc_challenge"]["n"] == 2
    records, _ = read_jsonl(out / "open_llm_samples.jsonl")
    first = json.loads((FIXTURES / "open_llm" / "arc_challenge" / "test.jsonl").read_text().splitlines()[0])
    arc0 = next(r for r in records if r["doc_id"] == 0)
    assert arc0["target"] == str(first["choices"]["label"].index(first["answerKey"]))  # the cached fixture docs
    answers, _ = read_jsonl(out / "chat_answers.jsonl")
    assert len(answers) == 2 + 2 * 2  # AlpacaEval 2 instructions, MT-Bench 2 questions x 2 turns

    # a rerun reuses every kept answer and never loads the model
    import evals.chat_generate

    monkeypatch.setattr(evals.chat_generate, "chat_generator", lambda *a, **k: pytest.fail("model loaded"))
    code, _ = eval_offline(chat_model, out, "chat")
    assert code == 0 and read_json(out / "chat.json")["alpaca_eval"] == chat["alpaca_eval"]
    assert len(read_jsonl(out / "chat_answers.jsonl")[0]) == 6


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in "\n".join(lines)
    return errors[0]


@pytest.mark.parametrize("removed,suite,names", [
    ("df_gamed", "chat", ["AlpacaEval LC weights tatsu-lab/alpaca_eval/df_gamed.csv",
                          "`python -m harness prepare --suite chat`"]),
    ("reference", "chat", ["AlpacaEval reference outputs tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline.json",
                           "`python -m harness prepare --suite chat`"]),
    ("mt_bench", "chat", ["MT-Bench questions and reference answers HuggingFaceH4/mt_bench_prompts (train)",
                          "`python -m harness prepare --suite chat`"]),
    ("arc", "open-llm", ["open-llm arc_challenge data allenai/ai2_arc[ARC-Challenge] (train, validation, test)",
                         "`python -m harness prepare --suite open-llm --tasks arc_challenge`"]),
])
def test_a_removed_asset_is_one_line_before_anything_loads(offline_caches, chat_model, tmp_path, capsys,
                                                           monkeypatch, removed, suite, names):
    import evals.chat_generate

    {"df_gamed": lambda: (offline_caches["snapshot"] / "df_gamed.csv").unlink(),
     "reference": lambda: (offline_caches["snapshot"] / "alpaca_eval_gpt4_baseline.json").unlink(),
     "mt_bench": lambda: shutil.rmtree(offline_caches["root"] / "datasets" / "HuggingFaceH4___mt_bench_prompts"),
     "arc": lambda: shutil.rmtree(offline_caches["arc"])}[removed]()
    monkeypatch.setattr(evals.chat_generate, "chat_generator", lambda *a, **k: pytest.fail("model loaded"))
    # both suites asked for: the open-llm data is checked before chat generates anything, and the reverse
    code, stub = eval_offline(chat_model, tmp_path / "out", "chat", "open-llm", extra=("--tasks", "arc_challenge"))
    assert code == 2
    line = one_error_line(capsys)
    assert all(n in line for n in names), line
    assert "HF_HUB_OFFLINE is set" in line
    assert not any(r.body.get("messages") for r in stub.answered)  # nothing was judged
    assert not (tmp_path / "out" / "chat_answers.jsonl").exists()


def test_cached_answers_survive_a_crash_midway(tmp_path):
    calls = []

    def generate(conversations):
        calls.append(len(conversations))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return [c[-1]["content"].upper() for c in conversations]

    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
    first = CachedAnswers(tmp_path / "a.jsonl", "m1", lambda: generate, batch_size=2)
    with pytest.raises(RuntimeError):
        first(conversations)
    assert len(read_jsonl(tmp_path / "a.jsonl")[0]) == 2  # the first batch was kept
    again = CachedAnswers(tmp_path / "a.jsonl", "m1", lambda: generate, batch_size=2)
    assert again(conversations) == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    assert calls == [2, 2, 2, 1] and again.reused == 2  # only q2..q4 were generated again
    other = CachedAnswers(tmp_path / "a.jsonl", "m2", lambda: generate, batch_size=8)
    assert other(conversations[:1]) == ["Q0"] and other.reused == 0  # another model's answers are not reused


def test_the_real_environment_variable_in_a_fresh_process(tmp_path, chat_model):
    """HF_HUB_OFFLINE=1 as a cluster job sets it, read by the libraries at import (nothing patched)."""
    env = {**{k: v for k, v in os.environ.items() if k not in JUDGE_ENV}, "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-m", "harness", "eval", str(chat_model), "--suite", "chat",
                           "--judge-base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "out")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # a local judge needs no key
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: AlpacaEval reference outputs tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline.json is not in the "
        "local Hugging Face cache (and 2 more) and HF_HUB_OFFLINE is set: fetch it first with `python -m harness "
        "prepare --suite chat` where the hub is reachable (then HF_HUB_OFFLINE=1 works)")


def test_a_changed_generator_misses_the_answer_cache(tmp_path, monkeypatch):
    """Answers are keyed by the generating code too (issue 34): the same model files and settings with a changed
    chat generator are another key, so its answers are generated anew, and the original code finds its own again."""
    import evals.chat_generate
    from evals.answer_cache import model_fingerprint

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    key = model_fingerprint(str(tmp_path / "m"), 64)
    assert model_fingerprint(str(tmp_path / "m"), 64) == key and model_fingerprint(str(tmp_path / "m"), 65) != key
    original = evals.chat_generate.ChatGenerator.__call__

    def changed(self, conversations):
        return [answer.strip() for answer in original(self, conversations)]

    monkeypatch.setattr(evals.chat_generate.ChatGenerator, "__call__", changed)
    changed_key = model_fingerprint(str(tmp_path / "m"), 64)
    assert changed_key != key
    conversations = [[{"role": "user", "content": "q"}]]
    CachedAnswers(tmp_path / "a.jsonl", key, lambda: lambda c: ["old"])(conversations)
    fresh = CachedAnswers(tmp_path / "a.jsonl", changed_key, lambda: lambda c: ["new"])
    assert fresh(conversations) == ["new"] and fresh.reused == 0
    monkeypatch.undo()
    again = CachedAnswers(tmp_path / "a.jsonl", model_fingerprint(str(tmp_path / "m"), 64), pytest.fail)
    assert again(conversations) == ["old"] and again.reused == 1
