"""TL;DR summarisation (Stiennon et al. 2020, as preprocessed for the REBEL paper's code).

Data sources: the hub data sets the paper's code uses, a local directory in the same (flat) schema, or the
synthetic stand-in (harness.tasks.synthetic), which also carries a gold reward for offline win rates.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.errors import UserError
from harness.tasks import synthetic

PROMPT_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
HUB_SFT = "vwxyzjn/summarize_from_feedback_tldr_3_filtered_oai_preprocessing_1706381144"
HUB_PREFERENCE = "vwxyzjn/summarize_from_feedback_oai_preprocessing_1706381144"
LOCAL_FILES = {"sft_train": "sft_train.jsonl", "sft_eval": "sft_validation.jsonl",
               "pref_train": "preference_train.jsonl", "pref_eval": "preference_validation.jsonl"}
SYNTHETIC_SIZES = {"sft_train": 20000, "sft_eval": 1000, "pref_train": 20000, "pref_eval": 1000}


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
    facts: dict | None = None  # stand-in only: what the gold reward checks
    messages: list[dict] | None = None  # chat tasks: the conversation so far

    @property
    def prompt(self) -> str:
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
    has_gold: bool = field(default=False)


def format_prompt(subreddit: str, title: str, post: str) -> str:
    return PROMPT_TEMPLATE.format(subreddit=subreddit, title=title, post=post)


def truncate_prompt(example: Example, tokenizer, max_tokens: int) -> list[int]:
    """Token ids of the prompt, at most `max_tokens`, always ending in "\\n\\nTL;DR:".

    Too long: the END of the post is dropped; a title that alone is too long loses its end too (and the whole post).
    A limit that cannot hold even an empty title and post is a UserError.
    Chat prompts are rendered with the chat template; one over the limit keeps its last `max_tokens` tokens.
    """
    if example.messages is not None:
        text = tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)[-max_tokens:]

    def encode(title: str, post: str) -> list[int]:
        return tokenizer.encode(format_prompt(example.subreddit, title, post), add_special_tokens=False)

    def fits(title: str, post: str) -> bool:
        return len(encode(title, post)) <= max_tokens

    ids = encode(example.title, example.post)
    if len(ids) <= max_tokens:
        return ids
    if fits(example.title, ""):
        return encode(example.title, _longest_fitting_prefix(example.post, lambda p: fits(example.title, p)))
    if not fits("", ""):
        need = len(encode("", ""))
        raise UserError(f"max_prompt_tokens={max_tokens} cannot hold even an empty post and title (the prompt "
                        f"template with subreddit {example.subreddit!r} needs {need} tokens); raise "
                        f"task.max_prompt_tokens to at least {need}")
    return encode(_longest_fitting_prefix(example.title, lambda t: fits(t, "")), "")


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


ROW_FIELDS = {"sft": ("summary",), "preference": ("chosen", "rejected")}  # besides subreddit, title, post
FACT_FIELDS = {f.name for f in fields(synthetic.Facts)}


def split_kind(split: str) -> str:
    """Which fields the rows of a split need: "sft" (a reference summary) or "preference" (a pair)."""
    return "sft" if split.startswith("sft") else "preference"


def example_from_row(row: dict, where: str, kind: str | None = None) -> Example:
    """Flat schema {subreddit, title, post, summary | chosen/rejected}; the hub's nested `info`/`summaries`/`choice`
    is accepted too. kind "sft" requires a summary, "preference" a chosen/rejected pair (None: neither).

    Texts that are trained on or summarised (post, summary, chosen, rejected) must be non-empty strings: an empty
    one would silently become a prompt without a post, or an SFT target / preference made of EOS alone.
    """
    if not isinstance(row, dict):
        raise UserError(f"{where}: a row must be a JSON object, got {type(row).__name__}; {_expected(kind)}")
    info = row["info"] if isinstance(row.get("info"), dict) else row
    values = {k: info.get(k) for k in ("subreddit", "title", "post")}
    values.update({k: row.get(k) for k in ("summary", "chosen", "rejected")})
    if values["chosen"] is None and "summaries" in row and "choice" in row:  # hub preference rows
        values["chosen"], values["rejected"] = _hub_pair(row, where, kind)
    problem = _row_problem(values, ROW_FIELDS.get(kind, ()), row.get("facts"))
    if problem:
        raise UserError(f"{where}: {problem}; {_expected(kind)}")
    return Example(subreddit=str(values["subreddit"]), title=str(values["title"]), post=values["post"],
                   reference=values["summary"], chosen=values["chosen"], rejected=values["rejected"],
                   facts=row.get("facts"))


def _row_problem(values: dict, required: tuple[str, ...], facts) -> str | None:
    """What is wrong with one row's fields, in words, or None."""
    missing = [k for k in ("subreddit", "title", "post", *required) if values[k] is None]
    if missing:
        also = f" (also {', '.join(repr(k) for k in missing[1:])})" if missing[1:] else ""
        return f"row lacks field {missing[0]!r}{also}"
    for k in ("post", *required):
        if not isinstance(values[k], str):
            return f"{k!r} must be a string, got {type(values[k]).__name__}"
        if not values[k].strip():
            return f"{k!r} is empty"
    if facts is not None and not (isinstance(facts, dict) and set(facts) == FACT_FIELDS):
        return f"'facts' must be an object with keys {', '.join(sorted(FACT_FIELDS))} (or be left out)"
    return None


