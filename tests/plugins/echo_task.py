"""A test-only task: repeat the prompt's words. Its reward is a scorer (the share of the prompt's words the
response repeats), so no reward model is loaded; its runs are evaluated by the `length` suite of this folder."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from harness.core.examples import Example, TaskData
from harness.tasks import Task, register

# words the tiny TL;DR policy says now and then, so that rewards are not all zero
WORDS = ("my", "dog", "car", "sister", "dad", "coworker", "help.", "anyway.", "i", "what", "think.", "idk.")


@dataclass
class EchoExample(Example):
    words: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {"words": self.words}


@dataclass(frozen=True)
class WordOverlap:
    name: str = "word-overlap scorer"

    def __call__(self, text: str, example: EchoExample) -> float:
        said = set(text.lower().split())
        return sum(w in said for w in example.words) / len(example.words)


def rows(n: int, seed: int) -> list[EchoExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(WORDS, 3)
        out.append(EchoExample(text=f"Repeat: {' '.join(words)}\nAnswer:", reference=" " + " ".join(words),
                               words=words))
    return out


def load(source: str, dataset: str | None = None, preference_dataset: str | None = None) -> tuple[str, TaskData]:
    return "generated", TaskData(source="generated", sft_train=rows(64, 0), sft_eval=rows(16, 1), pref_train=[],
                                 pref_eval=[], sft_test=rows(16, 2), reward=WordOverlap())


register(Task("echo", "repeat the prompt's words (a test plugin)", load, preset="tiny-test", checker=True,
              suite="length", offline_sources=("auto", "generated")))
