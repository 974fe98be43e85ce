"""Tasks by name, a registry like the optimizers': each task module registers a Task that turns a data source into
TaskData (training prompts, held-out prompts, preference pairs, a gold reward when it has one)."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from harness.errors import UserError
from harness.examples import TaskData

REGISTRY: dict[str, "Task"] = {}


@dataclass(frozen=True)
class Task:
    name: str
    summary: str  # one line for `harness list`
    load: Callable[..., tuple[str, TaskData]]  # (source, dataset, preference_dataset) -> (resolved source, data)
    preset: str = "tiny"  # the preset `harness run --task NAME` uses when no --preset is given
    checker: bool = False  # scored by its own checker (TaskData.reward): no reward model is loaded


def register(task: Task) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} is registered twice")
    REGISTRY[task.name] = task
    return task


def names() -> list[str]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return sorted(REGISTRY)


def get(name: str) -> Task:
    valid = names()
    if name not in REGISTRY:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(valid)}")
    return REGISTRY[name]


def load(name: str, source: str, dataset: str | None = None, preference_dataset: str | None = None):
    """(resolved source, TaskData) of task `name`."""
    return get(name).load(source, dataset, preference_dataset)
