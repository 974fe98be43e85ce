"""`harness eval` on a real chat model: its answers go through SmolLM2's own chat template and are real text, and
lm-eval's scores on obvious questions are above chance. The judge here is the stub (tests/real/test_real_judge.py
puts the real server in that seat), so this file tests the generation side."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.chat_generate import ChatGenerator
from evals.open_llm import write_shadow_tasks
from harness.cli import main
from harness.core.store import read_json, read_jsonl
from tests.evals.test_alpaca_eval import REFERENCE as ALPACA_REFERENCE
from tests.evals.test_alpaca_eval import hub_cache  # noqa: F401  (fixture: df_gamed.csv in an offline hub cache)
from tests.evals.test_mt_bench import QUESTIONS, REFERENCES
from tests.openai_stub import OpenAIStub, user_text

FIXTURES = Path(__file__).parent.parent / "fixtures" / "evals" / "open_llm"
OBVIOUS = Path(__file__).parent / "fixtures" / "arc_obvious_test.jsonl"


def stub_judge(body: dict) -> str:
    return "m" if body.get("logprobs") else "The answer is fine. Rating: [[6]]"


def harness(*argv) -> int:
    with pytest.raises(SystemExit) as done:
        main(["eval", *map(str, argv)])
    return done.value.code or 0


def test_chat_suite_on_the_real_model(smollm2_dir, tmp_path, hub_cache, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    for var in ("HARNESS_JUDGE_API_KEY", "OPENAI_API_KEY", "HARNESS_JUDGE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    seen, rendered = [], []
    original = ChatGenerator.__call__

    def spy(self, messages_list):
        seen.extend(messages_list)
        rendered.extend(self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                        for m in messages_list)
        return original(self, messages_list)

    monkeypatch.setattr(ChatGenerator, "__call__", spy)
    out = tmp_path / "out"
    with OpenAIStub(stub_judge) as stub:
        assert harness(smollm2_dir, "--suite", "chat", "--judge-base-url", stub.base_url, "--judge-model",
                       "stub-judge", "--out", out, "--alpaca-reference", ALPACA_REFERENCE, "--mt-bench-questions",
                       QUESTIONS, "--mt-bench-references", REFERENCES, "--hub-cache-dir", hub_cache,
                       "--max-new-tokens", "16", "--limit", "2", "--device", "cpu") == 0
    alpaca, _ = read_jsonl(out / "alpaca_eval_samples.jsonl")
    mt, _ = read_jsonl(out / "mt_bench_samples.jsonl")
    answers = [r["output"] for r in alpaca] + [r["answer"] for r in mt]
    assert len(alpaca) == 2 and len(mt) == 4
    # real text: non-empty, no template markup left in it, and the first question answered sensibly
    assert all(a.strip() and "<|im_" not in a for a in answers)
    assert "paris" in alpaca[0]["output"].lower()
    # SmolLM2's chat template (its default system turn) wrapped every prompt
    assert rendered and all(r.startswith("<|im_start|>system\n") and r.endswith("<|im_start|>assistant\n")
                            for r in rendered)
    # the second MT-Bench turn carries the model's own first answer, in the template
    first, second = [r for r in mt if r["turn"] == 1], [r for r in mt if r["turn"] == 2]
    turn2 = [m for m in seen if len(m) == 3]
    assert len(turn2) == 2 and [m[1]["content"] for m in turn2] == [r["answer"] for r in first]
    assert f"<|im_start|>assistant\n{first[0]['answer']}<|im_end|>" in rendered[rendered.index(
        next(r for r in rendered if first[0]["answer"] in r and second[0]["question"] in r))]
    # and the grader saw both turns of the dialogue
    grading = [user_text(r.body) for r in stub.answered if not r.body.get("logprobs")]
    assert any(first[0]["answer"] in g and second[0]["answer"] in g for g in grading)
    chat = read_json(out / "chat.json")
    assert chat["mt_bench"]["average"] == 6.0 and chat["alpaca_eval"]["n"] == 2


@pytest.fixture(scope="module")
def obvious_shadow(tmp_path_factory) -> Path:
    """arc_challenge shadowed by a dozen obvious questions (the project's few-shot pool stays as the train split)."""
    return write_shadow_tasks({"arc_challenge": {"train": FIXTURES / "arc_challenge" / "train.jsonl",
                                                 "validation": FIXTURES / "arc_challenge" / "validation.jsonl",
                                                 "test": OBVIOUS}}, tmp_path_factory.mktemp("obvious"))


def test_open_llm_on_the_real_model_beats_chance_on_obvious_questions(smollm2_dir, obvious_shadow, tmp_path):
    out = tmp_path / "out"
    assert harness(smollm2_dir, "--suite", "open-llm", "--include-path", obvious_shadow, "--tasks",
                   "arc_challenge", "--limit", "8", "--device", "cpu", "--out", out) == 0
    result = read_json(out / "open_llm.json")
    arc = result["details"]["arc_challenge"]
    assert arc["n"] == 8 and arc["num_fewshot"] == 25
    print(json.dumps({"arc_obvious": arc}))
    # chance is 1/4; P(>= 5 of 8 right by chance) = 2.7%. Eight documents: a smoke number, not a benchmark.
    assert arc["score"] >= 5 / 8, arc
