"""Evaluation suites by name. Each suite is one file that owns what is specific to it; the application asks it.

- A task suite evaluates the runs of the tasks that name it (`Task.suite`): its evaluation of a policy on held-out
  prompts (metrics and per-sample records), the metrics a training-metrics line carries, the file it writes under
  a run's evals/, the summary table a run prints and the one line `harness eval` prints. The TL;DR suite (RM score,
  KL, win rate; evals/tldr.py) and the math suite (pass@k; evals/math.py).
- A model suite evaluates any model, finished run or not (`harness eval --suite NAME`): its options, the hub assets
  it needs (`harness prepare --suite NAME`), its run, the file the report reads and that file's report tables. The
  chat suite (AlpacaEval 2.0 + MT-Bench; evals/chat.py) and the open-llm suite (lm-eval; evals/open_llm.py).

Another package adds a suite under the entry-point group `harness.suites` (see tests/plugins), with no edit here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.table import Table

from harness.core.errors import UserError
from harness.core.plugins import load_entry_points
from harness.core.store import read_json

REGISTRY: dict[str, "Suite"] = {}
BUILTIN = ("evals.tldr", "evals.math", "evals.reward", "evals.chat", "evals.open_llm",
           "evals.image_suite")  # the modules of the package's own suites
_LOADED: set[str] = set()


@dataclass
class Target:
    """What `harness eval` evaluates: a run's checkpoint (run_dir set) or a model directory / hub name."""

    model: str  # the directory or hub name the policy loads from
    out_dir: Path
    name: str  # a file-name-safe label (AlpacaEval's generator name)
    run_dir: Path | None = None
    checkpoint: str | None = None


class Suite:
    name: str = ""
    summary: str = ""  # one line for `harness list`
    options: tuple[str, ...] = ()  # the `harness eval` options it reads (their names: "prompts", "limit", ...)
    rate_keys: tuple[str, ...] = ()  # result keys that are fractions in [0, 1]

    def rates(self, data: dict) -> list[tuple[str, object]]:
        """(name, value) of a result's rates, which must be fractions in [0, 1] (docs/report.md)."""
        return [(k, data.get(k)) for k in self.rate_keys]

    def describe(self, result: dict) -> str:
        """One line of a result for the terminal."""
        raise NotImplementedError


class TaskSuite(Suite):
    """A task suite. Subclasses set the class attributes and implement `evaluate`, `table_row` and `describe`."""

    metric_keys: tuple[str, ...] = ()  # the evaluation metrics a training-metrics line carries (eval/<key>)
    columns: tuple[str, ...] = ()  # the summary table's columns after "policy"
    uses_judge: bool = True  # a win-rate judge applies (a checker-graded suite has none)
    default_task: str | None = None  # the task `harness eval MODEL --suite NAME` evaluates without --task or
    # --preset (None: the first task that names the suite)

    @property
    def options(self) -> tuple[str, ...]:
        common = ("prompts", "temperature", "reference", "source", "preset", "task")
        return common + (("judge", "reward_model") if self.uses_judge else ())

    # what `harness report` asks of a comparison group's suite (harness/app/report.py)
    cut_keys: tuple[str, ...] = ()  # the eval/* keys an equal-budget cut reads from metrics.jsonl
    verdict_units: dict[str, tuple] = {}  # metric -> (name in sentences, scale, unit, decimals): the metrics
    # P(improvement) and the verdicts may use (--poi-metric), the first the default
    matched_metrics: tuple[tuple, ...] = ()  # (metric, header, scale, decimals) of its matched-KL tables
    model_suite_tables: bool = True  # its runs are expected to carry the model suites' files (a note when absent)

    def file_name(self, task: str) -> str:
        """evals/<file> of a run's final evaluation."""
        return f"{self.name}.json"

    def verdict_metric(self, metric: str, members: list, observations: dict) -> tuple[str, str]:
        """(metric, note): the metric P(improvement) and the verdicts use when `metric` is asked for."""
        return metric, ""

    def main_table(self, members, labels, observations, key: dict, opts, suffix: str, budget_note: str,
                   notes: list[str]):
        """(its Table 1, the observations the later tables use) of a comparison group; None: the report's generic
        table, one column per metric key (evals.tables.metric_table)."""
        return None

    def figures(self, members, labels, opts, suffix: str) -> list[tuple]:
        """(plot function, *arguments) of its figures; the report runs each, a failure becomes a note."""
        return []

    def evaluate(self, cfg, policy, reference, models, examples: list, data, judge, runtime) -> tuple[dict, list]:
        """(metrics, per-sample records) of `policy` on `examples`; rank 0 gets the metrics, the others ({}, [])."""
        raise NotImplementedError

    def table_row(self, metrics: dict) -> list[str]:
        """One summary-table row (the columns' cells) of a policy's metrics."""
        raise NotImplementedError

    def title_note(self, metrics: dict) -> str:
        return ""

    def summary_table(self, summary: dict) -> Table:
        """A run's summary as a table: the SFT policy against the trained one."""
        note = self.title_note(summary["eval"])
        table = Table(title=f"{summary['algorithm']} on {summary['task']} ({summary['data_source']}, preset "
                            f"{summary['preset']}, seed {summary['seed']}{note})")
        for col in ("policy",) + self.columns:
            table.add_column(col, justify="right")
        for name, m in (("SFT", summary["sft"]), (summary["algorithm"], summary["eval"])):
            table.add_row(name, *self.table_row(m))
        b = summary["budget"]
        table.caption = (f"{b['prompts']} prompts, {b['responses']} responses, {b['optimizer_steps']} optimizer "
                         f"steps, {b['wall_time_s']:.0f} s training, peak memory {b['peak_memory_mb']:.0f} MB")
        return table


