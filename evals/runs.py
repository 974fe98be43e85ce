"""Load and validate run directories for `harness report`; never train or evaluate.

Why a module of its own: every number in a report must come from a run's files, and every run that cannot be used
must be named with the reason. Loading therefore returns `Run`s and `Skipped`s, never raises on bad files, and the
table code downstream can assume a `Run` is complete, consistent and traceable (run id, config_hash, code_version).
The file format is docs/run_format.md; the report-specific conventions are docs/report.md.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.store import RunDir, is_run_dir, read_json, read_jsonl

ROW_SECTIONS = ("train", "generation")  # a run that changes one of these is a row of its own in the report
TABLE_SECTIONS = ("model", "task")  # another model or data set: a table of its own (its own SFT row)
BUDGET_COUNTERS = ("prompts", "responses", "rm_queries", "optimizer_steps", "wall_time_s")
COMPARISON_FIELDS = ("task", "data_source", "preset", "judge", "eval_temperature", "kl_definition", "settings")
REQUIRED_SUMMARY = ("run_id", "status", "algorithm", "preset", "seed", "eval", "comparison_key")


@dataclass
class Skipped:
    """A run (or one of its files) left out of the report, with a reason a person can act on."""
    path: str
    reason: str


@dataclass
class Run:
    """One completed run's files, parsed. `notes` are tolerated problems (e.g. a truncated last metrics line)."""
    path: Path
    summary: dict
    config: dict
    metrics: list[dict]
    evals: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    run_id = property(lambda self: str(self.summary["run_id"]))
    algorithm = property(lambda self: str(self.summary["algorithm"]))
    preset = property(lambda self: str(self.summary["preset"]))
    seed = property(lambda self: self.summary["seed"])
    algorithm_config = property(lambda self: dict(self.summary.get("algorithm_config") or {}))
    config_hash = property(lambda self: str(self.summary.get("config_hash") or self.config.get("config_hash", "")))
    code_version = property(lambda self: str(self.summary.get("code_version") or self.config.get("code_version", "")))

    @property
    def comparison_key(self) -> tuple:
        """Hashable form of the summary's comparison_key: runs with different keys are never pooled."""
        ck = self.summary["comparison_key"]
        return tuple((k, json.dumps(ck.get(k), sort_keys=True)) for k in COMPARISON_FIELDS)

    @property
    def row_config(self) -> dict:
        """algorithm_config plus the train/generation settings the run changed against its preset (summary
        `settings`; runs written before it have none)."""
        changed = self.summary.get("settings") or {}
        return {**self.algorithm_config, **{k: v for k, v in changed.items() if k.split(".")[0] in ROW_SECTIONS}}

    @property
    def row_key(self) -> tuple[str, str, str]:
        """Runs pooled as seeds in one row share preset, algorithm and row_config (e.g. RLOO k=2 != k=4, and a run
        at train.lr=1e-5 is not a seed of the preset's lr)."""
        return self.preset, self.algorithm, json.dumps(self.row_config, sort_keys=True)

    def provenance(self, source: str) -> dict:
        return {"run_id": self.run_id, "config_hash": self.config_hash, "code_version": self.code_version,
                "seed": self.seed, "path": str(self.path), "source": source}


# ---------------------------------------------------------------------------------------------------------------
# discovery and loading

def discover(paths: list[Path]) -> list[Path]:
    """Run directories given directly or found below a results root; never descends into a run directory,
    so checkpoints (which carry their own config.json) are not mistaken for runs."""
    found: list[Path] = []
    for root in paths:
        root = Path(root)
        if is_run_dir(root):
            found.append(root)
            continue
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            if here != root and is_run_dir(here):
                found.append(here)
                dirnames.clear()
    return sorted(dict.fromkeys(p.resolve() for p in found))


def _read_metrics(path: Path) -> tuple[list[dict] | None, list[str], str | None]:
    """(records, notes, fatal): a truncated *last* line is tolerated and noted; a bad line elsewhere is corruption."""
    try:
        records, problems = read_jsonl(path)
    except (OSError, ValueError) as e:  # bytes that are not UTF-8 (a damaged disk): skip the run, never raise
        return None, [], f"unreadable metrics.jsonl ({type(e).__name__}: {e})"
    if any(not isinstance(r, dict) for r in records):
        return None, [], "corrupt metrics.jsonl (a line is not a JSON object)"
    if not problems:
        return records, [], None
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        json.loads(lines[-1])
        last_bad = False
    except json.JSONDecodeError:
        last_bad = True
    if last_bad and len(problems) == 1:
        return records, [f"{problems[0]}: skipped that line"], None
    return None, [], f"corrupt metrics.jsonl ({'; '.join(problems)})"


