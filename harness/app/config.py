"""The application's run configuration: a run's backbone settings (harness/core/settings.py) with its evaluation
and logging sections, typed. Presets are YAML data (harness/presets/), may `include` each other, reject unknown keys,
and are overridden from the command line with dotted keys (`--set train.lr=1e-4`, `--set algo.eta=0.5`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PositiveInt, ValidationError, model_serializer, model_validator

from evals.judge import DEFAULT_JUDGE_MODEL
from evals.runs import ROW_SECTIONS, TABLE_SECTIONS
from harness.core.errors import UserError, invalid
from harness.core.settings import _drop_defaults, GenerationSettings, ModelSettings, Strict, TaskSettings, TrainSettings

PRESET_DIR = Path(__file__).parent.parent / "presets"




class EvalSettings(Strict):
    prompts: int = Field(600, gt=0)
    split: Literal["test", "validation"] = Field("test", description="held-out split the prompts are drawn from "
                                                 "(paper: test)")
    selection: Literal["random", "first"] = Field("random", description="a seeded random subset of the split "
                                                  "(paper: 600 random test prompts) or its first N rows")
    selection_seed: int = Field(0, description="seed of the random subset: the same prompts for every run and seed")
    temperature: float = Field(0.01, gt=0)
    every: int = Field(0, ge=0, description="held-out evaluation every N iterations (0: at the end only)")
    at: list[PositiveInt] = Field([], description="also evaluate after these iterations: dense where the KL moves "
                                  "fastest (early), so matched-KL tables interpolate between measured points")
    missing_eos_penalty: bool = Field(False, description="replace the RM score of an evaluated response without "
                                      "EOS by train.missing_eos_score (the authors' evaluation reports raw scores)")
    judge: Literal["auto", "gold", "openai", "none"] = "auto"
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_order: Literal["both", "random"] = Field("both", description="both: judge A/B and B/A, disagreement is a "
                                                   "tie (stricter); random: one seeded random order per pair (N+ code)")
    judge_template: str | None = Field(None, description="a prompt template file with {post}, {a}, {b} "
                                       "(default: evals/templates/tldr_judge.txt)")
    samples: int | None = Field(None, gt=0, description="responses sampled per held-out prompt by the suites that "
                                "sample several (pass@k): None, the suite's own (math 8, reward 4)")

    @model_serializer(mode="wrap")
    def _without_default_samples(self, handler):
        """`samples` is left out of a dump while it is None (run ids and config hashes unchanged)."""
        return _drop_defaults(handler(self), {"samples": None})

    def due(self, iteration: int, last: int) -> bool:
        """A held-out evaluation after `iteration` (the final one, after `last`, is the run's own)."""
        periodic = bool(self.every) and iteration % self.every == 0
        return (periodic or iteration in self.at) and iteration != last


class LogSettings(Strict):
    trackers: list[str] | str | None = Field(
        "none", description="experiment trackers that also get every metrics line (accelerate.tracking names: "
        "tensorboard, wandb (offline), mlflow, ...; a list or comma string; auto: tensorboard when installed; "
        "none); metrics.jsonl stays the source of truth (harness/app/trackers.py)")


class RunConfig(Strict):
    algo: str = "rebel"
    algo_args: dict[str, Any] = {}
    preset: str = "tiny"
    description: str = ""
    task: TaskSettings
    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    log: LogSettings = LogSettings()
    seed: int = 0
    output_dir: str = "results/runs"
    run_id: str | None = None

    @model_validator(mode="after")
    def _register_task_file(self):
        """A config of a task read from a file (a run directory's, a sweep's) registers that task again, so that
        `harness eval` and `report` in another process find it by name; a file that has moved is left for the
        commands that need the task to report."""
        if self.task.file and Path(self.task.file).is_file():
            from harness import tasks

            tasks.register_file(self.task.file)
        return self


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_task_name(preset: str) -> str | None:
    """The task a preset was written for (its data source belongs to that task)."""
    return (_load_preset_dict(preset).get("task") or {}).get("name")


def _load_preset_dict(name: str, seen: tuple[str, ...] = ()) -> dict:
    path = PRESET_DIR / f"{name}.yaml" if not name.endswith((".yaml", ".yml")) else Path(name)
    if not path.exists():
        raise UserError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())} (or a .yaml path)")
    if name in seen:
        raise UserError(f"preset include cycle: {' -> '.join(seen + (name,))}")
    data = yaml.safe_load(path.read_text()) or {}
    base = {}
    for parent in data.pop("include", []) or []:
        base = deep_merge(base, _load_preset_dict(parent, seen + (name,)))
    return deep_merge(base, data)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """["train.lr=1e-4", "algo.eta=0.5"] -> nested dict; values parsed as YAML scalars; `algo.` goes to algo_args."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r} (e.g. --set train.lr=1e-4)")
        key, raw = pair.split("=", 1)
        path = key.strip().split(".")
        if path[0] == "algo" and len(path) > 1:
            path = ["algo_args"] + path[1:]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw)
    return out


def resolve(preset: str = "tiny", overrides: dict | None = None) -> RunConfig:
    """The preset, then its `per_algo` section for the chosen optimizer (a schedule that differs by optimizer, such
    as offline DPO's batch 64 for one pass over the pairs), then the command line's overrides."""
    from harness import tasks

    data = _load_preset_dict(preset)
    per_algo = data.pop("per_algo", None) or {}
    algo = (overrides or {}).get("algo", data.get("algo", RunConfig.model_fields["algo"].default))
    data = deep_merge(data, per_algo.get(algo, {}))
    overrides = dict(overrides or {})
    named = (overrides.get("task") or {}).get("name") or (data.get("task") or {}).get("name")
    own = ("name", "source", "dataset", "preference_dataset")  # the preset's task's data
    if named != (data.get("task") or {}).get("name"):  # another task on this preset: not the preset's data source
        data["task"] = {k: v for k, v in (data.get("task") or {}).items() if k not in own}  # (--task math: auto)
    if tasks.is_task_file(named):  # a task file: its settings, then the command line's; its name, not its path
        task = tasks.get(named)
        data = deep_merge(data, task.defaults)
        overrides["task"] = {**(overrides.get("task") or {}), "name": task.name, "file": task.file}
    data = deep_merge(data, overrides)
    data["preset"] = preset
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise invalid(e, "invalid config value") from None
    task = tasks.find(cfg.task.name)
    if task is not None and task.check is not None:
        task.check(cfg)
    return cfg  # task and algorithm names are checked against their registries where they are used


NOT_A_SETTING = ("model.cache_dir",)  # where files live changes no number


def _dotted(data: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_settings(cfg: RunConfig) -> dict:
    """The run's settings of ROW_SECTIONS and TABLE_SECTIONS that differ from its preset's own (with the preset's
    per-optimizer section), as dotted keys: what `--set` or a sweep grid changed, so that `harness report` never
    pools a run at lr 1e-5 with the preset's lr as seeds of one row. {} when the preset is not a named one."""
    try:  # a task file's settings are its runs' base, not changes (tasks in code keep the preset's base)
        task = {"task": {"name": cfg.task.file}} if cfg.task.file else {}
        base = _dotted(resolve(cfg.preset, {"algo": cfg.algo, **task}).model_dump())
    except UserError:
        return {}
    mine = _dotted(cfg.model_dump())
    return {k: v for k, v in mine.items() if k.split(".")[0] in ROW_SECTIONS + TABLE_SECTIONS
            and k not in NOT_A_SETTING and base.get(k) != v}

