"""The six Open LLM Leaderboard (v1) tasks through lm-eval: per-task score with its shot count, and their average.

Online the harness runs lm-eval's built-in tasks unchanged; offline (HF_HUB_OFFLINE=1) they read the data sets
from the datasets cache that `harness prepare --suite open-llm` filled, and a missing one is one line before the
model loads. Shot counts differ per task while simple_evaluate's num_fewshot is global, so each task is one
simple_evaluate call on the same loaded model. With local files instead of the hub's (tests), `write_shadow_tasks`
writes same-named task YAMLs that include the built-in YAML and swap only the data source for local JSON/JSONL
files: prompts, metrics and filters stay lm-eval's own. Pass their directory as `include_path`; lm-eval lets
include_path tasks override built-ins of the same name.
"""
from __future__ import annotations

import functools
from pathlib import Path
from statistics import mean
from typing import Iterable

import yaml

from evals.suites import ModelSuite, Target, keep_base, pct, register
from harness.core.assets import LOCAL_LOADERS, Asset
from harness.core.errors import UserError
from harness.core.store import write_json, write_jsonl

# task: (few-shot examples, the metric the leaderboard reports)
LEADERBOARD = {
    "arc_challenge": (25, "acc_norm,none"),
    "hellaswag": (10, "acc_norm,none"),
    "truthfulqa_mc2": (0, "acc,none"),
    "mmlu": (5, "acc,none"),
    "winogrande": (5, "acc,none"),
    "gsm8k": (5, "exact_match,strict-match"),
}


def write_shadow_tasks(data_files: dict[str, dict[str, str | Path]], out_dir: Path | str,
                       groups: dict[str, list[str]] | None = None) -> Path:
    """YAMLs shadowing built-in tasks with local data: data_files maps a task to {split: file}, using the split names
    the built-in task reads (e.g. arc: train/validation/test, mmlu_*: dev/test). `groups` shadows a built-in group
    (e.g. {"mmlu": ["mmlu_abstract_algebra"]}) with only the subtasks given. Returns out_dir, for `include_path`."""
    index = _builtin_tasks()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, files in data_files.items():
        if task not in index or index[task].yaml_path is None:
            raise UserError(f"lm-eval has no built-in task {task!r} to shadow")
        shadow = {"include": str(index[task].yaml_path), "task": task, "dataset_path": "json", "dataset_name": None,
                  "dataset_kwargs": {"data_files": {split: str(Path(f).resolve()) for split, f in files.items()}}}
        (out_dir / f"{task}.yaml").write_text(yaml.safe_dump(shadow, sort_keys=False))
    for group, subtasks in (groups or {}).items():
        builtin = yaml.safe_load(index[group].yaml_path.read_text())
        shadow = {"group": group, "task": list(subtasks),
                  **{k: builtin[k] for k in ("aggregate_metric_list", "metadata") if k in builtin}}
        (out_dir / f"{group}.yaml").write_text(yaml.safe_dump(shadow, sort_keys=False))
    return out_dir


@functools.lru_cache(maxsize=1)
def _builtin_tasks() -> dict:
    """lm-eval's index of its own tasks (name -> entry with yaml_path); building it takes seconds, so once."""
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


def run_open_llm(model, output_dir: Path | str, tasks: list[str] | None = None, include_path: Path | str | None = None,
                 limit: int | None = None, batch_size: int = 1, device: str | None = None, tokenizer=None) -> dict:
    """Evaluate `model` (a model directory, a hub name or a loaded transformers model) on the leaderboard tasks;
    write `open_llm.json` (`tasks`: {task: score}, `average`, `details`: {task: {score, stderr, metric, num_fewshot,
    n}}) and `open_llm_samples.jsonl` into output_dir. `limit` caps documents per task: a smoke
    test, never a leaderboard number (it is recorded in the summary)."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = list(tasks or LEADERBOARD)
    unknown = [t for t in tasks if t not in LEADERBOARD]
    if unknown:
        raise UserError(f"unknown open-llm task(s) {unknown}; valid: {', '.join(LEADERBOARD)}")
    from harness.core.assets import require

    require(open_llm_assets(tasks, include_path), "python -m harness prepare --suite open-llm"
            + (f" --tasks {','.join(tasks)}" if tasks != list(LEADERBOARD) else ""))  # before the model loads
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")  # HFLM's default is cuda even without one
    lm = HFLM(pretrained=str(model) if isinstance(model, (str, Path)) else model, tokenizer=tokenizer,
              device=device, batch_size=batch_size)
    task_manager = TaskManager(include_path=str(include_path) if include_path else None)
    per_task, records = {}, []
    for task in tasks:
        shots, metric = LEADERBOARD[task]
        out = simple_evaluate(model=lm, tasks=[task], num_fewshot=shots, task_manager=task_manager, limit=limit,
                              log_samples=True)
        result = out["results"][task]
        samples = [(name, s) for name, rows in out["samples"].items() for s in rows]
        # the shot count lm-eval actually applied (a group reports its subtasks' configs)
        applied = sorted({c.get("num_fewshot") for c in out["configs"].values()})
        per_task[task] = {"score": result[metric], "stderr": _number(result.get(metric.replace(",", "_stderr,", 1))),
                          "metric": metric, "num_fewshot": applied[0] if len(applied) == 1 else applied,
                          "n": len({(name, s["doc_id"]) for name, s in samples})}  # one sample per filter
        records += [_record(task, name, s) for name, s in samples]
    # `tasks` and `average` in the shape `harness report` reads (docs/report.md); the rest under `details`
    summary = {"tasks": {t: v["score"] for t, v in per_task.items()},
               "average": mean(t["score"] for t in per_task.values()), "details": per_task, "limit": limit,
               "model": model if isinstance(model, (str, Path)) else type(model).__name__,
               "include_path": include_path}
    write_json(Path(output_dir) / "open_llm.json", summary)
    write_jsonl(Path(output_dir) / "open_llm_samples.jsonl", records)
    return summary


def _number(x) -> float | None:
    """lm-eval writes "N/A" for a stderr it could not compute."""
    return float(x) if isinstance(x, (int, float)) else None


def _record(task: str, subtask: str, sample: dict) -> dict:
    """The fields of an lm-eval sample worth keeping beside the summary (the prompts are long and rebuildable)."""
    metrics = {k: v for k, v in sample.items() if k in ("acc", "acc_norm", "exact_match")}
    return {"task": task, "subtask": subtask, "doc_id": sample["doc_id"], "target": str(sample["target"]),
            "filter": sample.get("filter"), "response": _plain(sample.get("filtered_resps")), **metrics}


def _plain(x):
    """Responses are nested lists/tuples of strings, floats and booleans: keep them JSON-friendly."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)


