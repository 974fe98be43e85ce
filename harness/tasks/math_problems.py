"""Competition math in MATH's row layout, scored by math-verify (harness.tasks.math_answers).

Rows are {"problem": str, "solution": str} with the answer the last `\\boxed{...}` (or `\\fbox{...}`) of the solution
(MATH), or carry an "answer" string beside them, which then wins: HuggingFaceH4/MATH-500 (problem, solution, answer,
subject, level, unique_id; one split, "test") and agentica-org/DeepScaleR-Preview-Dataset (problem, answer,
solution; one split, "train"). Other columns are ignored.

Sources (task.source):
- `hub` (or `auto`): datasets.load_dataset(task.dataset or MATH-500). The splits read are KNOWN_SPLITS' for a known
  id, else "train" and "test"; `NAME:split[,split]` names them. With a "test" split and another, the other is the
  training set and "test" the test set; with one split, its rows are the training set (no test split). The last
  `n_eval` training rows are always held out (the evaluation split when there is no test split).
- a directory: train and test files (train.jsonl / .json / .parquet / .csv, shards train-*.parquet or
  data/train-*.parquet, likewise test), either alone (then it is the one split), or a single data file
  (DeepScaleR's deepscaler.json);
- a .jsonl / .json / .parquet / .csv file: one split;
- `fixture`: hand-written rows in these layouts, tests/fixtures/math/ of a source checkout (a smoke test of the
  wiring, not a benchmark; `auto` never falls back to it).

Prompts are arith's: "Question: <problem>\\nAnswer:" for tokenizers without a chat template, else one user turn
(the problem and INSTRUCTION). The SFT reference is the solution; a solution without a boxed answer gets
" The answer is $\\boxed{<answer>}$." appended, and a row without a solution has that sentence alone, so the
reference always states the gold answer where the checker looks first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError
from harness.core.examples import Example, TaskData
from harness.tasks import Task, register
from harness.tasks.arith import format_prompt
from harness.tasks.rows import read_rows
from harness.tasks.math_answers import MathVerifier, require_math_verify

DEFAULT_DATASET = "HuggingFaceH4/MATH-500"
KNOWN_SPLITS = {"HuggingFaceH4/MATH-500": ("test",), "agentica-org/DeepScaleR-Preview-Dataset": ("train",)}
INSTRUCTION = "Solve it step by step and put the final answer in \\boxed{}."
DEFAULT_EVAL = 200
FIXTURE = "fixture"
FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "math"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
SPLIT_FILES = {s: (f"{s}.jsonl", f"{s}.json", f"{s}.parquet", f"{s}.csv", f"{s}-*.parquet", f"data/{s}-*.parquet")
               for s in ("train", "test")}
BOXES = ("\\boxed", "\\fbox")


@dataclass
class MathExample(Example):
    """A MATH-style problem: `question` is the problem text (the name every checker task keys its cached checked
    pairs by) and `answer` the gold answer string math-verify compares with."""

    question: str = ""
    answer: str | None = None

    @property
    def problem(self) -> str:
        return self.question

    def record(self) -> dict:
        return {"answer": self.answer}


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` (balanced braces; `\\boxed 5` up to a space or `$`),
    or None when there is none or its braces never close."""
    start = max(text.rfind(b) for b in BOXES)
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", i):  # "\boxed 5": the MATH solutions' brace-less form
        words = text[i + 1:].split("$")[0].split()
        return words[0] if words else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def _text(row: dict, key: str) -> str | None:
    value = row.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # some answer columns hold numbers
    return value.strip() if isinstance(value, str) and value.strip() else None


