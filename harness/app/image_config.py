"""The image task's run configuration: typed like the language runs' (unknown keys rejected), read from the image
presets (harness/presets/image/*.yaml, which may `include` each other and hold a `per_algo` section) and overridden
with the same dotted `--set` keys (`--set train.lr=1e-4`, `--set algo.eta=0.5`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from harness.core.errors import UserError, invalid
from harness.core.settings import Strict

IMAGE_PRESET_DIR = Path(__file__).parent.parent / "presets" / "image"


class TinyImageRecipe(Strict):
    """The offline stand-in's UNet and its pre-training (harness/tasks/image.py `build_tiny`)."""

    size: int = Field(16, ge=8, description="image side in pixels (pixel space, no VAE)")
    channels: list[int] = [16, 32]
    dim: int = Field(16, description="prompt embedding width (the UNet's cross_attention_dim)")
    pretrain_steps: int = Field(300, ge=1)
    pretrain_batch: int = 32
    pretrain_lr: float = 2e-3
    seed: int = 0


class ImageModel(Strict):
    kind: Literal["tiny", "lcm"] = "tiny"
    name: str | None = Field(None, description="kind lcm: the hub name of the latent consistency model")
    lora_r: int = Field(4, gt=0)
    lora_alpha: int = Field(4, gt=0)
    steps: int = Field(8, gt=0, description="denoising steps: the horizon of a trajectory")
    original_steps: int = Field(50, description="LCM's original schedule the steps are taken from")
    guidance_scale: float = Field(8.0, description="kind lcm: the guidance embedding's w + 1 (RLCM: 8)")
    resolution: int = Field(512, description="kind lcm: image side; latents are 1/8 of it")
    max_prompt_tokens: int = 50
    logp_reduce: Literal["mean", "sum"] = Field("mean", description="a step's Gaussian log-density averaged over "
                                                "latent dimensions (RLCM, DDPO) or summed (the exact density)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="frozen weights' dtype")
    device: str = "cpu"
    cache_dir: str | None = None
    tiny: TinyImageRecipe = TinyImageRecipe()


class ImageTask(Strict):
    name: str = "image"
    prompts: str = Field("animals", description="`animals` (the paper's 45) or a text file, one prompt a line")
    reward: str = Field("colourfulness", description="colourfulness | brightness | compressibility | aesthetic")


class ImageTrain(Strict):
    iterations: int = Field(20, ge=0)
    prompts_per_iteration: int = Field(8, gt=0, description="prompts sampled per iteration (with replacement)")
    lr: float = Field(3e-4, gt=0)
    max_grad_norm: float | None = Field(None, description="None: no clipping (RLCM's REBEL); RLCM's PPO: 5")
    weight_decay: float = 0.0


class ImageEval(Strict):
    prompts: int = Field(16, gt=0, description="the first N prompts (cycled), one image each")
    seed: int = Field(1234, description="the evaluation's noise: the same images' starting noise for every run")
    every: int = Field(5, ge=0, description="evaluate every N iterations (0: at the end only)")


class ImageRunConfig(Strict):
    kind: Literal["image"] = "image"
    algo: str = "rebel"
    algo_args: dict[str, Any] = {}
    preset: str = "image-tiny"
    description: str = ""
    task: ImageTask = ImageTask()
    model: ImageModel = ImageModel()
    train: ImageTrain = ImageTrain()
    eval: ImageEval = ImageEval()
    seed: int = 0
    output_dir: str = "results/runs"
    run_id: str | None = None


def preset_names() -> list[str]:
    return sorted(p.stem for p in IMAGE_PRESET_DIR.glob("*.yaml"))


def _load(name: str, seen: tuple[str, ...] = ()) -> dict:
    from harness.app.config import deep_merge

    path = IMAGE_PRESET_DIR / f"{name}.yaml" if not name.endswith((".yaml", ".yml")) else Path(name)
    if not path.exists():
        raise UserError(f"unknown image preset {name!r}; valid: {', '.join(preset_names())} (or a .yaml path)")
    if name in seen:
        raise UserError(f"preset include cycle: {' -> '.join(seen + (name,))}")
    data = yaml.safe_load(path.read_text()) or {}
    base: dict = {}
    for parent in data.pop("include", []) or []:
        base = deep_merge(base, _load(parent, seen + (name,)))
    return deep_merge(base, data)


def is_image_preset(name: str | None) -> bool:
    if not name:
        return False
    if name.endswith((".yaml", ".yml")):
        return Path(name).is_file() and (yaml.safe_load(Path(name).read_text()) or {}).get("kind") == "image"
    return name in preset_names()


def resolve(preset: str = "image-tiny", overrides: dict | None = None) -> ImageRunConfig:
    """The preset, its `per_algo` section for the chosen optimizer, then the overrides; validated."""
    from harness.app.config import deep_merge
    from algorithms.trajectory import make

    data = _load(preset)
    per_algo = data.pop("per_algo", None) or {}
    algo = (overrides or {}).get("algo", data.get("algo", "rebel"))
    data = deep_merge(deep_merge(data, per_algo.get(algo, {})), overrides or {})
    data["preset"] = preset
    try:
        cfg = ImageRunConfig.model_validate(data)
    except ValidationError as e:
        raise invalid(e, "invalid image config value") from None
    make(cfg.algo, cfg.algo_args)  # unknown optimizer or setting: one line now, not after the build
    if cfg.model.kind == "lcm" and not cfg.model.name:
        raise UserError("model.kind lcm needs model.name (e.g. SimianLuo/LCM_Dreamshaper_v7)")
    return cfg
