"""Building a TL;DR starting point (SFT policy + reward model) from the task's data, with TRL's trainers.

The recipe follows the REBEL authors' src/tldr/sft.py and rm.py (which follow the N+ code,
vwxyzjn/summarize_from_feedback_details); docs/starting_point.md lists every setting beside its source:
- SFT: [prompt | " " + summary + EOS], cross-entropy on every non-pad token (prompt too: both codes do that;
  `sft_loss: response` is the alternative), AdamW lr 3e-6 eps 1e-5, batch 64, one epoch, no warmup, cosine decay
  (the code; the paper's text says linear: `lr_scheduler: linear`).
- RM: the SFT model + a scalar head (init N(0, 1/(H+1))) read at the last real token (EOS), loss
  -log sigmoid(r_chosen - r_rejected) on the preference train split (the authors' first 92,832 rows), same optimizer
  settings; afterwards the bias is the mean raw score of the SFT-train references, so references average 0.
Saved as a Hugging Face sequence classifier with `config.reward_bias`, the convention harness.core.scoring.reward_scores
subtracts (harness/core/reward_heads.py), in safetensors, beside the tokenizer (with its added [PAD]).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, ValidationError

from harness.core.settings import Strict
from harness.core.errors import UserError, invalid
from harness.core.models import fit_vocab
from harness.core.store import read_json, write_json
from harness.core.examples import TaskData
from harness.core.tokens import encode_responses, left_pad

BASE_MODELS = {"tldr-pythia-1.4b": "EleutherAI/pythia-1.4b-deduped",
               "tldr-pythia-2.8b": "EleutherAI/pythia-2.8b-deduped",
               "tldr-pythia-6.9b": "EleutherAI/pythia-6.9b-deduped"}


class StartSettings(Strict):
    """How a starting point is trained; defaults are the REBEL authors' TL;DR SFT / RM scripts."""

    base_model: str = "EleutherAI/pythia-1.4b-deduped"
    tokenizer: str | None = Field(None, description="default: base_model's")
    lr: float = Field(3e-6, gt=0)
    batch_size: int = Field(64, gt=0, description="sequences (SFT) or pairs (RM) per optimizer step, all devices")
    micro_batch_size: int = Field(2, gt=0, description="per device per forward; the rest is gradient accumulation")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="cap on optimizer steps per stage (smoke tests)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"  # code: cosine; paper text: linear
    warmup_steps: int = Field(0, ge=0)
    adam_eps: float = 1e-5
    weight_decay: float = Field(0.01, ge=0)  # torch AdamW's default, which both scripts leave in place
    sft_loss: Literal["full", "response"] = "full"  # full: prompt and response tokens, as both codes do
    max_prompt_tokens: int = Field(512, gt=8)
    sft_response_tokens: int = Field(53, gt=1)  # N+ max_sft_response_length
    rm_response_tokens: int = Field(169, gt=1)  # N+ max_rm_response_length
    sft_train_rows: int | None = Field(None, gt=0, description="first N SFT rows (None: all, as both codes)")
    rm_train_rows: int | None = Field(92832, gt=0, description="first N preference pairs (None: all)")
    bias_rows: int | None = Field(None, gt=0, description="SFT-train references that set the bias (None: all)")
    eval_rows: int = Field(512, gt=0, description="held-out rows for the reported loss / pair accuracy")
    eval_batch_size: int = Field(8, gt=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 compute + fp32 weights on a bf16 GPU
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, gt=0)
    seed: int = 0


def settings_for(preset: str, overrides: dict | None = None) -> tuple[StartSettings, str]:
    """(settings, task source) for a TL;DR preset: its prompt length, seed and data source, the base model of its
    size, then the user's overrides."""
    from harness.app.config import resolve

    cfg = resolve(preset)
    from harness import tasks

    if not tasks.get(cfg.task.name).start_recipe:
        raise UserError(f"build-start trains TL;DR starting points; preset {preset!r} is task {cfg.task.name!r} "
                        f"(its chat models come ready-made)")
    values = {"max_prompt_tokens": cfg.task.max_prompt_tokens, "seed": cfg.seed}
    if preset in BASE_MODELS:
        values["base_model"] = BASE_MODELS[preset]
    elif "base_model" not in (overrides or {}):
        raise UserError(f"no base model is known for preset {preset!r}: pass --set base_model=NAME_OR_DIR "
                        f"(known: {', '.join(BASE_MODELS)})")
    values.update(overrides or {})
    try:
        return StartSettings.model_validate(values), cfg.task.source
    except ValidationError as e:
        raise invalid(e, "invalid build-start setting", f"settings: {', '.join(StartSettings.model_fields)}") from None


