"""The backbone's run settings: the model, the task's prompts, generation and training sections of a run's
configuration (typed, unknown keys rejected), and `RunSettings`, what the backbone reads of a whole run config. The
application's config (harness/app/config.py) adds evaluation, logging and presets around them."""
from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


def _drop_defaults(data, defaults: dict):
    """A dump without the fields that hold the value they had before they existed (see TinyRecipe.posts)."""
    if isinstance(data, dict):
        for key, value in defaults.items():
            if key in data and data[key] == value:
                del data[key]
    return data


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
    schedule: Literal["linear", "cosine"] = Field("linear", description="after a 5% warm-up, decay to 0")
    length_buckets: int = Field(0, ge=0, description="0: random batches; N > 1: batches of similar length drawn "
                                "from runs of N batches (less padding; harness/tasks/tiny.py)")
    seed: int = 0
    posts: Literal["standard", "hard"] = Field("standard", description="the synthetic stand-in's profile the build "
                                               "trains on (task.source synthetic / synthetic-hard)")

    @model_serializer(mode="wrap")
    def _without_standard_posts(self, handler):
        """`posts` is left out of a dump while it is "standard": every hash of a dumped recipe or run config (the
        build's cache key, run ids, the SFT-baseline cache, the arith build's key) stays what it was before the field
        existed, so cached builds and committed runs stay valid; a hard recipe hashes to keys of its own."""
        data = handler(self)
        if isinstance(data, dict) and data.get("posts") == "standard":
            del data["posts"]
        return data


class LoraSettings(Strict):
    r: int = 1024
    alpha: int = 2048
    dropout: float = 0.0
    target_modules: list[str] | str | None = Field(
        None, description="None: PEFT's default for the architecture, as the REBEL authors (no target_modules: "
        "query_key_value on GPT-NeoX, q_proj/v_proj on Llama); 'all-linear'; or a list of module names")


class ModelSettings(Strict):
    policy: str = Field("builtin:tiny", description="hub name, local directory, or builtin:tiny")
    reward_model: str | None = Field(None, description="hub name or local directory; builtin presets bring their own")
    tokenizer: str | None = None
    lora: LoraSettings | None = None
    reference: Literal["frozen_copy", "adapter_disabled"] = "frozen_copy"
    trainable_layers: int | None = Field(None, gt=0, description="train only the last N transformer blocks")
    train_head: bool = Field(False, description="with trainable_layers: the final norm and an untied output layer "
                             "train too (the REBEL authors' chat scripts)")
    frozen_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="storage dtype of the frozen models (reference, reward model, LoRA base weights); trained "
        "weights are always float32 (harness/core/precision.py); falls back to float32 where it would run emulated")
    compute_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "float32", description="dtype of the forward passes (autocast); auto: bfloat16 where the device runs it "
        "natively (CUDA with bf16, or a CPU whose start-up matmul probe shows bf16 at least as fast as fp32)")
    logprob_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="arithmetic of the training log-probs: float32 (logits upcast, log-softmax and sums in "
        "fp32) or bfloat16 (the REBEL authors' DeepSpeed bf16 model: logits, temperature division, log-softmax and "
        "the summed sequence log-probs each rounded to bf16; docs/fidelity.md)")
    size_hint: float | None = Field(None, description="parameter count, for the dry run's memory estimate offline")
    tiny: TinyRecipe = TinyRecipe()
    cache_dir: str | None = Field(None, description="where built presets live (default $HARNESS_CACHE or ~/.cache/harness)")

    @model_serializer(mode="wrap")
    def _without_default_logprob_dtype(self, handler):
        """`logprob_dtype` is left out of a dump while it is float32, so run ids and config hashes stay what they
        were before the field existed (as TinyRecipe.posts)."""
        return _drop_defaults(handler(self), {"logprob_dtype": "float32"})

    @model_validator(mode="before")
    @classmethod
    def _older_dtype_name(cls, data):
        """`model.dtype` is the older name of frozen_dtype; the built-in presets use the new one, so a `dtype` comes
        from the user (--set, an own preset) and wins."""
        if isinstance(data, dict) and "dtype" in data:
            data = {**data, "frozen_dtype": data["dtype"]}
            del data["dtype"]
        return data


