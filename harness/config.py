"""Typed run configuration. Presets are YAML data (harness/presets/), may `include` each other, reject unknown keys,
and are overridden from the command line with dotted keys (`--set train.lr=1e-4`, `--set algo.eta=0.5`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import UserError
from harness.tasks import TASKS

PRESET_DIR = Path(__file__).parent / "presets"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyRecipe(Strict):
    """How the harness builds its own tiny Pythia-architecture preset (SFT policy + reward model) offline."""

    vocab_size: int = 1024
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    max_prompt_tokens: int = 128
    max_response_tokens: int = 32
    sft_steps: int = 600
    sft_batch: int = 32
    sft_lr: float = 2e-3
    rm_steps: int = 400
    rm_batch: int = 32
    rm_lr: float = 5e-4
    seed: int = 0


class LoraSettings(Strict):
    r: int = 1024
    alpha: int = 2048
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"


class ModelSettings(Strict):
    policy: str = Field("builtin:tiny", description="hub name, local directory, or builtin:tiny")
    reward_model: str | None = Field(None, description="hub name or local directory; builtin presets bring their own")
    tokenizer: str | None = None
    lora: LoraSettings | None = None
    reference: Literal["frozen_copy", "adapter_disabled"] = "frozen_copy"
    trainable_layers: int | None = Field(None, gt=0, description="train only the last N transformer blocks")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    size_hint: float | None = Field(None, description="parameter count, for the dry run's memory estimate offline")
    tiny: TinyRecipe = TinyRecipe()
    cache_dir: str | None = Field(None, description="where built presets live (default $HARNESS_CACHE or ~/.cache/harness)")


class TaskSettings(Strict):
    name: str = "tldr"
    source: str = Field("auto", description="auto | hub | synthetic | a local directory")
    dataset: str | None = Field(None, description="hub data set of the chat task")
    max_prompt_tokens: int = Field(512, gt=8)


class GenerationSettings(Strict):
    temperature: float = Field(0.1, gt=0, description="sampling temperature; also divides every training log-prob")
    max_new_tokens: int = Field(53, gt=0)
    engine: Literal["auto", "hf", "vllm"] = Field("auto", description="rollout engine: the backbone's sampler (hf), "
                                                  "vLLM, or auto (vLLM when installed and a GPU is present)")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="GPU memory share for vLLM (colocated)")


class TrainSettings(Strict):
    iterations: int = Field(100, ge=0)
    prompts_per_iteration: int = Field(512, gt=0)
    micro_batch_prompts: int | None = Field(None, gt=0, description="gradient accumulation: prompts per forward")
    lr: float = Field(3e-6, ge=0)
    adam_eps: float = 1e-5
    weight_decay: float = 0.01
    kl_coef: float = Field(0.05, ge=0, description="beta in r = score - beta * kl")
    max_grad_norm: float | None = None
    checkpoint_every: int = Field(10, ge=0, description="resume checkpoint every N iterations and at the end of "
                                  "training (0: none, a killed run then starts over)")
    keep_checkpoints: bool = Field(False, description="keep the last resume checkpoint (optimizer state included) "
                                   "after the run completes")


class EvalSettings(Strict):
    prompts: int = Field(600, gt=0)
    temperature: float = Field(0.01, gt=0)
    every: int = Field(0, ge=0, description="held-out evaluation every N iterations (0: at the end only)")
    judge: Literal["auto", "gold", "openai", "none"] = "auto"
    judge_model: str = "gpt-4o"


class RunConfig(Strict):
    algo: str = "rebel"
    algo_args: dict[str, Any] = {}
    preset: str = "tiny"
    description: str = ""
    task: TaskSettings = TaskSettings()
    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    seed: int = 0
    output_dir: str = "results/runs"
    run_id: str | None = None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


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
    data = deep_merge(_load_preset_dict(preset), overrides or {})
    data["preset"] = preset
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"invalid config value at {where}: {first['msg']}") from None
    if cfg.task.name not in TASKS:
        raise UserError(f"unknown task {cfg.task.name!r}; valid tasks: {', '.join(TASKS)}")
    return cfg