def _hub_pair(row: dict, where: str, kind: str | None) -> tuple[str, str]:
    """(chosen, rejected) of a hub comparison row: two `summaries` and the index of the preferred one."""
    try:
        texts = [s["text"] for s in row["summaries"]]
        choice = row["choice"]
        if len(texts) != 2 or choice not in (0, 1):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: 'summaries' must hold two {{'text': ...}} objects and 'choice' must be 0 or 1; "
                        f"{_expected(kind)}") from None
    return texts[choice], texts[1 - choice]


def _expected(kind: str | None) -> str:
    """What a row of this kind needs, and what to do about a bad one."""
    what = {"sft": "an SFT row needs subreddit, title, post and summary (the last two non-empty)",
            "preference": "a preference row needs subreddit, title, post, chosen and rejected (the last three "
                          "non-empty)"}.get(kind, "a row needs subreddit, title and post (non-empty)")
    return f"{what}: fix or delete that row"


def _read_local(path: Path) -> dict[str, list[Example]]:
    out = {}
    for split, name in LOCAL_FILES.items():
        f = path / name
        if not f.exists():
            raise UserError(f"data directory {path} lacks {name}; expected files: {', '.join(LOCAL_FILES.values())}")
        out[split] = _read_split(f, split_kind(split))
    return out


def _read_split(f: Path, kind: str) -> list[Example]:
    try:
        text = f.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark from an editor is not a JSON error
    except UnicodeDecodeError as e:
        raise UserError(f"{f} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit unescaped inside a string
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{f}:{n} is not valid JSON ({e.msg}); fix or delete that line") from None
        rows.append(example_from_row(row, f"{f}:{n}", kind))
    if not rows:
        raise UserError(f"{f} has no rows; write one JSON object per line (export_synthetic writes a template)")
    return rows


def _synthetic_rows() -> dict[str, list[dict]]:
    """The stand-in's fixed splits: each split has its own generator seed, so they never share a post."""
    return {split: synthetic.generate(n, seed=i) for i, (split, n) in enumerate(SYNTHETIC_SIZES.items())}


def _synthetic() -> dict[str, list[Example]]:
    return {split: [example_from_row(r, "synthetic", split_kind(split)) for r in rows]
            for split, rows in _synthetic_rows().items()}


def _hub() -> dict[str, list[Example]]:
    import datasets

    def load(name, split):
        kind = "sft" if name == HUB_SFT else "preference"
        return [example_from_row(r, f"{name}[{split}] row {i}", kind)
                for i, r in enumerate(datasets.load_dataset(name, split=split))]

    return {"sft_train": load(HUB_SFT, "train"), "sft_eval": load(HUB_SFT, "validation"),
            "pref_train": load(HUB_PREFERENCE, "train"), "pref_eval": load(HUB_PREFERENCE, "validation")}


def hub_reachable(timeout: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(HUB_SFT, timeout=timeout)
        return True
    except Exception:  # any failure (DNS, proxy, HTTP) means "not reachable" for the purpose of `auto`
        return False


def resolve_source(source: str) -> str:
    if source == "auto":
        if hub_reachable():
            return "hub"
        print("!! The Hugging Face hub is not reachable: using the SYNTHETIC TL;DR stand-in (offline data with a "
              "programmatic gold reward). Numbers are not comparable with the paper's.", file=sys.stderr)
        return "synthetic"
    if source in ("hub", "synthetic"):
        return source
    if not Path(source).is_dir():
        raise UserError(f"task.source must be auto, hub, synthetic or an existing directory; got {source!r}")
    return str(Path(source).resolve())


def load_task(source: str) -> TaskData:
    """The four splits of the resolved source (`resolve_source` first)."""
    splits = _synthetic() if source == "synthetic" else _hub() if source == "hub" else _read_local(Path(source))
    has_gold = all(ex.facts for ex in splits["sft_eval"])
    return TaskData(source=source, has_gold=has_gold, **splits)


def export_synthetic(path: Path) -> None:
    """Write the stand-in in the local-directory schema (handy as a template for your own data)."""
    from harness.store import write_jsonl

    path.mkdir(parents=True, exist_ok=True)
    for split, rows in _synthetic_rows().items():
        write_jsonl(path / LOCAL_FILES[split], rows)
