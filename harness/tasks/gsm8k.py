"""GSM8K (Cobbe et al. 2021) in the hub's openai/gsm8k "main" schema: rows {"question": str, "answer": str}.

`answer` is the worked solution with calculator annotations and a final "#### N" line, e.g.

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.
    #### 72

The gold integer is N (thousands separators allowed: "#### 1,000"). The SFT reference is the solution with the
"<<...>>" annotations removed and the "#### N" line kept (so the policy learns to end with the marker the checker
reads first). Prompts are the stand-in's (harness.tasks.arith.to_example): the tokenizer's chat template over one
user turn (question + arith.INSTRUCTION) when it has one, else the plain "Question: ...\\nAnswer:". The reward is
the same exact-match checker (harness.tasks.verifier.Checker).

Sources: rows from datasets.load_dataset("openai/gsm8k", "main") (`hub_problems`), or local files in that schema:
a .jsonl / .json / .parquet file, or a directory holding train and test files (train.jsonl, test.jsonl,
train.parquet, test.parquet, or the hub repository's layout main/train-00000-of-00001.parquet). GSM8K has no
validation split: the last `n_eval` training rows are held out for it.

Registered as task `gsm8k`: task.source `hub` (or `auto`), a directory or a file.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import UserError
from harness.core.examples import TaskData
from harness.tasks import Task, register
from harness.tasks.arith import ArithData, Problem, task_from_problems
from harness.tasks.rows import read_rows  # noqa: F401 (also imported from here)
from harness.tasks.verifier import parse_gold  # noqa: F401 (also imported from here)

HUB_DATASET = ("openai/gsm8k", "main")
CALCULATOR_RE = re.compile(r"<<[^<>]*>>")
SPLIT_FILES = {split: (f"{split}.jsonl", f"{split}.parquet", f"main/{split}-*.parquet", f"{split}-*.parquet",
                       f"data/{split}-*.parquet") for split in ("train", "test")}
DEFAULT_EVAL = 200


def strip_calculator(text: str) -> str:
    """The solution without GSM8K's calculator annotations ("48/2 = <<48/2=24>>24" -> "48/2 = 24")."""
    return CALCULATOR_RE.sub("", text)


def problem_from_row(row, where: str, id: str = "") -> Problem:
    """A Problem of one row in the openai/gsm8k "main" schema; a bad row is a UserError naming `where`."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: a GSM8K row must be an object {{'question': str, 'answer': str}}, got "
                        f"{type(row).__name__}; fix or delete that row")
    for k in ("question", "answer"):
        if not isinstance(row.get(k), str) or not row[k].strip():
            raise UserError(f"{where}: a GSM8K row needs a non-empty {k!r} string; fix or delete that row")
    try:
        gold = parse_gold(row["answer"])
    except ValueError as e:
        raise UserError(f"{where}: {e}; fix or delete that row") from None
    solution = "\n".join(line.rstrip() for line in strip_calculator(row["answer"]).strip().split("\n"))
    return Problem(id=id, question=row["question"].strip(), solution=solution, answer=gold)


def hub_problems(rows, split: str, shown: str = "openai/gsm8k") -> list[Problem]:
    """Problems of one hub split (any iterable of row dicts, e.g. a datasets.Dataset)."""
    return [problem_from_row(r, f"{shown}[{split}] row {i}", id=f"gsm8k-{split}-{i}") for i, r in enumerate(rows)]


def read_problems(path: Path, split: str = "train") -> list[Problem]:
    """Problems of one local file (see `read_rows`)."""
    rows = read_rows(path)
    if not rows:
        raise UserError(f"{path} has no rows; write one {{'question', 'answer'}} object per line")
    line = Path(path).suffix == ".jsonl"
    return [problem_from_row(r, f"{path}:{i + 1}" if line else f"{path} row {i}", id=f"gsm8k-{split}-{i}")
            for i, r in enumerate(rows)]


def split_files(directory: Path, split: str) -> list[Path]:
    """The files of one split in a local directory (the first SPLIT_FILES pattern that matches; shards sorted)."""
    for pattern in SPLIT_FILES[split]:
        found = sorted(Path(directory).glob(pattern))
        if found:
            return found
    return []


def local_problems(path: Path) -> dict[str, list[Problem]]:
    """{"train": [...], "test": [...]} of a local directory ("test" absent when it has no test file)."""
    path = Path(path)
    out = {}
    for split in ("train", "test"):
        files = split_files(path, split)
        if files:
            probs = [p for f in files for p in read_problems(f, split)]
            out[split] = [Problem(id=f"gsm8k-{split}-{i}", question=p.question, solution=p.solution, answer=p.answer)
                          for i, p in enumerate(probs)]
    if "train" not in out:
        raise UserError(f"{path} has no GSM8K training file; expected one of {', '.join(SPLIT_FILES['train'])}")
    return out


def load_gsm8k(source: str, n_eval: int | None = None, load=None) -> ArithData:
    """ArithData of GSM8K: source "hub" (`load(name, config, split)` returns rows; default datasets.load_dataset),
    a local directory (`local_problems`) or a single file (its rows are the training set, no test split).
    The last `n_eval` training problems become the evaluation split (None: DEFAULT_EVAL, or a tenth of a smaller
    training file, at least one); the test split is GSM8K's test set."""
    if source == "hub":
        if load is None:
            import datasets

            def load(name, config, split):
                return datasets.load_dataset(name, config, split=split)

        split_problems = {s: hub_problems(load(*HUB_DATASET, s), s) for s in ("train", "test")}
    elif Path(source).is_dir():
        split_problems = local_problems(Path(source))
    elif Path(source).is_file():
        split_problems = {"train": read_problems(Path(source))}
    else:
        raise UserError(f"a GSM8K source is 'hub', a directory or a .jsonl/.json/.parquet file; got {source!r}")
    train = split_problems["train"]
    if n_eval is None:
        n_eval = min(DEFAULT_EVAL, max(1, len(train) // 10))
    if not 0 < n_eval < len(train):
        raise UserError(f"GSM8K evaluation holds out the last n_eval training rows: need 0 < n_eval < "
                        f"{len(train)} (the training rows), got {n_eval}")
    problems = {"sft_train": train[:-n_eval], "sft_eval": train[-n_eval:]}
    if split_problems.get("test"):
        problems["sft_test"] = split_problems["test"]
    return task_from_problems(source, problems)


def hub_assets():
    """The hub data the gsm8k task reads with task.source=hub (for `harness prepare` and the preflight)."""
    from harness.core.assets import Asset

    return [Asset("gsm8k problems", "dataset", HUB_DATASET[0], config=HUB_DATASET[1], splits=("train", "test"))]


def _load(source: str, dataset: str | None = None, preference_dataset: str | None = None) -> tuple[str, TaskData]:
    if source == "auto":
        source = "hub"
    if source == "synthetic":
        raise UserError("gsm8k reads task.source=hub, a directory or a .jsonl/.json/.parquet file; the offline "
                        "stand-in is its own task: --task arith")
    resolved = source if source == "hub" else str(Path(source).resolve())
    return resolved, load_gsm8k(resolved).task


register(Task("gsm8k", "GSM8K math word problems (openai/gsm8k main on the hub, or local rows in its schema), scored "
              "by an exact-match checker", _load, preset="arith", checker=True, suite="math",
              hub_data=lambda settings: hub_assets() if settings.source in ("hub", "auto") else []))
