"""Loading the models of a run: policy (full or LoRA), reference, reward model, critic, tokenizer.

Models load from a hub name or a local directory, safetensors only (no pickled weights are ever executed).
`builtin:tiny` resolves to the tiny preset that the harness builds and caches itself.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness.core.settings import LoraSettings, ModelSettings
from harness.core.errors import UserError
from harness.core.precision import Precision, resolve_precision


@dataclass
class Models:
    policy: nn.Module
    reference: nn.Module | None  # None: the reference is the policy with its LoRA adapter disabled
    reward_model: nn.Module | None  # None: the task scores responses itself (TaskData.reward, a checker)
    tokenizer: object
    critic: nn.Module | None = None
    origin: dict = field(default_factory=dict)  # what was loaded from where, for the run's record
    precision: Precision = field(default_factory=Precision)  # compute / frozen dtypes (harness/core/precision.py)

    def autocast(self):
        """The context of every forward pass: bf16 autocast when the run computes in bf16, else nothing."""
        return self.precision.autocast(self.device)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @contextlib.contextmanager
    def as_reference(self):
        """The reference policy: a frozen copy, or the policy with its adapter switched off."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.critic is not None:
            params += [p for p in self.critic.parameters() if p.requires_grad]
        return params


def named_paths(settings: ModelSettings, needs_reward_model: bool = True) -> dict[str, str | None]:
    """Where policy, reward model and tokenizer come from when the settings name them (directories or hub names);
    a builtin preset is built by its task first (harness.tasks.resolve_paths). needs_reward_model=False (a
    task that scores responses itself): the reward model is None unless the settings name one."""
    if settings.policy.startswith("builtin:"):
        raise UserError(f"model.policy {settings.policy!r} is a builtin preset: resolve it with "
                        f"harness.tasks.resolve_paths, which builds it")
    if settings.reward_model is None and needs_reward_model:
        raise UserError("model.reward_model is required when model.policy is not a builtin preset")
    return {"policy": settings.policy, "reward_model": settings.reward_model,
            "tokenizer": settings.tokenizer or settings.policy}


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def refuse_pickled(name: str, what: str) -> None:
    """A local directory whose weights are only pickles gets a message that says why and what to do, rather than
    transformers' "no file named model.safetensors": unpickling a checkpoint can run arbitrary code."""
    path = Path(name)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in path.glob(pattern))
    if pickled:
        raise UserError(f"{what} {name!r} holds only pickled weights ({', '.join(pickled[:3])}), which are never "
                        f"loaded because unpickling can run code: convert them to safetensors "
                        f"(save_pretrained(..., safe_serialization=True) where you trust the file)")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:  # a typo in a path reads as a malformed hub name; say which setting it was
        raise UserError(f"cannot load tokenizer {name!r} (model.tokenizer, default model.policy: a hub name or a "
                        f"local directory): {str(e).splitlines()[0]}") from None
    # Pythia ships no pad. Chat models often reuse EOS (SmolLM2: <|im_end|>), but the backbone masks pads by id, which
    # would hide every end-of-turn in a chat prompt and the response's EOS: give them a pad of their own too.
    if tok.pad_token is None or tok.pad_token_id in (tok.eos_token_id, tok.bos_token_id):
        tok.add_special_tokens({"pad_token": "[PAD]"})
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer {name!r} has no EOS token: responses could never terminate")
    return tok


def fit_vocab(model, tokenizer) -> None:
    """Room for the tokenizer's added tokens ([PAD]) and its pad / EOS ids in the model's config."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id


def load_policy(path: str, tokenizer, dtype=torch.float32) -> nn.Module:
    """A causal LM from safetensors only (pickled weights are refused), fitted to the tokenizer; one-line errors."""
    from transformers import AutoModelForCausalLM

    refuse_pickled(path, "policy")
    try:
        policy = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=dtype)
    except OSError as e:
        raise UserError(f"cannot load policy {path!r}: {str(e).splitlines()[0]}") from None
    fit_vocab(policy, tokenizer)
    return policy


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def load_reward_model(name: str, tokenizer, dtype=torch.float32, frozen: bool = True) -> nn.Module:
    """A reward model in any supported head convention (harness/core/reward_heads.py), with the tokenizer's ids."""
    from transformers import AutoModelForSequenceClassification

    from harness.core.reward_heads import is_scalar_model, load_scalar_model

    if is_scalar_model(name):
        rm = load_scalar_model(name, dtype)
        rm.config.eos_token_id, rm.config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    else:
        refuse_pickled(name, "reward model")
        try:
            rm = AutoModelForSequenceClassification.from_pretrained(name, num_labels=1, use_safetensors=True,
                                                                    dtype=dtype)
        except OSError as e:
            raise UserError(f"cannot load reward model {name!r} (safetensors only): {str(e).splitlines()[0]}") from None
        fit_vocab(rm, tokenizer)
    return _frozen(rm) if frozen else rm


def value_model_from_policy(path: str, tokenizer, dtype=torch.float32) -> nn.Module:
    """A critic for a run without a reward model (a task with a checker): the policy's backbone with a scalar head
    initialised to zero (values start at 0, as a reward model's bias-corrected head roughly does), safetensors only."""
    from transformers import AutoModelForSequenceClassification

    refuse_pickled(path, "policy (as the critic's backbone)")
    try:
        critic = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, use_safetensors=True,
                                                                    dtype=dtype)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot build a critic from policy {path!r}: {str(e).splitlines()[0]}") from None
    fit_vocab(critic, tokenizer)
    head = getattr(critic, "score", None)
    if head is None:
        raise UserError(f"cannot build a critic from policy {path!r}: its sequence classifier has no `score` head; "
                        f"set model.reward_model to a reward model to start the critic from")
    torch.nn.init.zeros_(head.weight)
    critic.config.reward_bias = 0.0
    return critic


