"""MT-Bench end to end: a tiny saved chat model answers both turns, a stub judge grades them through the real client."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.chat_generate import chat_generator
from evals.judge import CompletionClient, Endpoint
from evals.mt_bench import load_questions, parse_rating, run_mt_bench
from harness.core.errors import UserError
from harness.core.store import read_json, read_jsonl
from tests.evals.tiny_lm import one_torch_thread, save_tiny_chat_model
from tests.openai_stub import OpenAIStub, user_text

FIXTURES = Path(__file__).parent.parent / "fixtures" / "evals"
QUESTIONS = FIXTURES / "mt_bench_questions.jsonl"
REFERENCES = FIXTURES / "mt_bench_reference.jsonl"


def client(stub: OpenAIStub, tmp_path: Path) -> CompletionClient:
    return CompletionClient(Endpoint("stub-judge", stub.base_url, "EMPTY"), cache_dir=tmp_path / "cache",
                            backoff_s=0.001)


def test_questions_and_references_load_from_fastchat_files():
    questions = load_questions(QUESTIONS, REFERENCES)
    by_cat = {q.category: q for q in questions}
    assert [len(q.turns) for q in questions] == [2, 2, 2, 2]
    assert by_cat["writing"].reference is None
    assert by_cat["math"].reference == ("12", "14")  # inline in the question file
    assert by_cat["coding"].reference[0].startswith("def square(x)")  # from the reference-answer file


def test_hub_format_rows_load_too(tmp_path):
    rows = [{"prompt": ["Tell a joke.", "Another one."], "prompt_id": 7, "category": "humanities", "reference": []}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [q] = load_questions(tmp_path / "q.jsonl")
    assert (q.question_id, q.turns, q.reference) == (7, ("Tell a joke.", "Another one."), None)


def test_a_math_question_without_reference_is_refused():
    with pytest.raises(UserError, match="reference"):
        load_questions(QUESTIONS)  # reasoning and coding references live in the separate file


@pytest.mark.parametrize("judgment,score", [
    ("Good answer. Rating: [[8]]", 8.0), ("Rating: [[6.5]]", 6.5), ("fallback [7]", 7.0),
    ("first [[3]] then [[9]]", 9.0), ("Rating: [[12]]", None), ("I refuse to rate this.", None), ("", None),
])
def test_parse_rating(judgment, score):
    assert parse_rating(judgment) == score


def test_end_to_end_with_a_tiny_chat_model(tmp_path):
    generate = chat_generator(save_tiny_chat_model(tmp_path / "model"), device="cpu", max_new_tokens=8)
    questions = load_questions(QUESTIONS, REFERENCES)

    def judge(body):
        return "Rating: [[4]]" if "second question" in user_text(body) else "Fine. [[8]]"

    with OpenAIStub(judge) as stub, one_torch_thread():
        summary = run_mt_bench(questions, generate, client(stub, tmp_path), tmp_path / "evals")
    assert (summary["score"], summary["score_turn1"], summary["score_turn2"]) == (6.0, 8.0, 4.0)
    assert summary["per_category"] == {"coding": 6.0, "math": 6.0, "reasoning": 6.0, "writing": 6.0}
    assert summary["n_missing"] == 0 and summary["calls"] == 8 and summary["n_questions"] == 4
    assert read_json(tmp_path / "evals" / "mt_bench.json") == summary
    records, problems = read_jsonl(tmp_path / "evals" / "mt_bench_samples.jsonl")
    assert len(records) == 8 and not problems
    prompts = {(r.body["messages"][1]["content"]) for r in stub.requests}
    for rec in records:
        [prompt] = [p for p in prompts if rec["question"] in p and ("second question" in p) == (rec["turn"] == 2)]
        assert rec["answer"] in prompt
        if rec["turn"] == 2:  # the second-turn judgment sees the model's own first answer
            first = next(r for r in records if r["question_id"] == rec["question_id"] and r["turn"] == 1)
            assert first["answer"] in prompt
        # reference answers are shown for math, reasoning and coding only
        assert ("Reference Answer" in prompt) == (rec["category"] in ("math", "reasoning", "coding"))
        assert (rec["reference"] is not None) == (rec["category"] in ("math", "reasoning", "coding"))


def test_unparseable_judgments_are_missing_not_zero(tmp_path):
    questions = load_questions(QUESTIONS, REFERENCES)

    def judge(body):  # rates writing only; everything else is unreadable
        return "[[9]]" if "postcard" in user_text(body) else "This answer is okay, I guess."

    with OpenAIStub(judge) as stub:
        summary = run_mt_bench(questions, lambda convs: ["an answer"] * len(convs), client(stub, tmp_path),
                               tmp_path)
    assert summary["n_missing"] == 6
    assert summary["score"] == 9.0 and summary["per_category"]["math"] is None


def after(text: str, marker: str) -> str:
    return text.rsplit(marker, 1)[1]


def test_a_null_model_scores_low_against_references(tmp_path):
    questions = [q for q in load_questions(QUESTIONS, REFERENCES) if q.reference]

    def judge(body):  # a sane grader: full marks when the answer contains the reference answer of its turn
        text = user_text(body)
        last = "### Assistant:" in text  # the second turn shows the dialogue; grade its last answer
        reference = after(text, "### Reference answer:\n" if last else "[The Start of Reference Answer]\n")
        answer = after(text, "### Assistant:\n" if last else "[The Start of Assistant's Answer]\n")
        return "[[10]]" if reference.split("\n")[0] in answer else "[[1]]"

    def oracle(convs):  # one conversation message means turn 1, three mean turn 2
        refs = {q.turns[0]: q.reference for q in questions}
        return [refs[c[0]["content"]][len(c) // 2] for c in convs]

    with OpenAIStub(judge) as stub:
        null = run_mt_bench(questions, lambda convs: ["I do not know."] * len(convs), client(stub, tmp_path),
                            tmp_path / "null")
        good = run_mt_bench(questions, oracle, client(stub, tmp_path), tmp_path / "good")
    assert null["score"] == 1.0 and null["n_missing"] == 0
    assert good["score"] == 10.0
