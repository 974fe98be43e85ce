"""TL;DR summarisation (Stiennon et al. 2020, as preprocessed for the REBEL paper's code).

Data sources: the hub data sets the paper's code uses, a local directory in the same (flat) schema, or the
synthetic stand-in (harness.tasks.synthetic), which also carries a gold reward for offline win rates.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
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
    """Token ids of the prompt, shortened by dropping the END of the post so that "\\n\\nTL;DR:" survives.

    Chat prompts are rendered with the chat template; one over the limit keeps its last `max_tokens` tokens.
    """
    if example.messages is not None:
        text = tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)[-max_tokens:]
    ids = tokenizer.encode(example.prompt, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return ids
    words = example.post.split(" ")
    lo, hi = 0, len(words)  # largest number of post words that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        n = len(tokenizer.encode(format_prompt(example.subreddit, example.title, " ".join(words[:mid])),
                                 add_special_tokens=False))
        lo, hi = (mid, hi) if n <= max_tokens else (lo, mid - 1)
    ids = tokenizer.encode(format_prompt(example.subreddit, example.title, " ".join(words[:lo])),
                           add_special_tokens=False)
    if len(ids) > max_tokens:
        raise UserError(f"max_prompt_tokens={max_tokens} cannot hold even an empty post of this task "
                        f"(needs {len(ids)} tokens); raise task.max_prompt_tokens")
    return ids


def example_from_row(row: dict, where: str) -> Example:
    """Flat schema {subreddit, title, post, summary | chosen/rejected}; the hub's nested `info` is accepted too."""
    info = row.get("info") or row
    try:
        ex = Example(subreddit=str(info["subreddit"]), title=str(info["title"]), post=str(info["post"]),
                     reference=row.get("summary"), chosen=row.get("chosen"), rejected=row.get("rejected"),
                     facts=row.get("facts"))
    except (KeyError, TypeError) as e:
        raise UserError(f"{where}: row lacks field {e}; expected subreddit, title, post and summary or "
                        f"chosen/rejected (see docs/data.md)") from None
    if ex.chosen is None and "summaries" in row and "choice" in row:  # hub preference rows
        texts = [s["text"] for s in row["summaries"]]
        ex.chosen, ex.rejected = texts[row["choice"]], texts[1 - row["choice"]]
    return ex


def _read_local(path: Path) -> dict[str, list[Example]]:
    out = {}
    for split, name in LOCAL_FILES.items():
        f = path / name
        if not f.exists():
            raise UserError(f"data directory {path} lacks {name}; expected files: {', '.join(LOCAL_FILES.values())}")
        rows = []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(example_from_row(json.loads(line), f"{f}:{n}"))
            except json.JSONDecodeError as e:
                raise UserError(f"{f}:{n} is not valid JSON ({e.msg}); fix or delete that line") from None
        if not rows:
            raise UserError(f"{f} has no rows")
        out[split] = rows
    return out


def _synthetic_rows() -> dict[str, list[dict]]:
    """The stand-in's fixed splits: each split has its own generator seed, so they never share a post."""
    return {split: synthetic.generate(n, seed=i) for i, (split, n) in enumerate(SYNTHETIC_SIZES.items())}


def _synthetic() -> dict[str, list[Example]]:
    return {split: [example_from_row(r, "synthetic") for r in rows] for split, rows in _synthetic_rows().items()}


def _hub() -> dict[str, list[Example]]:
    import datasets

    def load(name, split):
        return [example_from_row(r, f"{name}[{split}]") for r in datasets.load_dataset(name, split=split)]

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
