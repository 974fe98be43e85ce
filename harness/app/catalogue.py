"""Which hub models and data sets a run or an evaluation needs (the catalogue), and the preflight that checks they
are here before anything loads; where an asset is and how it is fetched is harness/assets.py."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from evals.open_llm import open_llm_assets
from harness.assets import Asset, model_asset, prepare_command, require
from harness.errors import UserError
from harness.tasks.tldr import hub_assets as tldr_data

__all__ = ["chat_assets", "for_config", "open_llm_assets", "preflight_run", "run_command_for", "tldr_data"]


def for_config(cfg, *, data: bool = True) -> list[Asset]:
    """The models and data a RunConfig trains with. Data only for source `hub` (`auto` falls back by design, and
    synthetic or a directory need nothing fetched)."""
    from harness.app.starting_point import BASE_MODELS

    m = cfg.model
    hint = (f"build it with `python -m harness build-start --preset {cfg.preset}` (docs/starting_point.md), or "
            f"point --set model.policy / model.reward_model at existing ones") if cfg.preset in BASE_MODELS else ""
    out = model_asset("policy", m.policy, hint) + model_asset("reward model", m.reward_model, hint) + \
        model_asset("tokenizer", m.tokenizer)
    if any(a.kind == "local" and not Path(a.name).exists() for a in out) and cfg.preset in BASE_MODELS:
        out += model_asset("base model (build-start)", BASE_MODELS[cfg.preset])
    if data and cfg.task.source in ("hub", "auto") and cfg.task.name == "gsm8k":  # gsm8k's auto is the hub
        from harness.tasks.gsm8k import hub_assets

        out += hub_assets()
    if data and cfg.task.source == "hub":
        if cfg.task.name == "tldr":
            out += tldr_data(cfg.task.dataset, cfg.task.preference_dataset)
        elif cfg.task.name == "chat" and cfg.task.dataset:
            from harness.tasks.chat import HUB_SPLITS

            splits = tuple(dict.fromkeys(HUB_SPLITS.get(cfg.task.dataset, ())))
            out.append(Asset("chat prompts", "dataset", cfg.task.dataset, splits=splits))
    return out


def chat_assets(alpaca_reference: str | None = None, mt_bench_questions: str | None = None) -> list[Asset]:
    """AlpacaEval 2.0 (reference outputs unless a file is given, and the LC weights) and MT-Bench's questions with
    their reference answers (the hub set carries them) unless a file is given."""
    from evals.alpaca_eval import HUB_REFERENCE_FILE, HUB_REPO, LC_WEIGHTS_FILE
    from evals.mt_bench import HUB_DATASET

    out = [] if alpaca_reference else [Asset("AlpacaEval reference outputs", "file", HUB_REPO, HUB_REFERENCE_FILE,
                                             repo_type="dataset")]
    out.append(Asset("AlpacaEval LC weights", "file", HUB_REPO, LC_WEIGHTS_FILE, repo_type="dataset"))
    if not mt_bench_questions:
        out.append(Asset("MT-Bench questions and reference answers", "dataset", HUB_DATASET, splits=("train",)))
    return out


def run_command_for(cfg) -> str:
    """The prepare command for a run config: its preset, plus --set for the model and data keys the run changed."""
    from harness.config import resolve

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