def open_llm_assets(tasks: Iterable[str] | None = None, include_path: str | Path | None = None) -> list[Asset]:
    """The data sets lm-eval loads for the leaderboard tasks, read from its task YAMLs (groups and tags expanded);
    tasks shadowed by local files (evals.open_llm.write_shadow_tasks) need those files instead."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's own include-resolving loader

    index = TaskManager(include_path=str(include_path)).task_index if include_path else _builtin_tasks()
    out: list[Asset] = []

    def walk(top: str, name: str, seen: frozenset = frozenset()) -> None:
        entry = index.get(name)
        if entry is None or name in seen:
            raise UserError(f"lm-eval has no task {name!r} (needed by open-llm task {top})")
        kind = entry.kind.name
        if kind == "TAG":
            for child in sorted(entry.tags):
                walk(top, child, seen | {name})
            return
        cfg = load_yaml(entry.yaml_path, resolve_func=False) if entry.yaml_path else dict(entry.cfg or {})
        if kind == "GROUP":
            for child in cfg.get("task") or []:
                walk(top, child if isinstance(child, str) else child["task"], seen | {name})
            return
        splits = tuple(dict.fromkeys(cfg[k] for k in ("training_split", "validation_split", "test_split",
                                                      "fewshot_split") if cfg.get(k)))
        path, files = cfg.get("dataset_path"), (cfg.get("dataset_kwargs") or {}).get("data_files")
        if path in LOCAL_LOADERS and files:
            for split, f in (files.items() if isinstance(files, dict) else [("data", files)]):
                for one in [f] if isinstance(f, str) else f:
                    out.append(Asset(f"open-llm {top} data ({split})", "local", str(one),
                                     hint="a local file named by the task YAML in --include-path"))
        elif path:
            out.append(Asset(f"open-llm {top} data", "dataset", path, config=cfg.get("dataset_name"),
                             splits=splits))

    for task in tasks or LEADERBOARD:
        walk(task, task)
    return out


class OpenLlmSuite(ModelSuite):
    name = "open-llm"
    key = "open_llm"
    summary = "the six Open LLM Leaderboard (v1) tasks through lm-eval, and their average"
    options = ("include_path", "tasks", "limit", "device")

    def assets(self, options):
        return open_llm_assets(options.get("tasks"), options.get("include_path"))

    def check(self, target: Target, options: dict, log=print) -> None:
        from harness.core import assets

        include_path, tasks = options.get("include_path"), options.get("tasks")
        if include_path is not None and not Path(include_path).is_dir():
            raise UserError(f"--include-path: no such directory {include_path}")
        model = assets.model_asset("evaluated model", target.model) if target.run_dir is None else []
        command = assets.prepare_command(suites=["open-llm"], models=[a.name for a in model if a.kind == "model"]) + \
            (f" --tasks {','.join(tasks)}" if tasks else "") + \
            (f" --include-path {include_path}" if include_path else "")
        assets.require(model + self.assets(options), command, log=log)

    def run(self, target: Target, options: dict, log=print) -> dict:
        """run_open_llm; it writes open_llm.json in the report's shape ({"tasks": {name: score}, "average"})."""
        self.check(target, options, log)
        path = target.out_dir / "open_llm.json"
        base = keep_base(path)
        summary = run_open_llm(target.model, target.out_dir, tasks=options.get("tasks"),
                               include_path=options.get("include_path"), limit=options.get("limit"),
                               device=options.get("device"))
        if base:
            summary = {**summary, **base}
            write_json(path, summary)
        return summary

    def describe(self, result):
        tasks = ", ".join(f"{t} {pct(v)}" for t, v in result["tasks"].items())
        return f"open-llm: average {pct(result['average'])} ({tasks})"

    def rates(self, data):
        return [("tasks." + k, v) for k, v in (data.get("tasks") or {}).items()]

    def report_tables(self):
        from evals.tables import OPEN_LLM_METRICS

        return [("table6", "Table 6: Open LLM Leaderboard tasks", OPEN_LLM_METRICS)]


register(OpenLlmSuite())
