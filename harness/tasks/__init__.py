"""Tasks by name: each turns a data source into TaskData (training prompts, held-out prompts, preference pairs)."""
from __future__ import annotations

from harness.errors import UserError

TASKS = ("tldr", "chat")


def load(name: str, source: str, dataset: str | None = None, preference_dataset: str | None = None):
    """(resolved source, TaskData) of task `name`."""
    if name == "tldr":
        from harness.tasks.tldr import load_task, resolve_source

        resolved = resolve_source(source)
        return resolved, load_task(resolved, dataset, preference_dataset)
    if name == "chat":
        from harness.tasks.chat import load_chat

        return source, load_chat(source, dataset)
    raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
