"""TL;DR summarisation (Stiennon et al. 2020, as preprocessed for the REBEL paper's code).

Data sources: the hub data sets the paper's code uses, a local directory in the same (flat) schema, or the
synthetic stand-in (harness.tasks.synthetic), which also carries a gold reward for offline win rates: `synthetic`
(its standard posts) or `synthetic-hard` (its hard profile: five key facts, longer posts, more distractors).

Response texts (reference, chosen, rejected) are held as " " + text with no EOS, whatever the source: the prompt
ends in "TL;DR:" and every sampled summary starts with a space token, and `encode_responses` appends the one EOS.
The hub's SFT `summary` lacks that space and its preference `chosen`/`rejected` already end in a literal
"<|endoftext|>" (see tests/fixtures/hub_tldr/README.md); `response_text` normalises both.
"""
from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from harness.core.assets import Asset, hub_reachable
from harness.core.errors import UserError
from harness.core.examples import Example, TaskData
from harness.tasks.tldr_prompt import TldrExample
from harness.tasks import Task, register
from harness.tasks import synthetic

HUB_SFT = "vwxyzjn/summarize_from_feedback_tldr_3_filtered_oai_preprocessing_1706381144"
HUB_PREFERENCE = "vwxyzjn/summarize_from_feedback_oai_preprocessing_1706381144"
# The splits the harness reads; the preference set's third split, validation_cnndm, holds CNN/DM news
# comparisons (not TL;DR) and is never loaded.
HUB_SPLITS = {"sft_train": (HUB_SFT, "train"), "sft_eval": (HUB_SFT, "validation"), "sft_test": (HUB_SFT, "test"),
              "pref_train": (HUB_PREFERENCE, "train"), "pref_eval": (HUB_PREFERENCE, "validation")}
CNNDM_BATCHES = ("batch0_cnndm", "cnndm0", "cnndm2")  # the authors' tldr_dataset.py moves these to validation_cnndm
HUB_EOS = "<|endoftext|>"  # appended literally to the hub's chosen/rejected/reference_response strings
LOCAL_FILES = {"sft_train": "sft_train.jsonl", "sft_eval": "sft_validation.jsonl",
               "pref_train": "preference_train.jsonl", "pref_eval": "preference_validation.jsonl"}
LOCAL_OPTIONAL = {"sft_test": "sft_test.jsonl"}  # absent: evaluation falls back to the validation split
# Insertion order fixes each split's generator seed (0, 1, ...): append new splits, never reorder (committed
# results depend on the first four being bit-identical).
SYNTHETIC_SIZES = {"sft_train": 20000, "sft_eval": 1000, "pref_train": 20000, "pref_eval": 1000, "sft_test": 1000}


SYNTHETIC_SOURCES = {"synthetic": "standard", "synthetic-hard": "hard"}  # task.source -> the stand-in's profile
POSTS_OF_SOURCE = {**SYNTHETIC_SOURCES, "auto": "standard"}  # auto: the standard posts are its offline fallback


def check_tiny_posts(cfg) -> None:
    """builtin:tiny is built on one profile of the synthetic posts (model.tiny.posts); a TL;DR run on the stand-in
    must train and evaluate on the same profile, or its SFT policy and reward model would meet posts they never saw
    and the run would measure that, not the optimizer. Hub and directory sources are the user's choice."""
    expected = POSTS_OF_SOURCE.get(cfg.task.source)
    if cfg.model.policy != "builtin:tiny" or expected in (None, cfg.model.tiny.posts):
        return
    means = "falls back to" if cfg.task.source == "auto" else "means"
    raise UserError(f"task.source {cfg.task.source} {means} the stand-in's {expected} posts, but model.tiny.posts is "
                    f"{cfg.model.tiny.posts}: the tiny model must be built on the posts it trains and evaluates on; "
                    f"use --preset tiny-hard for the hard posts, or set task.source and model.tiny.posts to match")



ROW_FIELDS = {"sft": ("summary",), "preference": ("chosen", "rejected")}  # besides subreddit, title, post
FACT_FIELDS = {f.name for f in fields(synthetic.Facts)}
REQUIRED_FACT_FIELDS = {f.name for f in fields(synthetic.Facts) if f.default is MISSING}  # a standard row's five


