"""Which hub models and data sets a run or an evaluation needs (the catalogue), and the preflight that checks they
are here before anything loads; where an asset is and how it is fetched is harness/core/assets.py."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.core.assets import Asset, model_asset, prepare_command, require
from harness.core.errors import UserError

__all__ = ["for_config", "preflight_run", "run_command_for", "suite_data"]


def for_config(cfg, *, data: bool = True) -> list[Asset]:
    """The models and data a RunConfig trains with: the data its task reads from the hub (`auto` of a task with an
    offline fallback needs none: it falls back by design; synthetic or a directory need nothing fetched)."""
    from harness.app.starting_point import BASE_MODELS

    m = cfg.model
    hint = (f"build it with `python -m harness build-start --preset {cfg.preset}` (docs/starting_point.md), or "
            f"point --set model.policy / model.reward_model at existing ones") if cfg.preset in BASE_MODELS else ""
    out = model_asset("policy", m.policy, hint) + model_asset("reward model", m.reward_model, hint) + \
        model_asset("tokenizer", m.tokenizer)
    if any(a.kind == "local" and not Path(a.name).exists() for a in out) and cfg.preset in BASE_MODELS:
        out += model_asset("base model (build-start)", BASE_MODELS[cfg.preset])
    if data:
        from harness import tasks

        task = tasks.get(cfg.task.name)
        if not (cfg.task.source == "auto" and task.offline_fallback):
            out += task.hub_data(cfg.task)
    return out


def suite_data(suite, cfg=None) -> list[Asset]:
    """The hub data of the tasks a task suite evaluates (`harness prepare --suite NAME`): a config's own data set
    names for its task, the tasks' defaults otherwise."""
    from harness import tasks
    from harness.core.settings import TaskSettings

    out: list[Asset] = []
    for name in tasks.names():
        if tasks.get(name).suite != suite.name:
            continue
        settings = cfg.task if cfg is not None and cfg.task.name == name else TaskSettings(name=name)
        out += tasks.get(name).hub_data(settings.model_copy(update={"source": "hub"}))
    return out


def run_command_for(cfg) -> str:
    """The prepare command for a run config: its preset, plus --set for the model and data keys the run changed."""
    from harness.app.config import resolve

    try:
        base = resolve(cfg.preset)
    except UserError:  # a preset file that moved: name every key
        base = None
    keys = [("model", "policy"), ("model", "reward_model"), ("model", "tokenizer"), ("task", "source"),
            ("task", "dataset"), ("task", "preference_dataset")]
    sets = [f"{a}.{b}={getattr(getattr(cfg, a), b)}" for a, b in keys
            if base is None or getattr(getattr(cfg, a), b) != getattr(getattr(base, a), b)]
    return prepare_command(preset=cfg.preset if base is not None else None, sets=sets)


def preflight_run(cfg, log: Callable = print) -> None:
    """`harness run`: the models and data of the config, before any data or model loads."""
    require(for_config(cfg), run_command_for(cfg), log=log)
