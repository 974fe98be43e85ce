"""`harness build-start`: train a TL;DR preset's starting point (SFT policy + reward model) from the task's data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.app.config import parse_overrides, resolve


def register(app: typer.Typer) -> None:
    @app.command("build-start")
    def build_start_command(
        preset: str = typer.Option("tldr-pythia-1.4b", "--preset", "-p", help="TL;DR preset whose size to build"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="writes OUT/sft and OUT/reward "
                                                                     "(default: models/PRESET)"),
        source: Optional[str] = typer.Option(None, "--source", help="data: hub | DIR | synthetic (smoke tests)"),
        set_: list[str] = typer.Option([], "--set", help="override a setting: lr=1e-5, lr_scheduler=linear, "
                                                         "base_model=DIR (docs/starting_point.md)"),
    ) -> None:
        """Train OUT/sft and OUT/reward (the authors' SFT / RM recipe) and print the --set line that uses them."""
        from harness.app.starting_point import (build, check_base_model, check_batch, load_data, main_process,
                                            settings_for, use_line)

        out = out or Path("models") / Path(preset).stem
        settings, preset_source = settings_for(preset, parse_overrides(set_))
        check_batch(settings)  # every check before anything heavy, one line each
        check_base_model(settings.base_model)
        task = resolve(preset).task  # the preset's data sets: the authors' SFT prompts and preference pairs
        data = load_data(source or preset_source, task.dataset, task.preference_dataset, preset)
        say = print if main_process() else (lambda *a: None)
        sft_rows, pairs = len(data.sft_train[: settings.sft_train_rows]), len(data.pref_train[: settings.rm_train_rows])
        say(f"Building the {preset} starting point from {settings.base_model} on {data.source} data "
              f"({sft_rows} SFT rows, {pairs} preference pairs) in {out}")
        build(settings, data, out, log=say)
        say(f"done; use it with:\n  {use_line(out)}")