def lora_config(lora: LoraSettings, model_type: str | None, task_type: str | None = "CAUSAL_LM"):
    """The one PEFT LoraConfig of a run (policy, critic, dry run). target_modules None is PEFT's default for the
    architecture, looked up here rather than by PEFT: the authors build one LoraConfig without target_modules, PEFT
    fills in the policy's default (query_key_value on GPT-NeoX) and the same object then configures the critic, a
    reward model whose own config PEFT would not recognise."""
    from peft import LoraConfig
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    targets = lora.target_modules
    if targets is None:
        if model_type not in PEFT_DEFAULTS:
            raise UserError(f"model.lora.target_modules: PEFT has no default for architecture {model_type!r}; set "
                            f"a list of module names (e.g. [q_proj, v_proj]) or 'all-linear'")
        targets = list(PEFT_DEFAULTS[model_type])
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      bias="none", task_type=task_type)


def add_critic_lora(critic: nn.Module, lora: LoraSettings) -> nn.Module:
    """LoRA on the critic's backbone with the policy's settings; only the adapters train (the authors'
    get_peft_model(critic) with bias='none' and no task type: the scalar head stays frozen). The module keeps its
    interface (`base_model`, `score`, `config.reward_bias`), the adapters injected in place."""
    from peft import inject_adapter_in_model

    config = lora_config(lora, getattr(critic.base_model.config, "model_type", None), task_type=None)
    critic = inject_adapter_in_model(config, critic)
    for name, p in critic.named_parameters():
        p.requires_grad_("lora_" in name)
    return critic


def fp32_master(model: nn.Module) -> nn.Module:
    """Every trainable weight in float32: a bf16 weight rounds a 3e-6 AdamW step away (harness/core/precision.py)."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


FINAL_NORMS = ("model.norm", "gpt_neox.final_layer_norm", "transformer.ln_f", "model.final_layernorm")


def train_only_last_layers(model: nn.Module, n: int, head: bool = False) -> None:
    """Freeze everything but the last `n` transformer blocks (the paper's chat setting trains the last 4) and, with
    `head`, the final norm and the output layer, as the REBEL authors' chat scripts do; an output layer tied to the
    input embeddings stays frozen there (theirs: "frozen only if tied"), so the embeddings never train."""
    blocks = next((m for m in model.modules() if isinstance(m, nn.ModuleList)
                   and len(m) == model.config.num_hidden_layers), None)
    if blocks is None:
        raise UserError("model.trainable_layers: cannot find this architecture's list of transformer blocks")
    model.requires_grad_(False)
    for block in blocks[-n:]:
        block.requires_grad_(True)
    if not head:
        return
    norm = next((model.get_submodule(name) for name in FINAL_NORMS if _has_submodule(model, name)), None)
    if norm is None:
        raise UserError("model.train_head: cannot find this architecture's final norm; set model.train_head=false")
    norm.requires_grad_(True)
    out = model.get_output_embeddings()
    if out is not None and out.weight is not model.get_input_embeddings().weight:
        out.requires_grad_(True)


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def load_models(settings: ModelSettings, paths: dict[str, str] | None = None, needs_critic: bool = False,
                device: torch.device | str | None = None) -> Models:
    """Policy (LoRA or full, fp32 masters), reference, reward model, tokenizer and (needs_critic) critic, from
    `paths` (harness.tasks.resolve_paths: a builtin preset built on first use) or the names in `settings`."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    paths = paths or named_paths(settings)
    tokenizer = load_tokenizer(paths["tokenizer"])
    precision = resolve_precision(settings.compute_dtype, settings.frozen_dtype, device or "cpu",
                                  settings.logprob_dtype)
    # A LoRA model's base weights are frozen: stored at the frozen dtype, its adapters in float32 (fp32_master).
    # A full or last-layers model is float32 throughout (its frozen blocks feed trained ones outside autocast too).
    base_dtype = precision.frozen if settings.lora is not None else torch.float32
    policy = load_policy(paths["policy"], tokenizer, base_dtype)
    reference = None
    if settings.reference == "frozen_copy" or settings.lora is None:
        reference = _frozen(copy.deepcopy(policy).to(precision.frozen))
    if settings.trainable_layers:
        train_only_last_layers(policy, settings.trainable_layers, settings.train_head)
    if settings.lora is not None:
        from peft import get_peft_model

        policy = get_peft_model(policy, lora_config(settings.lora, policy.config.model_type))
    fp32_master(policy)
    has_rm = paths.get("reward_model") is not None  # None: the task's checker scores responses
    reward_model = load_reward_model(paths["reward_model"], tokenizer, precision.frozen) if has_rm else None
    critic = None
    if needs_critic:  # PROTOCOL.md: the critic starts from the reward model; LoRA on it when the policy has LoRA
        critic = (load_reward_model(paths["reward_model"], tokenizer, base_dtype, frozen=False) if has_rm
                  else value_model_from_policy(paths["policy"], tokenizer, base_dtype))
        if settings.lora is not None:
            critic = add_critic_lora(critic, settings.lora)
        fp32_master(critic).train()
    for model in (policy, critic):  # dropout would make pi_theta != pi_t before the first update
        for module in model.modules() if model is not None else ():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    policy.train()
    if device is not None:
        for model in (policy, reference, reward_model, critic):
            if model is not None:
                model.to(device)
    return Models(policy=policy, reference=reference, reward_model=reward_model, tokenizer=tokenizer,
                  critic=critic, origin=paths, precision=precision)


def peak_memory_mb() -> float:
    """Peak memory of this process: the CUDA allocator's peak on GPU, the resident-set peak on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