def synthetic_source(posts: str) -> str:
    """The task.source of the stand-in's profile `posts` ("standard" -> synthetic, "hard" -> synthetic-hard)."""
    return next(source for source, profile in SYNTHETIC_SOURCES.items() if profile == posts)


def split_kind(split: str) -> str:
    """Which fields the rows of a split need: "sft" (a reference summary) or "preference" (a pair)."""
    return "sft" if split.startswith("sft") else "preference"


def example_from_row(row: dict, where: str, kind: str | None = None) -> TldrExample:
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
    for k in ("summary", "chosen", "rejected"):
        if isinstance(values[k], str):
            values[k] = response_text(values[k])
    problem = _row_problem(values, ROW_FIELDS.get(kind, ()), row.get("facts"))
    if problem:
        raise UserError(f"{where}: {problem}; {_expected(kind)}")
    return TldrExample(subreddit=str(values["subreddit"]), title=str(values["title"]), post=values["post"],
                   reference=values["summary"], chosen=values["chosen"], rejected=values["rejected"],
                   facts=row.get("facts"))


def response_text(text: str) -> str:
    """A response as the harness holds it: a leading space (the hub's SFT `summary` has none; the stand-in's and
    the hub's comparison texts already do) and no trailing literal EOS (the hub's chosen/rejected end in one;
    `encode_responses` appends the single EOS)."""
    while text.endswith(HUB_EOS):
        text = text[: -len(HUB_EOS)]
    return text if text[:1].isspace() or not text else " " + text


def is_cnndm(row: dict) -> bool:
    """A CNN/DM news comparison (the hub preference set's validation_cnndm rows), not a TL;DR one."""
    info = row.get("info") if isinstance(row.get("info"), dict) else {}
    return row.get("batch") in CNNDM_BATCHES or (info.get("article") is not None and info.get("post") is None)


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
    if facts is not None and not (isinstance(facts, dict) and REQUIRED_FACT_FIELDS <= set(facts) <= FACT_FIELDS):
        optional = sorted(FACT_FIELDS - REQUIRED_FACT_FIELDS)
        return (f"'facts' must be an object with keys {', '.join(sorted(REQUIRED_FACT_FIELDS))} and optionally "
                f"{', '.join(optional)} (or be left out)")
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
            raise UserError(f"data directory {path} lacks {name}; expected files: {', '.join(LOCAL_FILES.values())} "
                            f"(optional: {', '.join(LOCAL_OPTIONAL.values())})")
        out[split] = _read_split(f, split_kind(split))
    for split, name in LOCAL_OPTIONAL.items():
        if (path / name).exists():
            out[split] = _read_split(path / name, split_kind(split))
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


def _synthetic_rows(profile: str = "standard") -> dict[str, list[dict]]:
    """The stand-in's fixed splits: each split has its own generator seed, so they never share a post."""
    return {split: synthetic.generate(n, seed=i, profile=profile)
            for i, (split, n) in enumerate(SYNTHETIC_SIZES.items())}


def _synthetic(source: str = "synthetic") -> dict[str, list[Example]]:
    return {split: [example_from_row(r, source, split_kind(split)) for r in rows]
            for split, rows in _synthetic_rows(SYNTHETIC_SOURCES[source]).items()}


def hub_examples(rows, name: str, split: str, shown: str | None = None) -> list[Example]:
    """Examples of one hub split (any iterable of row dicts, e.g. a datasets.Dataset); CNN/DM rows are left out.
    `name` is HUB_SFT or HUB_PREFERENCE (which schema), `shown` the data set actually read (for messages)."""
    shown = shown or name
    if name == HUB_PREFERENCE and split == "validation_cnndm":
        raise UserError(f"{shown}[{split}] holds CNN/DM news comparisons, not TL;DR; use the train or validation split")
    kind = "sft" if name == HUB_SFT else "preference"
    return [example_from_row(r, f"{shown}[{split}] row {i}", kind) for i, r in enumerate(rows) if not is_cnndm(r)]