def _load_suite(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        return None, f"corrupt {path.name}: {e}"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, None


def load_run(path: Path) -> Run | Skipped:
    """Parse one run directory, or say precisely why it cannot be used."""
    rd = RunDir(path)
    if not rd.summary.exists():
        return Skipped(str(path), "incomplete: no summary.json (still running, or it crashed)")
    try:
        summary = read_json(rd.summary)
    except (OSError, ValueError) as e:
        return Skipped(str(path), f"corrupt summary.json: {e}")
    if not isinstance(summary, dict):
        return Skipped(str(path), "summary.json is not a JSON object")
    missing = [k for k in REQUIRED_SUMMARY if k not in summary]
    if missing:
        return Skipped(str(path), f"summary.json lacks {', '.join(missing)}")
    if summary["status"] != "completed":
        return Skipped(str(path), f"status is {summary['status']!r}, not 'completed'")
    if not isinstance(summary["eval"], dict) or not isinstance(summary["comparison_key"], dict):
        return Skipped(str(path), "summary.json: eval and comparison_key must be objects")
    for block in ("eval", "sft"):
        b = summary.get(block)
        for key, v in _suite(summary).rates(b) if isinstance(b, dict) else ():
            if _finite(v) and not 0 <= v <= 1:  # a percentage here would silently be x100
                return Skipped(str(path), f"summary.json {block}.{key} = {v} is not a fraction in [0, 1]")
    if not rd.config.exists():
        return Skipped(str(path), "missing config.json (needed to trace the run's configuration)")
    try:
        config = read_json(rd.config)
    except (OSError, ValueError) as e:
        return Skipped(str(path), f"corrupt config.json: {e}")
    if not isinstance(config, dict):
        return Skipped(str(path), "config.json is not a JSON object")
    if summary.get("config_hash") and config.get("config_hash") and summary["config_hash"] != config["config_hash"]:
        return Skipped(str(path), "config.json and summary.json disagree on config_hash")
    if not rd.metrics.exists():
        return Skipped(str(path), "missing metrics.jsonl")
    metrics, notes, fatal = _read_metrics(rd.metrics)
    if fatal:
        return Skipped(str(path), fatal)
    run = Run(path=Path(path), summary=summary, config=config, metrics=metrics or [],
              notes=[f"{summary['run_id']}: {n}" for n in notes])
    return run


def _suite(summary: dict):
    """The suite that evaluated a run (evals.suites): its summary says; a summary written before suites were named
    is its task's suite (harness.tasks), and a task not registered here the TL;DR suite."""
    from evals import suites
    from harness import tasks

    name = summary.get("suite")
    if not name:
        task = tasks.find(str(summary.get("task", "")))
        name = task.suite if task is not None else "tldr"
    return suites.get(name)


def suite_of(run: Run) -> str:
    return _suite(run.summary).name


def suite_file(run: Run) -> str:
    """evals/<file> of the run's task suite, written by the run and by `harness eval RUN --suite NAME`."""
    task = run.summary["comparison_key"].get("task") or run.summary.get("task")
    return f"evals/{_suite(run.summary).file_name(task)}"


def load_suites(run: Run) -> list[Skipped]:
    """Attach the model suites' files (evals/chat.json, evals/open_llm.json, ...) as run.evals[key] and the run's
    task-suite file (evals/tldr.json, a math run's evals/<task>.json) as run.evals[suite name], when present; a bad
    suite file drops that suite only."""
    from evals import suites

    skipped = []
    files = {s.key: (s, f"evals/{s.key}.json") for s in suites.model_suites()}
    own = _suite(run.summary)
    files[own.name] = (own, suite_file(run))
    for key, (suite, name) in files.items():
        path = run.path / name
        if not path.exists():
            continue
        data, err = _load_suite(path)
        err = err or _check_rates(suite, data)
        if err:
            skipped.append(Skipped(str(path), f"{run.run_id}: {err}"))
        else:
            run.evals[key] = data
    return skipped


def _check_rates(suite, data: dict) -> str | None:
    """Rates and accuracies are fractions in [0, 1] (docs/report.md); a percentage here would silently be x100."""
    for name, v in suite.rates(data):
        if v is not None and isinstance(v, (int, float)) and not 0 <= v <= 1:
            return f"{name} = {v} is not a fraction in [0, 1]"
    return None


def load_runs(paths: list[Path]) -> tuple[list[Run], list[Skipped]]:
    """Load every run below `paths`; duplicates (same run_id, or same row and seed) keep the latest finished run."""
    runs, skipped = [], []
    for p in discover(paths):
        r = load_run(p)
        (skipped if isinstance(r, Skipped) else runs).append(r)
    for run in runs:
        skipped += load_suites(run)
    runs.sort(key=lambda r: str(r.summary.get("finished_at") or ""), reverse=True)
    kept, seen_id, seen_seed = [], {}, {}
    for run in runs:
        cell = (run.comparison_key, run.row_key, json.dumps(run.seed))
        if run.run_id in seen_id:
            skipped.append(Skipped(str(run.path), f"duplicate run_id {run.run_id} (kept {seen_id[run.run_id]})"))
        elif cell in seen_seed:
            skipped.append(Skipped(str(run.path), f"same row and seed {run.seed} as {seen_seed[cell]}, "
                                                  "which finished later and is kept"))
        else:
            seen_id[run.run_id], seen_seed[cell] = str(run.path), run.run_id
            kept.append(run)
    kept.sort(key=lambda r: (r.preset, r.algorithm, r.row_key[2], str(r.seed), r.run_id))
    return kept, skipped


# ---------------------------------------------------------------------------------------------------------------
# grouping: which runs may share a table, and how rows are labelled

def comparison_groups(runs: list[Run]) -> list[tuple[dict, list[Run]]]:
    """Runs split by comparison_key without the preset (presets are rows of one table, never pooled in a cell)."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(kv for kv in run.comparison_key if kv[0] != "preset"), []).append(run)
    return [({k: json.loads(v) for k, v in key}, members) for key, members in sorted(groups.items())]


def group_difference(groups: list[tuple[dict, list[Run]]]) -> str:
    """One sentence saying which comparison_key fields made the report split runs into several tables."""
    if len(groups) < 2:
        return ""
    fields = [f for f in groups[0][0] if len({json.dumps(g[0][f]) for g in groups}) > 1]
    return (f"Runs were split into {len(groups)} groups because their comparison_key differs in "
            f"{', '.join(fields)}; runs from different groups are never pooled, so each group has its own tables.")


def row_labels(runs: list[Run]) -> dict[tuple, str]:
    """Row label = algorithm, plus the row_config fields that distinguish it from its siblings (k=4, train.lr=1e-05)."""
    by_algo: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        configs = by_algo.setdefault((run.preset, run.algorithm), [])
        if run.row_config not in configs:
            configs.append(run.row_config)
    labels = {}
    for (preset, algo), configs in by_algo.items():
        keys = sorted({k for c in configs for k in c})
        differing = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
        for c in configs:
            extra = ", ".join(f"{k}={c[k]}" if k in c else f"{k}=default" for k in differing)
            labels[(preset, algo, json.dumps(c, sort_keys=True))] = f"{algo} ({extra})" if extra else algo
    return labels


# ---------------------------------------------------------------------------------------------------------------
# equal-budget cut

def cut_keys() -> tuple[str, ...]:
    """The eval/* keys an equal-budget cut reads: every task suite's (evals.suites), in registry order."""
    from evals import suites

    keys = [k for n in suites.names() for k in getattr(suites.get(n), "cut_keys", ())]
    return tuple(dict.fromkeys(keys))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _latest(records: list[dict], counter: str) -> dict:
    """The record with the largest counter; among equal counters the one logged last (the runner appends the
    final evaluation as an extra line with the last iteration's counters)."""
    return max(enumerate(records), key=lambda t: (t[1][counter], t[0]))[1]


def budget_cut(run: Run, counter: str, budget: float) -> tuple[dict | None, str | None]:
    """Evaluation at an equal budget: the last iteration whose cumulative `counter` <= budget, and for each
    eval/* column the latest value logged at or before that iteration. Returns (cut, None) or (None, reason)."""
    rows = [m for m in run.metrics if _finite(m.get(counter))]
    if not rows:
        return None, f"metrics.jsonl has no {counter!r} counter"
    if max(m[counter] for m in rows) < budget:
        return None, f"never reached {counter} = {budget:g} (stopped at {max(m[counter] for m in rows):g})"
    before = [m for m in rows if m[counter] <= budget]
    if not before:
        return None, f"first logged iteration is already past {counter} = {budget:g}"
    last = _latest(before, counter)
    cut = {"iteration": last.get("iteration"), "counter": last[counter]}
    for name, col in ((k, f"eval/{k}") for k in cut_keys() + ("response_length",)):
        logged = [m for m in before if _finite(m.get(col))]
        if logged:
            at = _latest(logged, counter)
            cut[name], cut[name + "_iteration"] = at[col], at.get("iteration")
    if not any(k in cut for k in cut_keys() + ("response_length",)):
        return None, f"no periodic eval/* columns at or before {counter} = {budget:g}"
    return cut, None