def check_base_model(name: str) -> None:
    """One line when the base model can be had neither locally nor from the hub (never downloads)."""
    from harness.core.models import refuse_pickled
    from harness.app.plan import availability

    ok, _ = availability(name)
    if not ok:
        raise UserError(f"base model {name!r} is not a local directory, not in the Hugging Face cache, and the hub "
                        f"is not reachable: download it where the hub is reachable, or pass --set base_model=DIR")
    refuse_pickled(name, "base model")


def load_data(source: str, dataset: str | None = None, preference_dataset: str | None = None,
              preset: str | None = None) -> TaskData:
    """The TL;DR splits, refusing (rather than falling back to the stand-in) when the hub data cannot be had: present
    in the local cache (`harness prepare`) or served by the hub, else one line naming the data set."""
    from harness.core.assets import prepare_command, require
    from harness.tasks.tldr import hub_assets, load_task, resolve_source

    if source in ("auto", "hub"):
        require(hub_assets(dataset, preference_dataset), prepare_command(preset=preset))
        source = "hub"
    return load_task(resolve_source(source), dataset, preference_dataset)


def _precision(choice: str) -> bool:
    """bf16 compute (autocast over fp32 weights, i.e. an fp32 master copy)? CPUs run fp32: bf16 matmuls are slow."""
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return gpu_bf16 if choice == "auto" else choice == "bf16"


def check_batch(s: StartSettings) -> int:
    """Gradient-accumulation steps that make batch_size from micro_batch_size on every process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if s.batch_size % (s.micro_batch_size * world):
        raise UserError(f"batch_size {s.batch_size} is not a multiple of micro_batch_size {s.micro_batch_size} x "
                        f"{world} processes; change --set batch_size or --set micro_batch_size")
    return s.batch_size // (s.micro_batch_size * world)


def _trainer_args(cls, s: StartSettings, out: Path, **extra):
    bf16 = _precision(s.precision)
    return cls(output_dir=str(out), per_device_train_batch_size=s.micro_batch_size,
               gradient_accumulation_steps=check_batch(s),
               num_train_epochs=s.epochs, max_steps=s.max_steps or -1, learning_rate=s.lr,
               lr_scheduler_type=s.lr_scheduler, warmup_steps=s.warmup_steps, adam_epsilon=s.adam_eps,
               weight_decay=s.weight_decay, bf16=bf16, fp16=False, activation_checkpointing=s.gradient_checkpointing,
               logging_steps=s.logging_steps, save_strategy="no", report_to="none", seed=s.seed, data_seed=s.seed,
               max_grad_norm=0.0, dataloader_pin_memory=torch.cuda.is_available(),
               **extra)  # max_grad_norm 0: no clipping, as in both scripts


def _prompt(ex, tokenizer, s: StartSettings) -> list[int]:
    return ex.encode_prompt(tokenizer, s.max_prompt_tokens)


def _response(text: str, tokenizer, max_tokens: int) -> list[int]:
    """The response as the harness tokenizes it everywhere: text + EOS, cut at max_tokens (then without EOS)."""
    ids, mask = encode_responses([text], tokenizer, max_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return ids[0][mask[0]].tolist()


def sft_dataset(examples, tokenizer, s: StartSettings):
    from datasets import Dataset

    rows = {"input_ids": [], "completion_mask": []}
    for ex in examples:
        prompt, response = _prompt(ex, tokenizer, s), _response(ex.reference, tokenizer, s.sft_response_tokens)
        rows["input_ids"].append(prompt + response)
        rows["completion_mask"].append([0] * len(prompt) + [1] * len(response))
    return Dataset.from_dict(rows)


def preference_dataset(examples, tokenizer, s: StartSettings):
    from datasets import Dataset

    rows = {"chosen_ids": [], "rejected_ids": []}
    for ex in examples:
        prompt = _prompt(ex, tokenizer, s)
        rows["chosen_ids"].append(prompt + _response(ex.chosen, tokenizer, s.rm_response_tokens))
        rows["rejected_ids"].append(prompt + _response(ex.rejected, tokenizer, s.rm_response_tokens))
    return Dataset.from_dict(rows)


def _batches(examples, field: str, tokenizer, s: StartSettings, max_tokens: int, device):
    """(query, response, mask) tensors for the harness's own scoring functions, eval_batch_size rows at a time."""
    for i in range(0, len(examples), s.eval_batch_size):
        chunk = examples[i : i + s.eval_batch_size]
        query = left_pad([_prompt(ex, tokenizer, s) for ex in chunk], tokenizer.pad_token_id)
        resp, mask = encode_responses([getattr(ex, field) for ex in chunk], tokenizer, max_tokens,
                                      tokenizer.eos_token_id, tokenizer.pad_token_id)
        yield query.to(device), resp.to(device), mask.to(device)