class ModelSuite(Suite):
    """A model suite. Subclasses set the class attributes and implement `assets`, `run` and `describe`."""

    key: str = ""  # run.evals[key] in the report; the suite writes evals/<key>.json

    def assets(self, options: dict) -> list:
        """The hub assets (harness.core.assets.Asset) the suite needs with these options (`harness prepare`)."""
        return []

    def check(self, target: Target, options: dict, log: Callable = print) -> None:
        """Refuses, in one line, a missing asset or a bad option before anything loads."""

    def run(self, target: Target, options: dict, log: Callable = print) -> dict:
        """Evaluate the target, write evals/<key>.json (and the suite's own files) into target.out_dir."""
        raise NotImplementedError

    def report_tables(self) -> list[tuple[str, str, list]]:
        """(file stem, title, metrics: evals.tables.Metric) of the report tables built from the suite's file."""
        return []


def keep_base(path: Path) -> dict:
    """An existing `base` block (the starting model's numbers, docs/report.md) survives a re-evaluation."""
    try:
        base = read_json(path).get("base")
    except (OSError, ValueError, AttributeError):
        return {}
    return {"base": base} if base is not None else {}


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"



def register(suite: Suite) -> Suite:
    if suite.name in REGISTRY:
        raise ValueError(f"suite {suite.name!r} is registered twice")
    REGISTRY[suite.name] = suite
    return suite


def names() -> list[str]:
    """Every suite: the package's own, then those other packages register under the entry-point group
    `harness.suites` (looked up once per process; `discover()` looks again)."""
    if not _LOADED:
        discover()
    builtin = {module: i for i, module in enumerate(BUILTIN)}  # the package's own first, in BUILTIN's order
    return sorted(REGISTRY, key=lambda n: (builtin.get(type(REGISTRY[n]).__module__, len(BUILTIN)), n))


def discover() -> None:
    """Import the package's own suites and every entry point of the group `harness.suites`."""
    import importlib

    for module in BUILTIN:
        importlib.import_module(module)
    load_entry_points("harness.suites", _LOADED)


def get(name: str) -> Suite:
    """The suite `name` (open_llm is accepted for open-llm)."""
    valid = names()
    name = name.replace("_", "-") if name.replace("_", "-") in REGISTRY else name
    if name not in REGISTRY:
        raise UserError(f"unknown suite {name!r}; valid suites: {', '.join(valid)}")
    return REGISTRY[name]


def model_suites() -> list[ModelSuite]:
    return [REGISTRY[n] for n in names() if isinstance(REGISTRY[n], ModelSuite)]
