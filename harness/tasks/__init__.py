"""Tasks by name, a registry like the optimizers': each task module registers a Task that turns a data source into
TaskData (training prompts, held-out prompts, preference pairs, a gold reward when it has one)."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.core.errors import UserError
from harness.core.plugins import load_entry_points
from harness.core.examples import TaskData

REGISTRY: dict[str, "Task"] = {}
BUILTIN_MODELS: dict[str, "Builtin"] = {}  # "builtin:NAME" -> its build, registered by the task that owns it
_LOADED: set[str] = set()  # entry points already imported


def _nothing(*_args) -> list:
    return []


@dataclass(frozen=True)
class Task:
    """Everything task-specific, asked for by name: the application never branches on a task's name."""

    name: str
    summary: str  # one line for `harness list`
    load: Callable[..., tuple[str, TaskData]]  # (source, dataset, preference_dataset) -> (resolved source, data)
    preset: str = "tiny"  # the preset `harness run --task NAME` uses when no --preset is given
    checker: bool = False  # scored by its own checker (TaskData.reward): no reward model is loaded
    suite: str = "tldr"  # the evaluation suite of its runs (evals.suites): RM score, KL and win rate, or pass@k
    hub_data: Callable[..., list] = _nothing  # (task settings) -> the hub data sets (harness.core.assets.Asset) the
    # settings read; [] when nothing is fetched (a generated or local source)
    offline_sources: tuple[str, ...] = ()  # sources generated offline (a stand-in: the run says so)
    offline_fallback: bool = False  # source `auto` falls back to the offline stand-in when the hub is unreachable
    check: Callable[..., None] | None = None  # (RunConfig) -> None: refuses settings the task cannot run with
    start_recipe: bool = False  # `harness build-start` can train its SFT policy and reward model from a base model
    defaults: dict = field(default_factory=dict)  # run settings the task sets, between its preset's and the
    # command line's (a task file's models, evaluation and lengths)
    file: str | None = None  # the task file it was read from (absolute), None for a task in code
    reward_note: str = "the task's exact-match checker (1 right, 0 wrong)"  # a checker task's reward, for the dry run

    def present(self, source: str) -> bool:
        """Whether a source needs no fetch: generated offline, a local directory, or the hub with nothing listed."""
        return source in self.offline_sources or Path(source).exists() or source == "hub"


@dataclass(frozen=True)
class Builtin:
    """A model a task builds itself (a tiny stand-in): `build(recipe, cache_dir, log)` returns the built paths
    (`.policy`, `.reward_model`, `.info`), building and caching them on first use."""

    build: Callable
    has_reward_model: bool = True
    note: str = ""  # why there is no reward model, for the error when one is needed


def register_builtin(name: str, builtin: Builtin) -> None:
    BUILTIN_MODELS[name] = builtin


def resolve_paths(settings, log=print, needs_reward_model: bool = True) -> dict[str, str | None]:
    """Where policy, reward model and tokenizer come from: a task's builtin model (built and cached on first use)
    for `builtin:NAME`, else the names in the settings (harness.core.models.named_paths). needs_reward_model False: a
    task that scores responses itself; the reward model is then None unless the settings name one."""
    from harness.core.models import named_paths

    if not settings.policy.startswith("builtin:"):
        return named_paths(settings, needs_reward_model)
    names()
    if settings.policy not in BUILTIN_MODELS:
        raise UserError(f"unknown builtin model {settings.policy!r}; valid: {', '.join(sorted(BUILTIN_MODELS))}")
    builtin = BUILTIN_MODELS[settings.policy]
    if needs_reward_model and not settings.reward_model and not builtin.has_reward_model:
        raise UserError(f"{settings.policy} has no reward model ({builtin.note}); set model.reward_model to use it on "
                        f"another task")
    paths = builtin.build(settings.tiny, settings.cache_dir, log=log)
    own = str(paths.reward_model) if builtin.has_reward_model and needs_reward_model else None
    return {"policy": str(paths.policy), "reward_model": settings.reward_model or own,
            "tokenizer": settings.tokenizer or str(paths.policy), "build_info": str(paths.info)}


def register(task: Task) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} is registered twice")
    REGISTRY[task.name] = task
    return task


def names() -> list[str]:
    """Every task: the package's own modules, then those other packages register under the entry-point group
    `harness.tasks` (a task that lives outside the package, e.g. tests/plugins); looked up once per process,
    `discover()` looks again."""
    if not _LOADED:
        discover()
    return sorted(REGISTRY)


def discover() -> None:
    """Import the package's task modules and every entry point of the group `harness.tasks`."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    load_entry_points("harness.tasks", _LOADED)


def is_task_file(name: str | None) -> bool:
    return bool(name) and name.endswith((".yaml", ".yml"))


def register_file(path: str | Path) -> Task:
    """The task of a task file (harness/tasks/task_file.py), registered under the name the file gives; read again
    when the file changed. A package may call this from its `harness.tasks` entry point to ship task files."""
    from harness.tasks.task_file import FileTask

    resolved = str(Path(path).resolve())
    if not Path(resolved).is_file():
        raise UserError(f"task file {path} does not exist")
    names()
    stamp = (resolved, Path(resolved).stat().st_mtime_ns)
    for task in REGISTRY.values():
        if task.file == resolved and _FILE_STAMPS.get(task.name) == stamp:
            return task
    spec = FileTask(Path(resolved))
    name = spec.spec.name
    other = REGISTRY.get(name)
    if other is not None and other.file != resolved:
        where = f"the task file {other.file}" if other.file else "a built-in or installed task"
        raise UserError(f"task file {path} names task {name!r}, which {where} already uses; give it another name")
    task = Task(name, spec.spec.description or f"task file {resolved}", spec.load, preset=spec.spec.preset,
                checker=spec.reward_model is None, suite=spec.suite, hub_data=spec.hub_data,
                offline_sources=() if spec.spec.dataset.hub else ("auto",), defaults=spec.defaults(), file=resolved,
                reward_note=spec._reward.name if spec._reward else "")
    REGISTRY[name] = task
    _FILE_STAMPS[name] = stamp
    return task


_FILE_STAMPS: dict[str, tuple] = {}  # task name -> (file, mtime) it was read at


def find(name: str) -> Task | None:
    """The task registered as `name` (or read from the task file `name`), or None."""
    if is_task_file(name):
        return register_file(name)
    names()
    return REGISTRY.get(name)


def get(name: str) -> Task:
    if is_task_file(name):
        return register_file(name)
    valid = names()
    if name not in REGISTRY:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(valid)}, or a task file (.yaml)")
    return REGISTRY[name]


def load(name: str, source: str, dataset: str | None = None, preference_dataset: str | None = None):
    """(resolved source, TaskData) of task `name`."""
    return get(name).load(source, dataset, preference_dataset)
