"""The TL;DR prompt: the template the paper's data uses ("SUBREDDIT: r/...\n\nTITLE: ...\n\nPOST: ...\n\nTL;DR:")
and the authors' truncation of a post too long for the prompt budget. Its rows are TldrExamples."""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import UserError
from harness.core.examples import Example

PROMPT_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
TRUNCATION_RULES = ("newline", "words")


def format_prompt(subreddit: str, title: str, post: str) -> str:
    return PROMPT_TEMPLATE.format(subreddit=subreddit, title=title, post=post)


@dataclass
class TldrExample(Example):
    """A TL;DR row: the post's parts (rendered by PROMPT_TEMPLATE) and, on the synthetic stand-in, the key facts its
    gold reward checks."""

    subreddit: str = ""
    title: str = ""
    post: str = ""
    facts: dict | None = None

    @property
    def prompt(self) -> str:
        return format_prompt(self.subreddit, self.title, self.post)

    def prompt_string(self, tokenizer) -> str | None:
        return self.prompt

    def encode_prompt(self, tokenizer, max_tokens: int, rule: str = "newline") -> list[int]:
        return truncate_post(self, tokenizer, max_tokens, rule)


def truncate_post(example: TldrExample, tokenizer, max_tokens: int, rule: str = "newline") -> list[int]:
    """Token ids of the prompt, at most `max_tokens`, always ending in "\\n\\nTL;DR:".

    Too long: the END of the post is dropped. rule "newline" (default) is the authors' preprocessing: cut at the
    post's last "\\n" until it fits, then character by character (`_newline_cut`); "words" keeps the longest run
    of whole words. The authors' code fails on a post that cannot fit even when empty; here a title that alone is
    too long loses its end too (and the whole post). A limit that cannot hold even an empty title and post is a
    UserError.
    """
    if rule not in TRUNCATION_RULES:
        raise UserError(f"unknown prompt truncation rule {rule!r}; valid rules: {', '.join(TRUNCATION_RULES)}")

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
