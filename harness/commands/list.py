"""`harness list`: the registered optimizers, tasks, evaluation suites and presets."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_command() -> None:
        """List optimizers, tasks, evaluation suites and presets."""
        from algorithms.base import REGISTRY, names
        from evals import suites
        from harness import tasks
        from harness.app.config import preset_names, resolve

        print("algorithms:")
        for name in names():
            print(f"  {name:18s} {(REGISTRY[name].__doc__ or '').strip().splitlines()[0]}")
        print("tasks:")
        for name in tasks.names():
            task = tasks.REGISTRY[name]
            print(f"  {name:18s} {task.summary} (suite {task.suite})")
        print("suites (harness eval --suite):")
        for name in suites.names():
            print(f"  {name:18s} {suites.REGISTRY[name].summary}")
        print("presets:")
        for name in preset_names():
            print(f"  {name:18s} {resolve(name).description}")
        from harness.app import image_config

        for name in image_config.preset_names():  # the image task's (docs/image.md)
            print(f"  {name:18s} {image_config.resolve(name).description}")