@torch.no_grad()
def response_loss(model, examples, tokenizer, s: StartSettings) -> float:
    """Mean token cross-entropy of the references given the prompts (the harness's SFT measure)."""
    from harness.core.scoring import sequence_logprobs

    model.eval()
    total, count, device = 0.0, 0, next(model.parameters()).device
    for q, r, m in _batches(examples, "reference", tokenizer, s, s.sft_response_tokens, device):
        with torch.autocast(device.type, torch.bfloat16, enabled=_precision(s.precision)):
            logp = sequence_logprobs(model, q, r, m, tokenizer.pad_token_id, temperature=1.0)
        total, count = total - logp.tokens.sum().item(), count + m.sum().item()
    return total / max(count, 1)


@torch.no_grad()
def raw_scores(rm, examples, field: str, tokenizer, s: StartSettings, max_tokens: int) -> tuple[torch.Tensor, ...]:
    """(raw score, has EOS) per example through harness.core.scoring.reward_scores with the bias at 0."""
    from harness.core.scoring import has_eos, reward_scores

    rm.eval()
    saved, rm.config.reward_bias = getattr(rm.config, "reward_bias", 0.0), 0.0
    scores, ended, device = [], [], next(rm.parameters()).device
    for q, r, m in _batches(examples, field, tokenizer, s, max_tokens, device):
        with torch.autocast(device.type, torch.bfloat16, enabled=_precision(s.precision)):
            scores.append(reward_scores(rm, q, r, m, tokenizer.pad_token_id).float().cpu())
        ended.append(has_eos(r, m, tokenizer.eos_token_id).cpu())
    rm.config.reward_bias = saved
    return torch.cat(scores), torch.cat(ended)


def pair_accuracy(rm, pairs, tokenizer, s: StartSettings) -> float:
    chosen, _ = raw_scores(rm, pairs, "chosen", tokenizer, s, s.rm_response_tokens)
    rejected, _ = raw_scores(rm, pairs, "rejected", tokenizer, s, s.rm_response_tokens)
    return (chosen > rejected).float().mean().item()


def reference_bias(rm, references, tokenizer, s: StartSettings, accelerator) -> float:
    """Mean raw score of the references that end in EOS, over all processes (each scores its own share)."""
    share = references[accelerator.process_index :: accelerator.num_processes]
    scores, ended = raw_scores(rm, share, "reference", tokenizer, s, s.sft_response_tokens)
    device = accelerator.device
    totals = accelerator.reduce(torch.tensor([scores[ended].sum().item(), ended.sum().item()],
                                             dtype=torch.float64, device=device), reduction="sum")
    if totals[1] == 0:
        raise UserError("no reference summary fits sft_response_tokens with its EOS: raise --set sft_response_tokens")
    return (totals[0] / totals[1]).item()


def _losses(trainer) -> list[float]:
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def sft_args(s: StartSettings, workdir: Path):
    from trl import SFTConfig

    return _trainer_args(SFTConfig, s, workdir, completion_only_loss=s.sft_loss == "response", max_length=None,
                         packing=False)


def sft_trainer(s: StartSettings, model, tokenizer, examples, args):
    """TRL's SFTTrainer on pre-tokenized rows: it turns completion_mask into labels only for sft_loss=response."""
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=args, processing_class=tokenizer,
                      train_dataset=sft_dataset(examples, tokenizer, s))


def train_sft(s: StartSettings, data: TaskData, tokenizer, out: Path, log=print) -> dict:
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    args = sft_args(s, out.parent / ".trainer-sft")
    model = AutoModelForCausalLM.from_pretrained(s.base_model, dtype=torch.float32, use_safetensors=True)
    fit_vocab(model, tokenizer)  # Pythia has spare rows for [PAD]
    _no_dropout(model)  # both scripts switch dropout off (Pythia's is 0 already)
    held_out = data.sft_eval[: s.eval_rows]
    info = {"sft_eval_loss_before": response_loss(model.to(args.device), held_out, tokenizer, s)}
    trainer = sft_trainer(s, model, tokenizer, data.sft_train[: s.sft_train_rows], args)
    trainer.train()
    losses = _losses(trainer)
    info.update({"sft_steps": trainer.state.global_step, "sft_train_loss_first": losses[0] if losses else None,
                 "sft_train_loss_last": losses[-1] if losses else None,
                 "sft_eval_loss": response_loss(model, held_out, tokenizer, s),
                 "sft_rows": len(data.sft_train[: s.sft_train_rows]), "sft_seconds": round(time.time() - t0, 1)})
    _save(trainer, model, tokenizer, out)
    log(f"  SFT: {info['sft_steps']} steps, held-out response loss {info['sft_eval_loss_before']:.3f} -> "
        f"{info['sft_eval_loss']:.3f} ({info['sft_seconds']} s)")
    return info


