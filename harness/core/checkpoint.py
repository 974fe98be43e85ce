"""Checkpoints from which a killed run continues exactly where it left off.

Layout under the run's `checkpoints/`:
  iter-000010/policy/     the policy (or its LoRA adapter) in Hugging Face format, safetensors
  iter-000010/critic/     the critic, for optimizers that have one
  iter-000010/trainer.pt  optimizer and scheduler state (identical on every rank: gradients are averaged; under
                          FSDP gathered to rank 0)
  iter-000010/rank-0.pt   each rank's random streams, data position, budget and optimizer-algorithm state
  latest.json             {"iteration": 10, "dir": "iter-000010", "world_size": 1}, replaced atomically
A checkpoint is complete before latest.json points to it, and the previous one is deleted only after that, so a
kill at any moment leaves one usable checkpoint. The .pt files hold tensors, numbers and dicts only and are read
with torch.load(weights_only=True), which refuses anything that would run code; weights are safetensors.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from harness.core.distributed import Runtime
from harness.core.errors import UserError
from harness.core.store import read_json, write_json


def save_weights(model: nn.Module, path: Path, runtime: Runtime | None = None) -> None:
    """Hugging Face format (a LoRA model saves its adapter), safetensors only, written by rank 0 (every rank must
    call: under FSDP the full weights are gathered first). A model without `save_pretrained` (a scalar-head reward
    model as critic) saves its state dict as safetensors."""
    runtime = runtime or Runtime.single()
    injected = hasattr(model, "peft_config") and not hasattr(model, "disable_adapter")  # a LoRA critic: by name
    if hasattr(model, "peft_config") and not injected:  # an adapter (never sharded: LoRA runs are plain data parallel)
        if runtime.is_main:
            model.save_pretrained(path, safe_serialization=True)
        return
    state = runtime.full_state_dict(model)
    if not runtime.is_main:
        return
    if hasattr(model, "save_pretrained") and not injected:
        model.save_pretrained(path, state_dict=state, safe_serialization=True)
    else:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))


def load_weights(model: nn.Module, path: Path, runtime: Runtime | None = None) -> None:
    """Load what `save_weights` wrote into `model` in place (same architecture, same LoRA setup), on every rank.
    Hugging Face folders go through the library's own loader, which knows how its files name the weights."""
    runtime = runtime or Runtime.single()
    if (path / "adapter_config.json").exists():
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(model, load_peft_weights(str(path), device="cpu"))
        return
    if (path / "config.json").exists():
        dtype = next(model.parameters()).dtype
        state = type(model).from_pretrained(path, use_safetensors=True, dtype=dtype).state_dict()
    else:
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
    runtime.load_full_state_dict(model, state)


def latest(root: Path) -> dict | None:
    """The newest complete checkpoint's record, or None."""
    pointer = root / "latest.json"
    if not pointer.exists():
        return None
    info = read_json(pointer)
    return info if (root / info["dir"] / "trainer.pt").exists() else None


def save(root: Path, iteration: int, trainer, runtime: Runtime) -> None:
    """Write this iteration's checkpoint (every rank writes its own state file), then point to it."""
    name = f"iter-{iteration:06d}"
    path = root / name
    if runtime.is_main:
        shutil.rmtree(path, ignore_errors=True)  # a half-written one from an earlier, killed attempt
    runtime.barrier()
    save_weights(trainer.models.policy, path / "policy", runtime)
    if trainer.models.critic is not None:
        save_weights(trainer.models.critic, path / "critic", runtime)
    runtime.barrier()
    state = trainer.state_dict()
    if runtime.is_main:
        torch.save({k: state.pop(k) for k in ("optimizer", "scheduler")}, path / "trainer.pt.tmp")
    else:
        state = {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}
    torch.save(state, path / f"rank-{runtime.rank}.pt")
    runtime.barrier()
    if runtime.is_main:
        (path / "trainer.pt.tmp").rename(path / "trainer.pt")  # its presence marks the checkpoint complete
        previous = latest(root)
        write_json(root / "latest.json", {"iteration": iteration, "dir": name, "world_size": runtime.world_size})
        if previous and previous["dir"] != name:
            shutil.rmtree(root / previous["dir"], ignore_errors=True)
    runtime.barrier()


def restore(root: Path, trainer, runtime: Runtime) -> int:
    """Load the newest checkpoint into `trainer` (and its models); returns its iteration, 0 when there is none."""
    info = runtime.broadcast(latest(root))
    if info is None:
        return 0
    if info["world_size"] != runtime.world_size:
        raise UserError(f"the checkpoint in {root} was written by {info['world_size']} processes; resume it with "
                        f"the same number (this run has {runtime.world_size})")
    path = root / info["dir"]
    load_weights(trainer.models.policy, path / "policy", runtime)
    if trainer.models.critic is not None:
        load_weights(trainer.models.critic, path / "critic", runtime)
    state = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
    state.update(torch.load(path / f"rank-{runtime.rank}.pt", weights_only=True, map_location="cpu"))
    trainer.load_state_dict(state)
    return info["iteration"]


def remove_all(root: Path) -> None:
    """Drop the resume checkpoints of a completed run (the final policy lives in checkpoints/final)."""
    (root / "latest.json").unlink(missing_ok=True)
    for path in root.glob("iter-*"):
        shutil.rmtree(path, ignore_errors=True)
