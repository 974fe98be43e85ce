"""The types every task shares: one prompt with its references (Example), a task's splits (TaskData), the gold
reward a synthetic task may carry (Gold), the exact reward a verifiable task carries instead of a reward model
(TaskReward), and how a prompt becomes at most N token ids (truncate_prompt).

The backbone reads tasks only through these: it never knows which task produced an Example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from harness.errors import UserError

PROMPT_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
TRUNCATION_RULES = ("newline", "words")


class TaskReward(Protocol):
    """A verifiable task's reward: a checker that scores a response exactly (1.0 right, 0.0 wrong), used in place
    of a reward model (no reward model is loaded). The missing-EOS rule is the backbone's, applied after it."""

    name: str  # for the run's record, e.g. "exact-match checker"

    def __call__(self, text: str, example: "Example") -> float: ...


class Gold(Protocol):
    """A task's programmatic gold reward (the synthetic stand-in's): what an ideal labeller would score."""

    def __call__(self, text: str, example: "Example", terminated: bool = True) -> float: ...

    def preference(self, gold_a: float, gold_b: float) -> float:
        """P(a > b) by the task's simulated labellers, from two gold rewards."""
        ...


@dataclass
class Example:
    """One prompt with its human reference summary (and, for preference rows, a chosen/rejected pair).

    TL;DR rows carry subreddit/title/post; chat rows carry `messages` (rendered by the tokenizer's chat template).
    """

    subreddit: str = ""
    title: str = ""
    post: str = ""
    reference: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    facts: dict | None = None  # what the task's gold reward checks (the synthetic stand-in's rows)
    messages: list[dict] | None = None  # chat tasks: the conversation so far
    plain_prompt: str | None = None  # a prompt used verbatim (no TL;DR template); with `messages` too, this is the
    # rendering for tokenizers without a chat template (truncate_prompt)
    answer: int | float | None = None  # the ground truth a verifiable task's checker compares with

    @property
    def prompt(self) -> str:
        if self.plain_prompt is not None:
            return self.plain_prompt
        if self.messages is not None:
            return self.messages[-1]["content"]
        return format_prompt(self.subreddit, self.title, self.post)


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

    def __post_init__(self):
        if not self.sft_test and self.test_note is None:
            self.test_note = f"{self.source} has no test split: evaluation prompts come from the validation split"


def format_prompt(subreddit: str, title: str, post: str) -> str:
    return PROMPT_TEMPLATE.format(subreddit=subreddit, title=title, post=post)


def truncate_prompt(example: Example, tokenizer, max_tokens: int, rule: str = "newline") -> list[int]:
    """Token ids of the prompt, at most `max_tokens`, always ending in "\\n\\nTL;DR:".

    Too long: the END of the post is dropped. rule "newline" (default) is the authors' preprocessing: cut at the
    post's last "\\n" until it fits, then character by character (`_newline_cut`); "words" keeps the longest run
    of whole words. The authors' code fails on a post that cannot fit even when empty; here a title that alone is
    too long loses its end too (and the whole post). A limit that cannot hold even an empty title and post is a
    UserError. Chat prompts are rendered with the chat template; one over the limit keeps its last `max_tokens`
    tokens. A plain prompt (`Example.plain_prompt`) is used verbatim, and so is preferred to `messages` when the
    tokenizer has no chat template; one over the limit keeps its last `max_tokens` tokens too (its answer cue).
    """
    if rule not in TRUNCATION_RULES:
        raise UserError(f"unknown prompt truncation rule {rule!r}; valid rules: {', '.join(TRUNCATION_RULES)}")
    if example.messages is not None and (example.plain_prompt is None or getattr(tokenizer, "chat_template", None)):
        text = tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)[-max_tokens:]
    if example.plain_prompt is not None:
        return tokenizer.encode(example.plain_prompt, add_special_tokens=False)[-max_tokens:]

    def encode(title: str, post: str) -> list[int]:
        return tokenizer.encode(format_prompt(example.subreddit, title, post), add_special_tokens=False)

    def fits(title: str, post: str) -> bool:
        return len(encode(title, post)) <= max_tokens

    ids = encode(example.title, example.post)
    if len(ids) <= max_tokens:
        return ids
    if fits(example.title, ""):
        cut = _newline_cut if rule == "newline" else _longest_fitting_prefix
        return encode(example.title, cut(example.post, lambda p: fits(example.title, p)))
    if not fits("", ""):
        need = len(encode("", ""))
        raise UserError(f"max_prompt_tokens={max_tokens} cannot hold even an empty post and title (the prompt "
                        f"template with subreddit {example.subreddit!r} needs {need} tokens); raise "
                        f"task.max_prompt_tokens to at least {need}")
    return encode(_longest_fitting_prefix(example.title, lambda t: fits(t, "")), "")


CHAR_WINDOW = 32  # characters re-checked above the bisection point (see _newline_cut)


def _newline_cut(post: str, fits) -> str:
    """The authors' truncation (summarize_from_feedback_details tldr_dataset.py `process_query`, after OpenAI's
    tasks.py): while the prompt is too long, drop the post from its last "\\n" on; with no "\\n" left, drop one
    character at a time. `fits("")` is known to hold.

    Their character loop stops at the longest fitting prefix; bisection finds the same one where token counts
    grow with length, and the window above it re-checks the few characters where a BPE merge can make them dip.
    """
    while not fits(post):
        i = post.rfind("\n")
        if i < 0:
            break
        post = post[:i]
    else:
        return post
    k = _largest(len(post), lambda k: fits(post[:k]))
    return next((post[:j] for j in range(min(len(post), k + CHAR_WINDOW), k, -1) if fits(post[:j])), post[:k])


def _longest_fitting_prefix(text: str, fits) -> str:
    """The longest prefix of `text` in whole words for which `fits` holds; in characters when not even one word
    fits (a long URL, or a language written without spaces, would otherwise vanish whole)."""
    words = text.split(" ")
    kept = " ".join(words[: _largest(len(words), lambda k: fits(" ".join(words[:k])))])
    if kept.strip() or not text.strip():
        return kept
    return text[: _largest(len(text), lambda k: fits(text[:k]))]


def _largest(hi: int, ok) -> int:
    """Largest k in [0, hi] with ok(k), by bisection (ok(0) is known to hold; token counts grow with k)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo
