"""The types every task shares: one prompt with its references (Example), a task's splits (TaskData), the gold
reward a synthetic task may carry (Gold), the exact reward a verifiable task carries instead of a reward model
(TaskReward), and how a prompt becomes at most N token ids (Example.encode_prompt).

The backbone reads tasks only through these: it never knows which task produced an Example.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from harness.core.errors import UserError


class TaskReward(Protocol):
    """A verifiable task's reward: a checker that scores a response exactly (1.0 right, 0.0 wrong), used in place
    of a reward model (no reward model is loaded). The missing-EOS rule is the backbone's, applied after it."""

    name: str  # for the run's record, e.g. "exact-match checker"

    def __call__(self, text: str, example: "Example") -> float: ...


def score_texts(reward: TaskReward, texts: list[str], examples: list["Example"]) -> list[float]:
    """The task reward of each response (examples[i] is the prompt of texts[i]): one batched call when the reward
    scores batches (`reward.scores`, e.g. reward functions that call a server), else one call per response."""
    batched = getattr(reward, "scores", None)
    if batched is not None:
        return [float(x) for x in batched(texts, examples)]
    return [float(reward(t, ex)) for t, ex in zip(texts, examples)]


class Gold(Protocol):
    """A task's programmatic gold reward (the synthetic stand-in's): what an ideal labeller would score."""

    def __call__(self, text: str, example: "Example", terminated: bool = True) -> float: ...

    def preference(self, gold_a: float, gold_b: float) -> float:
        """P(a > b) by the task's simulated labellers, from two gold rewards."""
        ...


@dataclass
class Example:
    """One prompt with its references: a prompt (plain `text`, chat `messages`, or both), an optional reference
    response, an optional chosen/rejected pair. A task's own fields (the ground truth its reward checks, the parts
    its prompt template renders) live in its subclass, which may also render and truncate the prompt its own way
    (`prompt`, `prompt_string`, `encode_prompt`); the backbone uses only what this class declares."""

    text: str | None = None  # a prompt used verbatim; with `messages` too, the rendering for tokenizers without a
    # chat template
    messages: list[dict] | None = None  # chat tasks: the conversation so far
    reference: str | None = None
    chosen: str | None = None
    rejected: str | None = None

    @property
    def prompt(self) -> str:
        """The prompt as text (what a judge and the samples file show)."""
        if self.text is not None:
            return self.text
        return self.messages[-1]["content"] if self.messages else ""

    def uses_chat_template(self, tokenizer) -> bool:
        return self.messages is not None and (self.text is None or bool(getattr(tokenizer, "chat_template", None)))

    def prompt_string(self, tokenizer) -> str | None:
        """The string `encode_prompt` encodes when it fits, or None when a chat template renders the prompt."""
        return None if self.uses_chat_template(tokenizer) else self.prompt

    def encode_prompt(self, tokenizer, max_tokens: int, rule: str = "newline") -> list[int]:
        """Token ids of the prompt, at most `max_tokens`. Chat messages are rendered with the tokenizer's chat
        template (preferred to `text` when the tokenizer has one); a prompt over the limit keeps its last
        `max_tokens` tokens (its answer cue). `rule` is for subclasses that cut their own way."""
        if self.uses_chat_template(tokenizer):
            text = tokenizer.apply_chat_template(self.messages, tokenize=False, add_generation_prompt=True)
        else:
            text = self.prompt
        return tokenizer.encode(text, add_special_tokens=False)[-max_tokens:]

    def record(self) -> dict:
        """The task's own fields for a samples file (e.g. the answer a checker compares with); none here."""
        return {}


@dataclass
class TaskData:
    source: str  # "synthetic", "hub" or the local path
    sft_train: list[Example]
    sft_eval: list[Example]
    pref_train: list[Example]
    pref_eval: list[Example]
    gold: Gold | None = None  # the task's gold reward, when it has one (the synthetic stand-in)
    reward: TaskReward | None = None  # a verifiable task's checker: scores responses instead of a reward model
    sft_test: list[Example] = field(default_factory=list)  # the paper's win rates are on the test split
    test_note: str | None = None  # set when there is no test split: says evaluation uses validation instead
    fingerprint: str | None = None  # the content of a task file's data and reward code, part of cache keys

    def __post_init__(self):
        if not self.sft_test and self.test_note is None:
            self.test_note = f"{self.source} has no test split: evaluation prompts come from the validation split"


EVAL_SPLITS = ("test", "validation")
EVAL_SELECTIONS = ("random", "first")


def eval_examples(data: TaskData, n: int, split: str = "test", selection: str = "random",
                  seed: int = 0) -> list[Example]:
    """The evaluation prompts: n of the split (all if it has fewer), a seeded random subset in split order
    (the paper: 600 random test prompts) or the first n. No test split: validation (see `data.test_note`)."""
    if split not in EVAL_SPLITS or selection not in EVAL_SELECTIONS:
        raise UserError(f"evaluation split must be one of {', '.join(EVAL_SPLITS)} and selection one of "
                        f"{', '.join(EVAL_SELECTIONS)}; got split={split!r}, selection={selection!r}")
    if n < 1:
        raise UserError(f"the number of evaluation prompts must be at least 1, got {n}")
    pool = data.sft_test if split == "test" and data.sft_test else data.sft_eval
    if selection == "first":
        return pool[:n]
    return [pool[i] for i in eval_indices(len(pool), n, seed)]


def eval_indices(size: int, n: int, seed: int) -> list[int]:
    """Sorted indices of a seeded random n-subset of range(size); random.Random(int) is the same in every process
    and platform, and a larger n keeps the smaller n's prompts (a prefix of one shuffle)."""
    order = list(range(size))
    random.Random(seed).shuffle(order)
    return sorted(order[:n])
