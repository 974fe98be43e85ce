"""`harness run --dry-run`: resolve a preset, check that models and data can be had, estimate memory, print the plan.

Nothing is trained or downloaded. Parameter counts are exact when the model's config.json is local (a directory or
the Hugging Face cache): the model is instantiated on the meta device (no memory) and LoRA applied to it; otherwise
the preset's `model.size_hint` is used and the estimate says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from algorithms.base import make
from harness.config import RunConfig
from harness.reward_heads import _local_config

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Plan:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, key: str, value: str) -> None:
        self.lines.append(f"{key:<14}{value}")


def availability(name: str) -> tuple[bool, str]:
    """Is a model or data set present locally, or reachable on the hub? (never downloads weights)"""
    if name.startswith("builtin:"):
        return True, "built by the harness on first use (cached)"
    if Path(name).exists():
        return True, f"local directory {name}"
    if _local_config(name) is not None:
        return True, f"in the local Hugging Face cache ({name})"
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(name, timeout=5)
        return True, f"reachable on the hub ({name})"
    except Exception as e:  # offline, gated, or missing: all mean "cannot be had now"
        return False, f"NOT reachable: {name} is neither local nor reachable on the hub ({type(e).__name__})"


def parameter_counts(name: str, cfg: RunConfig) -> tuple[int, int] | None:
    """(total, trainable) parameters of the policy from its local config, or None when the config is not local."""
    config = _local_config(name)
    if config is None:
        return None
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.for_model(**config)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(model_config)
    total = sum(p.numel() for p in model.parameters())
    if cfg.model.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.model.lora.r, lora_alpha=cfg.model.lora.alpha,
                                                 target_modules=cfg.model.lora.target_modules, task_type="CAUSAL_LM"))
        return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.model.trainable_layers:
        return total, int(total * cfg.model.trainable_layers / model_config.num_hidden_layers)
    return total, total


def estimate_memory_gb(total: int, trainable: int, weight_bytes: int, frozen_copies: int,
                       activation_tokens: int, hidden: int | None = None, layers: int | None = None) -> dict:
    """Rough peak memory: weights of policy + frozen copies (reference, reward model, critic), fp32 gradients and
    AdamW states of the trainable parameters, and activations (about 34 bytes x hidden x layers per token without
    checkpointing, Korthikanti et al. 2022) when the shape is known."""
    gb = 1024**3
    out = {"weights": (1 + frozen_copies) * total * weight_bytes / gb, "grads_and_adam": trainable * 12 / gb}
    if hidden and layers:
        out["activations"] = activation_tokens * hidden * layers * 34 / gb
    out["total"] = sum(out.values())
    return out


def dry_run(cfg: RunConfig) -> Plan:
    plan = Plan()
    algo = make(cfg.algo, cfg.algo_args)
    plan.add("algorithm", f"{algo.name} {algo.hyperparameters()}")
    source = cfg.task.source
    if cfg.task.name == "tldr" and source in ("auto", "hub"):
        from harness.tasks.tldr import HUB_SFT, hub_reachable

        ok = hub_reachable()
        plan.add("data", f"tldr from the hub ({HUB_SFT}): " + ("reachable" if ok else
                 "NOT reachable" + (" -> auto falls back to the synthetic stand-in" if source == "auto" else "")))
        if not ok and source == "hub":
            plan.problems.append("data: the hub is not reachable")
    else:
        present = source == "synthetic" or Path(source).is_dir() or cfg.task.name == "chat" and source == "hub"
        plan.add("data", f"{cfg.task.name} from {source}" + (f" ({cfg.task.dataset})" if cfg.task.dataset else ""))
        if not present:
            plan.problems.append(f"data: {source} does not exist")
    for role, name in (("policy", cfg.model.policy), ("reward model", cfg.model.reward_model or "builtin")):
        if name == "builtin":
            continue
        ok, note = availability(name)
        plan.add(role, note)
        if not ok:
            plan.problems.append(f"{role}: {name} is not available")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    counts = parameter_counts(cfg.model.policy, cfg) if not cfg.model.policy.startswith("builtin:") else None
    config = _local_config(cfg.model.policy) or {}
    if counts is None and cfg.model.size_hint:
        partial = cfg.model.lora is not None or cfg.model.trainable_layers
        counts = (int(cfg.model.size_hint), 0 if partial else int(cfg.model.size_hint))
        plan.add("parameters", f"~{counts[0] / 1e9:.1f}B from the preset's size hint (config not local"
                 + ("; the trainable part is unknown until it is, and left out below)" if partial else ")"))
    elif counts is not None:
        plan.add("parameters", f"{counts[0] / 1e6:,.1f}M total, {counts[1] / 1e6:,.1f}M trainable")
    if counts is not None:
        frozen = (cfg.model.reference == "frozen_copy" or cfg.model.lora is None) + 1 + algo.needs_critic
        tokens = ((cfg.train.micro_batch_prompts or cfg.train.prompts_per_iteration) * algo.samples_per_prompt
                  * (cfg.task.max_prompt_tokens + cfg.generation.max_new_tokens))
        mem = estimate_memory_gb(counts[0], counts[1], BYTES[cfg.model.dtype], frozen, tokens,
                                 config.get("hidden_size"), config.get("num_hidden_layers"))
        parts = ", ".join(f"{k} {v:.1f}" for k, v in mem.items() if k != "total")
        plan.add("memory", f"~{mem['total']:.1f} GB peak on {device} ({parts}; rough, assumes the reward model is "
                 f"the policy's size)")
    t = cfg.train
    responses = t.iterations * t.prompts_per_iteration * algo.samples_per_prompt
    plan.add("plan", f"{t.iterations} iterations x {t.prompts_per_iteration} prompts x {algo.samples_per_prompt} "
             f"samples = {responses:,} responses of {cfg.generation.max_new_tokens} tokens at temperature "
             f"{cfg.generation.temperature}; {t.iterations * algo.epochs * algo.minibatches:,} optimizer steps "
             f"(lr {t.lr}, kl_coef {t.kl_coef})")
    plan.add("evaluation", f"{cfg.eval.prompts} held-out prompts at temperature {cfg.eval.temperature}, judge "
             f"{cfg.eval.judge}" + (f" ({cfg.eval.judge_model})" if cfg.eval.judge == "openai" else ""))
    return plan


def render(cfg: RunConfig, plan: Plan) -> str:
    head = f"dry run of preset {cfg.preset}: {cfg.description}"
    body = "\n".join(plan.lines)
    tail = ("\nready: everything needed is available" if not plan.problems
            else "\nnot ready:\n  - " + "\n  - ".join(plan.problems))
    return f"{head}\n{body}{tail}\n\nresolved config:\n{json.dumps(cfg.model_dump(), indent=1)[:4000]}"
