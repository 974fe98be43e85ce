"""Sharded data parallel with PyTorch's FSDP2 (`fully_shard`), for models whose weights, gradients and optimizer
state do not fit one device (the 6.9B full fine-tune): what DeepSpeed ZeRO-3 does, or ZeRO-2 with
`reshard_after_forward: false`.

Chosen by an accelerate config with `distributed_type: FSDP` and `fsdp_version: 2` (configs/accelerate/fsdp*.yaml);
accelerate launches the processes and passes its fsdp_config as FSDP_* variables, which this module reads.
The trainable models (policy, critic) are sharded; the frozen reference and reward model stay whole on each device.
Each transformer block, each direct child of the model that holds weights (backbone, LM / score head) and the model
itself become shard units, so the backbone's direct calls (`critic.base_model(...)`, `critic.score(...)`) gather
what they use. Rollouts and evaluation run with the weights gathered once (`gathered`) instead of per decode step.
Gradients are reduce-scattered by FSDP itself (averaged over ranks), so the explicit averaging of plain data
parallel is skipped. Checkpoints gather full weights and optimizer state on rank 0 (torch.distributed.checkpoint).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from harness.core.errors import UserError


@dataclass(frozen=True)
class FsdpSettings:
    reshard_after_forward: bool = True
    offload_params: bool = False

    @classmethod
    def from_environment(cls) -> "FsdpSettings | None":
        """accelerate launch's FSDP settings, or None when the run is not sharded."""
        env = os.environ
        if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            raise UserError("DeepSpeed is not wired into the harness's backbone: for ZeRO-3 sharding launch with "
                            "configs/accelerate/fsdp.yaml, for ZeRO-2 with configs/accelerate/fsdp_grad_op.yaml "
                            "(PyTorch FSDP2, same memory savings)")
        if env.get("ACCELERATE_USE_FSDP", "").lower() != "true":
            return None
        if env.get("FSDP_VERSION", "1") != "2":
            raise UserError("the harness shards with FSDP2: set fsdp_version: 2 in the accelerate config's "
                            "fsdp_config (see configs/accelerate/fsdp.yaml)")
        strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
        reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true" and strategy != "SHARD_GRAD_OP"
        return cls(reshard_after_forward=reshard, offload_params=env.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true")


def transformer_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of transformer blocks (the ModuleList with one entry per hidden layer)."""
    n = getattr(model.config, "num_hidden_layers", None)
    return next((m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n), None)


def shard(model: nn.Module, settings: FsdpSettings) -> None:
    """fully_shard `model` in place: blocks, then the root's direct children that hold weights, then the root."""
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, fully_shard

    if hasattr(model, "peft_config"):
        raise UserError("LoRA with FSDP is not supported: a LoRA policy trains few weights, use data parallel "
                        "(configs/accelerate/ddp.yaml)")
    blocks = transformer_blocks(model)
    if blocks is None:
        raise UserError(f"FSDP: cannot find the transformer blocks of {type(model).__name__}")
    kwargs = {"reshard_after_forward": settings.reshard_after_forward}
    if settings.offload_params:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in blocks:
        fully_shard(block, **kwargs)
    for child in model.children():
        if not isinstance(child, FSDPModule) and any(True for _ in child.parameters()):
            fully_shard(child, **kwargs)
    fully_shard(model, **kwargs)


def units(model: nn.Module | None) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [] if model is None else [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(*models: nn.Module | None):
    """Every shard unit of `models` gathered for the duration (rollouts, evaluation: many forwards, no backward)."""
    found = [u for m in models for u in units(m)]
    for u in found:
        u.set_reshard_after_forward(False)
        u.unshard()
    try:
        yield
    finally:
        for u in found:
            u.reshard()
            u.set_reshard_after_forward(True)


def full_state_dict(model: nn.Module) -> dict:
    """The whole model's weights on rank 0, on CPU ({} on the other ranks); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, state: dict) -> None:
    """Load full weights (read by every rank) into the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(modules: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(modules, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(modules: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(modules, optimizer, state, options=StateDictOptions(full_state_dict=True))
