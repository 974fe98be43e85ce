"""`harness run --dry-run`: resolve a preset, check that models and data can be had, estimate memory, print the plan.

Nothing is trained or downloaded. Parameter counts are exact when the model's config.json is local (a directory or
the Hugging Face cache): the model is instantiated on the meta device (no memory) and LoRA applied to it by the run's
own builder; otherwise they come from the preset's `model.size_hint` and, for a Pythia model, its public shape, and
the plan says "estimated". The memory plan follows harness/core/precision.py: trained weights fp32 with fp32 gradients
and AdamW states, frozen models at the frozen dtype, both as resolved on this machine.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from algorithms.base import make
from harness.app.reward_scale import add_to_plan as add_reward_scale
from harness.app.config import RunConfig
from harness.core.models import lora_config, train_only_last_layers
from harness.core.precision import Precision, resolve_precision
from harness.core.reward_heads import _local_config

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


# Public Pythia shapes (layers, hidden), for an honest estimate when a preset's config is not local.
PYTHIA_SHAPES = {"160m": (12, 768), "410m": (24, 1024), "1b": (16, 2048), "1.4b": (24, 2048), "2.8b": (32, 2560),
                 "6.9b": (32, 4096), "12b": (36, 5120)}
# GPT-NeoX block linears as (in, out) multiples of hidden: a LoRA of rank r on one adds r * (in + out) weights.
NEOX_LINEARS = {"query_key_value": (1, 3), "dense": (1, 1), "dense_h_to_4h": (1, 4), "dense_4h_to_h": (4, 1)}


@dataclass
class Counts:
    total: int  # policy parameters
    trainable: int | None  # policy parameters trained (None: unknown offline)
    exact: bool
    layers: int | None = None
    hidden: int | None = None
    note: str = ""


def parameter_counts(name: str, cfg: RunConfig) -> Counts | None:
    """The policy's parameter counts from its local config (meta device: no memory, LoRA applied by the run's own
    lora_config), or None when the config is not local."""
    config = _local_config(name)
    if config is None:
        return None
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.for_model(**config)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(model_config)
    total = sum(p.numel() for p in model.parameters())
    shape = dict(layers=model_config.num_hidden_layers, hidden=model_config.hidden_size)
    if cfg.model.lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg.model.lora, model_config.model_type))
        targets = ", ".join(sorted(model.peft_config["default"].target_modules))
        return Counts(total, sum(p.numel() for p in model.parameters() if p.requires_grad), True, **shape,
                      note=f"LoRA r {cfg.model.lora.r} on {targets}")
    if cfg.model.trainable_layers:
        train_only_last_layers(model, cfg.model.trainable_layers, cfg.model.train_head)
        return Counts(total, sum(p.numel() for p in model.parameters() if p.requires_grad), True, **shape,
                      note=f"last {cfg.model.trainable_layers} blocks")
    return Counts(total, total, True, **shape, note="full fine-tuning")


def estimated_counts(cfg: RunConfig) -> Counts | None:
    """From model.size_hint, and for a Pythia model (named as such) its public shape: LoRA on GPT-NeoX linears adds
    layers * r * (in + out) weights per targeted module (query_key_value: hidden -> 3 hidden)."""
    if not cfg.model.size_hint:
        return None
    total = int(cfg.model.size_hint)
    match = re.search(r"pythia[-_](\d+(?:[._]\d+)?[mb])", cfg.model.policy.lower())  # pythia-2.8b, pythia_1_4b
    layers, hidden = PYTHIA_SHAPES.get(match.group(1).replace("_", "."), (None, None)) if match else (None, None)
    lora = cfg.model.lora
    if lora is None and not cfg.model.trainable_layers:
        return Counts(total, total, False, layers, hidden, "full fine-tuning")
    if lora is not None and hidden:
        targets = lora.target_modules
        targets = (["query_key_value"] if targets is None else list(NEOX_LINEARS) if targets == "all-linear"
                   else [targets] if isinstance(targets, str) else targets)
        if set(targets) <= set(NEOX_LINEARS):
            trainable = layers * lora.r * sum((i + o) * hidden for i, o in (NEOX_LINEARS[t] for t in targets))
            return Counts(total, trainable, False, layers, hidden, f"LoRA r {lora.r} on {', '.join(targets)}")
    if cfg.model.trainable_layers and layers:
        return Counts(total, total * cfg.model.trainable_layers // layers, False, layers, hidden,
                      f"last {cfg.model.trainable_layers} blocks, ~their share of the weights")
    return Counts(total, None, False, layers, hidden, "the trainable part is unknown until the config is local")


def estimate_memory_gb(trainable: int, frozen_bytes: dict[str, float], activation_tokens: int = 0,
                       hidden: int | None = None, layers: int | None = None, activation_bytes: int = 2) -> dict:
    """Rough peak memory. Trained weights: float32 weight + float32 gradient + two float32 AdamW moments = 16 bytes
    each. Frozen weights (reference, reward model, a LoRA model's base): their bytes at the frozen dtype. Activations
    when the shape is known: 17 x activation_bytes x hidden x layers per token without checkpointing (34 bytes at
    16 bits, Korthikanti et al. 2022)."""
    gb = 1024**3
    out = {"trained": trainable * 16 / gb, **{k: v / gb for k, v in frozen_bytes.items() if v}}
    if hidden and layers and activation_tokens:
        out["activations"] = activation_tokens * hidden * layers * 17 * activation_bytes / gb
    out["total"] = sum(out.values())
    return out


def memory_plan(counts: Counts, cfg: RunConfig, algo, precision: Precision, reward_model: bool = True) -> dict:
    """The parts that follow from the precision policy (harness/core/models.py loads exactly these): the reward model
    (none for a task scored by its checker), and a critic, assumed the policy's size."""
    frozen = BYTES[precision.frozen_name]
    lora, total, trainable = cfg.model.lora is not None, counts.total, counts.trainable
    parts = {"policy_base": total * frozen if lora else (total - trainable) * 4,  # last-layers models stay fp32
             "reference": total * frozen if (cfg.model.reference == "frozen_copy" or not lora) else 0,
             "reward_model": total * frozen if reward_model else 0}
    if algo.needs_critic:  # the critic: LoRA on the reward model with the policy's settings, or all of it
        parts["critic_base"] = total * frozen if lora else 0
        trainable += trainable if lora else total
    tokens = ((cfg.train.micro_batch_prompts or cfg.train.prompts_per_iteration) * algo.samples_per_prompt
              * (cfg.task.max_prompt_tokens + cfg.generation.max_new_tokens))
    return estimate_memory_gb(trainable, parts, tokens, counts.hidden, counts.layers, BYTES[precision.compute_name])


def dry_run(cfg: RunConfig) -> Plan:
    plan = Plan()
    algo = make(cfg.algo, cfg.algo_args)
    plan.add("algorithm", f"{algo.name} {algo.hyperparameters()}")
    source = cfg.task.source
    from harness import tasks

    checker = tasks.get(cfg.task.name).checker and not cfg.model.reward_model
    task = tasks.get(cfg.task.name)
    wanted = task.hub_data(cfg.task)
    if wanted:
        from harness.core.assets import hub_reachable, locate

        cached = all(locate(a) is not None for a in wanted)
        ok = cached or hub_reachable(wanted[0].name)
        fallback = source == "auto" and task.offline_fallback
        names = ", ".join(a.label for a in wanted)
        plan.add("data", f"{task.name} from the hub ({names}): " + ("in the local cache" if cached else "reachable"
                 if ok else "NOT reachable" + (" -> auto falls back to the offline stand-in" if fallback else "")))
        if not ok and not fallback:
            from harness.app.config import preset_task_name
            task_flag = "" if cfg.task.name == preset_task_name(cfg.preset) else f" --set task.name={cfg.task.name}"
            plan.problems.append(f"data: not in the local cache and the hub is not reachable "
                                 f"(`python -m harness prepare --preset {cfg.preset}{task_flag}` fetches it)")
    else:
        plan.add("data", f"{cfg.task.name} from {source}" + (f" ({cfg.task.dataset})" if cfg.task.dataset else "")
                 + (f" (task file {task.file})" if task.file else ""))
        if not task.present(source):
            plan.problems.append(f"data: {source} does not exist")
    if checker:
        plan.add("reward", f"{task.reward_note} (no reward model is loaded)")
    for role, name in (("policy", cfg.model.policy), ("reward model", cfg.model.reward_model or "builtin")):
        if name == "builtin":
            continue
        ok, note = availability(name)
        plan.add(role, note)
        if not ok:
            plan.problems.append(f"{role}: {name} is not available")
    t = cfg.train
    episodes = t.iterations * t.prompts_per_iteration  # prompts, as the authors' total_episodes counts them
    sampled = ("offline preference pairs, nothing sampled" if algo.data == "preference_pairs" else
               f"x {algo.samples_per_prompt} samples = {episodes * algo.samples_per_prompt:,} sampled responses of "
               f"{cfg.generation.max_new_tokens} tokens at temperature {cfg.generation.temperature}")
    plan.add("plan", f"{t.iterations:,} iterations x {t.prompts_per_iteration} prompts = {episodes:,} episodes "
             f"(prompts); {sampled}; "
             f"{t.iterations * algo.epochs * algo.minibatches:,} optimizer steps "
             f"({algo.epochs} epochs x {algo.minibatches} minibatches per iteration; lr {t.lr}, kl_coef {t.kl_coef})")
    add_reward_scale(cfg, plan)  # the reward scale and why; measured where the models are local (issue 29)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg.model.compute_dtype, cfg.model.frozen_dtype, device)
    plan.add("precision", f"{precision.describe()}; model.compute_dtype={cfg.model.compute_dtype} resolved on "
             f"{device}" + ("" if cfg.model.compute_dtype != "auto" or device == "cuda"
                            else " (a CUDA GPU with bf16 computes in bfloat16)"))
    counts = parameter_counts(cfg.model.policy, cfg) if not cfg.model.policy.startswith("builtin:") else None
    counts = counts or estimated_counts(cfg)
    if counts is not None:
        how = "exact, from the local config" if counts.exact else "estimated from the preset's size hint" + (
            f" and the public Pythia shape ({counts.layers} layers x {counts.hidden})" if counts.hidden else "")
        trained = ("trainable unknown, left out below" if counts.trainable is None
                   else f"{counts.trainable / 1e6:,.1f}M trainable")
        critic = ("; the critic trains the same again on the reward model" if algo.needs_critic and cfg.model.lora
                  else "; the critic trains all of the reward model" if algo.needs_critic else "")
        plan.add("parameters", f"{counts.total / 1e6:,.1f}M total, {trained} ({counts.note}; {how}){critic}")
        if counts.trainable is not None:
            mem = memory_plan(counts, cfg, algo, precision, reward_model=not checker)
            parts = ", ".join(f"{k} {v:.1f}" for k, v in mem.items() if k != "total")
            plan.add("memory", f"~{mem['total']:.1f} GB peak on {device} at this precision ({parts}; rough: "
                     f"trained = fp32 weights + grads + AdamW states, 16 bytes each; the reward model and critic "
                     f"assumed the policy's size)")
    if checker:
        from evals import suites

        suite = suites.get(task.suite)
        samples = cfg.eval.samples or getattr(sys.modules.get(type(suite).__module__), "DEFAULT_SAMPLES", 1)
        plan.add("evaluation", f"{cfg.eval.prompts} held-out problems x {samples} samples at temperature "
                 f"{cfg.eval.temperature}: {suite.summary} ({type(suite).__module__.replace('.', '/')}.py)")
    else:
        plan.add("evaluation", f"{cfg.eval.prompts} held-out prompts at temperature {cfg.eval.temperature}, judge "
                 f"{cfg.eval.judge}" + (f" ({cfg.eval.judge_model})" if cfg.eval.judge == "openai" else ""))
    return plan


def render(cfg: RunConfig, plan: Plan) -> str:
    head = f"dry run of preset {cfg.preset}: {cfg.description}"
    body = "\n".join(plan.lines)
    tail = ("\nready: everything needed is available" if not plan.problems
            else "\nnot ready:\n  - " + "\n  - ".join(plan.problems))
    return f"{head}\n{body}{tail}\n\nresolved config:\n{json.dumps(cfg.model_dump(), indent=1)[:4000]}"