def _hub(load=None, sft: str | None = None, preference: str | None = None) -> dict[str, list[Example]]:
    """The HUB_SPLITS, read from `sft` / `preference` (default HUB_SFT / HUB_PREFERENCE: the same schemas, e.g.
    the REBEL authors' earlier build of the SFT set); `load(name, split)` returns rows (default:
    datasets.load_dataset, which needs the hub)."""
    if load is None:
        import datasets

        def load(name, split):
            return datasets.load_dataset(name, split=split)

    names = {HUB_SFT: sft or HUB_SFT, HUB_PREFERENCE: preference or HUB_PREFERENCE}
    return {key: hub_examples(load(names[name], split), name, split, names[name])
            for key, (name, split) in HUB_SPLITS.items()}


def resolve_source(source: str) -> str:
    if source == "auto":
        if hub_reachable(HUB_SFT):
            return "hub"
        print("!! The Hugging Face hub is not reachable: using the SYNTHETIC TL;DR stand-in (offline data with a "
              "programmatic gold reward). Numbers are not comparable with the paper's.", file=sys.stderr)
        return "synthetic"
    if source == "hub" or source in SYNTHETIC_SOURCES:
        return source
    if not Path(source).is_dir():
        raise UserError(f"task.source must be auto, hub, synthetic or an existing directory (or synthetic-hard, the "
                        f"stand-in's hard posts); got {source!r}")
    return str(Path(source).resolve())


def load_task(source: str, dataset: str | None = None, preference_dataset: str | None = None) -> TaskData:
    """The splits of the resolved source (`resolve_source` first); on the hub, `dataset` / `preference_dataset`
    name the SFT and preference data sets (default HUB_SFT / HUB_PREFERENCE)."""
    if source == "hub":
        splits = _hub(sft=dataset, preference=preference_dataset)
    else:
        splits = _synthetic(source) if source in SYNTHETIC_SOURCES else _read_local(Path(source))
    with_facts = all(ex.facts for ex in splits["sft_eval"] + splits.get("sft_test", []))
    note = None if splits.get("sft_test") else (
        f"{source} has no {LOCAL_OPTIONAL['sft_test']}: evaluation prompts come from the validation split")
    return TaskData(source=source, gold=synthetic.StandInGold() if with_facts else None, test_note=note, **splits)


def export_synthetic(path: Path, profile: str = "standard") -> None:
    """Write the stand-in (of `profile`: standard or hard) in the local-directory schema (handy as a template for
    your own data)."""
    from harness.core.store import write_jsonl

    path.mkdir(parents=True, exist_ok=True)
    for split, rows in _synthetic_rows(profile).items():
        write_jsonl(path / {**LOCAL_FILES, **LOCAL_OPTIONAL}[split], rows)


def hub_assets(dataset: str | None = None, preference_dataset: str | None = None) -> list[Asset]:
    """The TL;DR hub splits the harness reads (harness.tasks.tldr.HUB_SPLITS), under the task's data set names."""
    names = {HUB_SFT: dataset or HUB_SFT, HUB_PREFERENCE: preference_dataset or HUB_PREFERENCE}
    splits: dict[str, list[str]] = {}
    for name, split in HUB_SPLITS.values():
        splits.setdefault(names[name], []).append(split)
    kind = {names[HUB_SFT]: "SFT prompts and references", names[HUB_PREFERENCE]: "preference pairs"}
    return [Asset(f"tldr {kind[n]}", "dataset", n, splits=tuple(s)) for n, s in splits.items()]


def _load(source: str, dataset: str | None = None, preference_dataset: str | None = None) -> tuple[str, TaskData]:
    resolved = resolve_source(source)
    return resolved, load_task(resolved, dataset, preference_dataset)


def _hub_data(settings) -> list[Asset]:
    """The hub data sets a source reads: `hub`, and `auto` while the hub is reachable (it falls back otherwise)."""
    if settings.source not in ("hub", "auto"):
        return []
    return hub_assets(settings.dataset, settings.preference_dataset)


register(Task("tldr", "TL;DR summarisation: the authors' hub data sets, a local directory, or the synthetic stand-in",
              _load, hub_data=_hub_data, offline_sources=tuple(SYNTHETIC_SOURCES), offline_fallback=True,
              check=check_tiny_posts, start_recipe=True))