def example_from_row(row, where: str) -> MathExample:
    """A MathExample of one row (module docstring); a bad row is a UserError naming `where`."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: a math row must be an object {{'problem', 'solution' and/or 'answer'}}, got "
                        f"{type(row).__name__}; fix or delete that row")
    problem, solution, answer = _text(row, "problem"), _text(row, "solution"), _text(row, "answer")
    if problem is None:
        raise UserError(f"{where}: a math row needs a non-empty 'problem' string (columns found: "
                        f"{', '.join(sorted(row)) or 'none'}); fix or delete that row")
    boxed = last_boxed(solution) if solution else None
    if answer is None:
        if solution is None:
            raise UserError(f"{where}: a math row needs an 'answer' or a 'solution' ending in \\boxed{{answer}}; "
                            f"add one or delete that row")
        if not boxed or not boxed.strip():
            raise UserError(f"{where}: the solution has no \\boxed{{...}} answer and the row no 'answer'; add an "
                            f"'answer' column or box the final answer")
        answer = boxed.strip()
    closing = f"The answer is $\\boxed{{{answer}}}$."
    reference = closing if solution is None else solution if boxed else f"{solution} {closing}"
    turn = {"role": "user", "content": f"{problem}\n{INSTRUCTION}"}
    return MathExample(text=format_prompt(problem), messages=[turn], reference=" " + reference, question=problem,
                       answer=answer)


def examples_of(rows, shown: str, line_numbers: bool = False) -> list[MathExample]:
    """Examples of the rows of one file or hub split, each error naming `shown` and the row (or line)."""
    where = (lambda i: f"{shown}:{i + 1}") if line_numbers else (lambda i: f"{shown} row {i}")
    return [example_from_row(r, where(i)) for i, r in enumerate(rows)]


def read_file(path: Path) -> list[MathExample]:
    rows = read_rows(path)
    if not rows:
        raise UserError(f"{path} has no rows; write one {{'problem', 'solution'}} (or {{'problem', 'answer'}}) "
                        f"object per row")
    return examples_of(rows, str(path), line_numbers=Path(path).suffix == ".jsonl")


def local_splits(directory: Path) -> dict[str, list[MathExample]]:
    """{"train": [...], "test": [...]} of a directory (module docstring); one split alone is "train"."""
    found = {}
    for split, patterns in SPLIT_FILES.items():
        for pattern in patterns:
            files = sorted(directory.glob(pattern))
            if files:
                found[split] = files
                break
    if not found:
        data = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
        if len(data) != 1:
            raise UserError(f"{directory} has no math train/test files (expected {', '.join(SPLIT_FILES['train'])} "
                            f"and likewise test, or a single .jsonl/.json/.parquet/.csv file); found "
                            f"{', '.join(p.name for p in data) or 'no data file'}")
        found["train"] = data
    if "train" not in found:  # only a test file (MATH-500's layout): it is the one split
        found = {"train": found["test"]}
    return {split: [ex for f in files for ex in read_file(f)] for split, files in found.items()}


def parse_dataset(spec: str | None) -> tuple[str, tuple[str, ...]]:
    """(hub id, splits) of task.dataset: "NAME" (KNOWN_SPLITS', else train and test) or "NAME:split[,split]"."""
    name, _, splits = (spec or DEFAULT_DATASET).partition(":")
    chosen = tuple(s.strip() for s in splits.split(",") if s.strip()) if splits else KNOWN_SPLITS.get(
        name, ("train", "test"))
    if not name or not chosen or len(chosen) > 2 or (len(chosen) == 2 and "test" not in chosen):
        raise UserError(f"task.dataset for math is a hub id, optionally with its splits: NAME, NAME:SPLIT or "
                        f"NAME:TRAIN_SPLIT,test; got {spec!r}")
    return name, chosen


def hub_splits(spec: str | None, load=None) -> dict[str, list[MathExample]]:
    """The hub data set's splits as {"train", "test"?} (`load(name, split)` returns rows; default
    datasets.load_dataset)."""
    name, splits = parse_dataset(spec)
    if load is None:
        import datasets

        def load(name, split):
            return datasets.load_dataset(name, split=split)

    train = [s for s in splits if s != "test"] or ["test"]
    out = {"train": examples_of(load(name, train[0]), f"{name}[{train[0]}]")}
    if len(splits) == 2:
        out["test"] = examples_of(load(name, "test"), f"{name}[test]")
    return out


def load_math(source: str, dataset: str | None = None, n_eval: int | None = None, load=None) -> TaskData:
    """TaskData of a source (module docstring): the last `n_eval` training rows are the evaluation split (None:
    DEFAULT_EVAL, or a tenth of fewer rows, at least one); the test split is the source's own when it has one."""
    if source == "hub":
        splits = hub_splits(dataset, load)
    elif source == FIXTURE:
        if not FIXTURE_DIR.is_dir():
            raise UserError(f"the math fixture lives in a source checkout ({FIXTURE_DIR} is missing); use "
                            f"--source hub or a local directory")
        splits = local_splits(FIXTURE_DIR)
    elif Path(source).is_dir():
        splits = local_splits(Path(source))
    elif Path(source).is_file():
        if Path(source).suffix not in DATA_SUFFIXES:
            raise UserError(f"{source}: a math file is .jsonl, .json, .parquet or .csv")
        splits = {"train": read_file(Path(source))}
    else:
        raise UserError(f"the math task reads task.source hub (or auto), fixture, a directory or a "
                        f".jsonl/.json/.parquet/.csv file; got {source!r}")
    train = splits["train"]
    if n_eval is None:
        n_eval = min(DEFAULT_EVAL, max(1, len(train) // 10))
    if not 0 < n_eval < len(train):
        raise UserError(f"math evaluation holds out the last n_eval training rows: need 0 < n_eval < {len(train)} "
                        f"(the training rows), got {n_eval}; add rows")
    return TaskData(source=source, sft_train=train[:-n_eval], sft_eval=train[-n_eval:], pref_train=[], pref_eval=[],
                    sft_test=splits.get("test", []), reward=MathVerifier())


def hub_assets(dataset: str | None = None):
    """The hub data the math task reads with task.source hub or auto (for `harness prepare` and the preflight)."""
    from harness.core.assets import Asset

    name, splits = parse_dataset(dataset)
    return [Asset("math problems", "dataset", name, splits=splits)]


def _load(source: str, dataset: str | None = None, preference_dataset: str | None = None) -> tuple[str, TaskData]:
    if source == "auto":
        source = "hub"
    if source.startswith("synthetic"):
        raise UserError(f"the math task reads --source hub, fixture, a directory or a file, got {source!r} (the "
                        f"arith preset's own source); the offline arithmetic stand-in is --task arith")
    resolved = source if source in ("hub", FIXTURE) else str(Path(source).resolve())
    return resolved, load_math(resolved, dataset)


register(Task("math", "MATH-style competition problems (HuggingFaceH4/MATH-500 or another hub id, local rows, or a "
              "hand-written fixture), scored by math-verify", _load, preset="arith", checker=True, suite="math",
              hub_data=lambda settings: hub_assets(settings.dataset) if settings.source in ("hub", "auto") else [],
              offline_sources=(FIXTURE,), check=lambda cfg: require_math_verify()))