class TaskSettings(Strict):
    name: str = Field(description="the task (harness list): every preset names one")
    source: str = Field("auto", description="auto | hub | synthetic | synthetic-hard | a local directory")
    dataset: str | None = Field(None, description="hub data set of prompts (tldr: SFT prompts and references; chat: "
                                "prompts); None: the task's default")
    preference_dataset: str | None = Field(None, description="hub data set of preference pairs (tldr); None: the "
                                           "task's default")
    max_prompt_tokens: int = Field(512, gt=8)
    file: str | None = Field(None, description="the task file the task was read from (set from --task FILE.yaml)")

    @model_serializer(mode="wrap")
    def _without_file(self, handler):
        """`file` is left out of a dump while it is None (run ids and config hashes of tasks in code unchanged)."""
        return _drop_defaults(handler(self), {"file": None})


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
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    kl_coef: float = Field(0.05, ge=0, description="beta in r = score - beta * kl")
    missing_eos_score: float = Field(-1.0, description="the score of a sampled response without EOS (replaces "
                                     "its reward-model score)")
    missing_eos_test: Literal["eos", "pad"] = Field(
        "eos", description="which responses get missing_eos_score: eos, those without an EOS token (the N+ code); pad, "
        "those without a PAD token after truncation (the REBEL authors' contain_pad_token): also a response whose EOS "
        "is its last generated token, at generation.max_new_tokens")
    reward_scale: float = Field(1.0, gt=0, description="multiplies reward-model scores (the authors' UltraFeedback "
                                "script divides Eurus-RM-7b's by 1000; the paper uses FsfairX's unscaled)")
    max_grad_norm: float | None = None
    lr_schedule: Literal["linear", "cosine"] = Field("linear", description="decay to 0, no warm-up")
    lr_decay: Literal["per_iteration", "per_step"] = Field(
        "per_iteration", description="linear decay to 0 once per iteration, constant over its epochs and minibatches "
        "(the REBEL/N+ code's anneal_lr), or after every optimizer step")
    checkpoint_every: int = Field(10, ge=0, description="resume checkpoint every N iterations and at the end of "
                                  "training (0: none, a killed run then starts over)")
    keep_checkpoints: bool = Field(False, description="keep the last resume checkpoint (optimizer state included) "
                                   "after the run completes")
    staleness: int = Field(0, ge=0, description="rollouts of update t are sampled by the policy of k updates "
                           "before (an asynchronous sampler k steps ahead; harness/core/off_policy.py); 0: on-policy")
    rollout_correction: Literal["none", "token_truncate", "sequence_truncate", "token_mask", "sequence_mask"] = Field(
        "none", description="importance weights pi_t / mu of the sampled tokens in every online optimizer's loss "
        "(TRL's vllm_importance_sampling_mode; token_truncate is TIS, token_mask MIS / IcePop)")
    correction_min: float | None = Field(None, ge=0, description="lower bound of the ratio (truncate: clamp, mask: "
                                         "drop below); None: none")
    correction_max: float | None = Field(3.0, gt=0, description="upper bound of the ratio (TRL's default 3.0)")

    @model_serializer(mode="wrap")
    def _without_default_eos_test(self, handler):
        """`missing_eos_test` and the off-policy settings are left out of a dump at their defaults (run ids and
        config hashes unchanged)."""
        return _drop_defaults(handler(self), {"missing_eos_test": "eos", "staleness": 0, "rollout_correction": "none",
                                              "correction_min": None, "correction_max": 3.0})


class RunSettings(Protocol):
    """What the backbone reads of a run's configuration (harness.app.config.RunConfig is one)."""

    seed: int
    model: ModelSettings
    task: TaskSettings
    generation: GenerationSettings
    train: TrainSettings