def train_reward_model(s: StartSettings, data: TaskData, tokenizer, sft_dir: Path, out: Path, log=print) -> dict:
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    t0 = time.time()
    rm = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1, dtype=torch.float32,
                                                            use_safetensors=True)
    torch.manual_seed(s.seed)
    torch.nn.init.normal_(rm.score.weight, std=1 / math.sqrt(rm.config.hidden_size + 1))  # the authors' head init
    fit_vocab(rm, tokenizer)
    pairs = data.pref_train[: s.rm_train_rows]
    args = _trainer_args(RewardConfig, s, out.parent / ".trainer-reward", max_length=None, disable_dropout=True,
                         center_rewards_coefficient=None)
    trainer = RewardTrainer(model=rm, args=args, processing_class=tokenizer,
                            train_dataset=preference_dataset(pairs, tokenizer, s))
    trainer.train()
    losses = _losses(trainer)
    references = data.sft_train[: s.bias_rows]
    info = {"rm_steps": trainer.state.global_step, "rm_train_loss_first": losses[0] if losses else None,
            "rm_train_loss_last": losses[-1] if losses else None, "rm_rows": len(pairs),
            "rm_train_pair_accuracy": pair_accuracy(rm, pairs[: s.eval_rows], tokenizer, s),
            "rm_eval_pair_accuracy": pair_accuracy(rm, data.pref_eval[: s.eval_rows], tokenizer, s),
            "reward_bias": reference_bias(rm, references, tokenizer, s, trainer.accelerator),
            "bias_rows": len(references)}
    rm.config.reward_bias = info["reward_bias"]
    info["rm_seconds"] = round(time.time() - t0, 1)
    _save(trainer, rm, tokenizer, out)
    log(f"  reward model: {info['rm_steps']} steps, pair accuracy train {info['rm_train_pair_accuracy']:.3f} / "
        f"held-out {info['rm_eval_pair_accuracy']:.3f}, bias {info['reward_bias']:.4f} ({info['rm_seconds']} s)")
    return info


def _no_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _save(trainer, model, tokenizer, out: Path) -> None:
    """Written by the main process beside, then renamed (a directory that exists is complete); the others wait."""
    if trainer.accelerator.is_main_process:
        _write_then_rename(model, tokenizer, out)
    trainer.accelerator.wait_for_everyone()


def _write_then_rename(model, tokenizer, out: Path) -> None:
    tmp = out.parent / f".{out.name}-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def use_line(out: Path) -> str:
    return f"--set model.policy={out / 'sft'} --set model.reward_model={out / 'reward'}"


def build(s: StartSettings, data: TaskData, out: Path, log=print) -> dict:
    """Train DIR/sft, then DIR/reward; DIR/build_info.json is written last. A finished SFT stage is reused."""
    from harness.core.models import load_tokenizer

    _quiet_hf()
    log = log if main_process() else (lambda *a: None)
    out = Path(out)
    info_path = out / "build_info.json"
    if info_path.exists():
        raise UserError(f"{out} already holds a built starting point ({info_path}); pick another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    tokenizer = load_tokenizer(s.tokenizer or s.base_model)  # adds [PAD] where the base has none (Pythia)
    info: dict = {"settings": s.model_dump(), "data_source": data.source,
                  "precision": "bf16 compute, fp32 weights" if _precision(s.precision) else "fp32"}
    sft_info = out / "sft_info.json"
    if sft_info.exists() and (out / "sft").is_dir():
        log(f"  SFT: reusing {out / 'sft'} (finished earlier)")
        info.update(read_json(sft_info))
    else:
        info.update(train_sft(s, data, tokenizer, out / "sft", log))
        if main_process():
            write_json(sft_info, {k: v for k, v in info.items() if k.startswith("sft")})
    tokenizer = load_tokenizer(str(out / "sft"))
    info.update(train_reward_model(s, data, tokenizer, out / "sft", out / "reward", log))
    if main_process():
        for tmp in (".trainer-sft", ".trainer-reward"):
            shutil.rmtree(out / tmp, ignore_errors=True)
        write_json(info_path, info)
    return info


def main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
