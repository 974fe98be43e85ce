"""MT-Bench: 80 two-turn questions in 8 categories, each turn graded 1-10 by an LLM judge (Zheng et al. 2023).

fschat's judge code targets the pre-1.0 openai API and its wheel ships no questions, so this is a small grader on the
current client (`evals.judge.CompletionClient`: cached, retried, concurrent). Questions come from a JSONL file in
FastChat's format (`question_id`, `category`, `turns`, optional `reference`; reference answers may also come from
FastChat's separate `reference_answer/gpt-4.jsonl`) or from the hub (HuggingFaceH4/mt_bench_prompts: `prompt`,
`prompt_id`, `category`, `reference`). Math, reasoning and coding are graded against reference answers, as in the
paper. A judgment without a readable "[[x]]" (or "[x]") rating is missing, never zero: the scores average what was
graded and `n_missing` says how much was not.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Callable

from evals.judge import CompletionClient, template_hash
from harness.core.errors import UserError
from harness.core.store import write_json, write_jsonl

HUB_DATASET = "HuggingFaceH4/mt_bench_prompts"
NEEDS_REFERENCE = ("math", "reasoning", "coding")

# The judge prompts, written for this project after the paper's description of single-answer grading.
SYSTEM = "You are a careful and impartial judge of answers written by AI assistants."
GENERAL = ("Judge the quality of the AI assistant's {which} below. Weigh helpfulness, relevance, accuracy, depth, "
           "creativity and level of detail.")
WITH_REFERENCE = ("Judge the correctness and helpfulness of the AI assistant's {which} below. A reference answer is "
                  "given: compare the assistant's answer with it and point out any mistakes.")
RATING = ('Start with a short, objective explanation. Then rate the answer on a scale of 1 to 10, written exactly '
          'as "[[rating]]", for example "Rating: [[5]]".')
TEMPLATES = (SYSTEM, GENERAL, WITH_REFERENCE, RATING)

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass(frozen=True)
class Question:
    question_id: int | str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None


def load_questions(source: str | Path = HUB_DATASET, reference_path: str | Path | None = None) -> list[Question]:
    """Questions from a JSONL path (FastChat format) or a hub data set, with references where a category needs them."""
    if Path(source).exists():
        rows = [json.loads(line) for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        import datasets

        from harness.core.assets import Asset, require
        require([Asset("MT-Bench questions and reference answers", "dataset", str(source), splits=("train",))],
                "python -m harness prepare --suite chat")
        rows = list(datasets.load_dataset(str(source), split="train"))
    references = {}
    if reference_path is not None:  # FastChat: {"question_id", "choices": [{"turns": [...]}]}
        for line in Path(reference_path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                references[row["question_id"]] = row["choices"][0]["turns"]
    questions = []
    for row in rows:
        qid = row.get("question_id", row.get("prompt_id"))
        reference = references.get(qid) or row.get("reference") or None
        q = Question(qid, row["category"], tuple(row.get("turns") or row["prompt"]),
                     tuple(reference) if reference else None)
        if q.category in NEEDS_REFERENCE and q.reference is None:
            raise UserError(f"MT-Bench question {qid} ({q.category}) has no reference answer: pass the reference "
                            f"answers file (FastChat's reference_answer/gpt-4.jsonl)")
        questions.append(q)
    return questions


def generate_answers(questions: list[Question], generate: Callable[[list[list[dict]]], list[str]]) -> list[list[str]]:
    """Both turns: the second turn's conversation carries the model's own first answer."""
    first = generate([[{"role": "user", "content": q.turns[0]}] for q in questions])
    second = generate([[{"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": a},
                        {"role": "user", "content": q.turns[1]}] for q, a in zip(questions, first)])
    return [[a1, a2] for a1, a2 in zip(first, second)]


def grading_messages(q: Question, answers: list[str], turn: int) -> list[dict]:
    """Judge conversation for turn `turn` (0-based): turn 1 alone, or the whole dialogue for turn 2."""
    which = "answer to the user's question" if turn == 0 else "answer to the user's second question"
    reference = q.reference if q.category in NEEDS_REFERENCE else None
    instruction = (WITH_REFERENCE if reference else GENERAL).format(which=which) + " " + RATING
    if turn == 0:
        parts = [f"[Question]\n{q.turns[0]}"]
        if reference:
            parts.append(f"[The Start of Reference Answer]\n{reference[0]}\n[The End of Reference Answer]")
        parts.append(f"[The Start of Assistant's Answer]\n{answers[0]}\n[The End of Assistant's Answer]")
    else:
        parts = []
        if reference:
            parts.append("<|The Start of Reference Answer|>\n\n" + "\n\n".join(
                f"### User:\n{q.turns[t]}\n\n### Reference answer:\n{reference[t]}" for t in range(2))
                + "\n\n<|The End of Reference Answer|>")
        parts.append("<|The Start of Assistant's Conversation with User|>\n\n" + "\n\n".join(
            f"### User:\n{q.turns[t]}\n\n### Assistant:\n{answers[t]}" for t in range(2))
            + "\n\n<|The End of Assistant's Conversation with User|>")
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"[Instruction]\n{instruction}\n\n" + "\n\n".join(parts)}]


def parse_rating(judgment: str) -> float | None:
    """The last [[x]] rating (else the last [x]); None when absent or outside 1-10."""
    found = _RATING.findall(judgment or "") or _RATING_FALLBACK.findall(judgment or "")
    if not found:
        return None
    rating = float(found[-1])
    return rating if 1 <= rating <= 10 else None


def grade(questions: list[Question], answers: list[list[str]], judge: CompletionClient) -> tuple[dict, list[dict]]:
    """(summary, per-turn records). Scores are means over graded turns: overall, per turn and per category."""
    slots = [(q, a, t) for q, a in zip(questions, answers) for t in range(2)]
    judgments, usage = judge.complete_many([grading_messages(q, a, t) for q, a, t in slots],
                                           template_hash("\n".join(TEMPLATES)))
    records = [{"question_id": q.question_id, "category": q.category, "turn": t + 1, "question": q.turns[t],
                "answer": a[t], "reference": q.reference[t] if q.reference and q.category in NEEDS_REFERENCE else None,
                "judgment": j, "score": parse_rating(j)} for (q, a, t), j in zip(slots, judgments)]

    def avg(rs: list[dict]) -> float | None:
        scores = [r["score"] for r in rs if r["score"] is not None]
        return mean(scores) if scores else None

    categories = sorted({r["category"] for r in records})
    summary = {"score": avg(records), "score_turn1": avg([r for r in records if r["turn"] == 1]),
               "score_turn2": avg([r for r in records if r["turn"] == 2]),
               "per_category": {c: avg([r for r in records if r["category"] == c]) for c in categories},
               "n_questions": len(questions), "n_missing": sum(r["score"] is None for r in records),
               "judge": judge.endpoint.model, **usage.as_dict()}
    return summary, records


def run_mt_bench(questions: list[Question], generate: Callable[[list[list[dict]]], list[str]],
                 judge: CompletionClient, output_dir: Path | str) -> dict:
    """Generate both turns, grade them, write `mt_bench.json` and `mt_bench_samples.jsonl` into output_dir."""
    summary, records = grade(questions, generate_answers(questions, generate), judge)
    write_json(Path(output_dir) / "mt_bench.json", summary)
    write_jsonl(Path(output_dir) / "mt_bench_samples.jsonl", records)
    return summary
