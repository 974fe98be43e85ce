"""One process or many: the run's device, its rank, and the few collectives the backbone needs.

Started plainly, a run is one process on the best device (CUDA when present). Started by `accelerate launch` (or
torchrun), every process is one data-parallel rank (accelerate's PartialState sets up the process group: NCCL on
GPUs, gloo on CPUs):
  - each rank samples, scores and trains on its own contiguous shard of every iteration's prompts, so the global
    batch is the configured `train.prompts_per_iteration`;
  - before every optimizer step the gradients are averaged over ranks (DDP's arithmetic; done explicitly because
    the backbone's shared-prefix forwards call a model twice per backward, which DDP's reducer does not allow),
    so every rank holds the same weights and optimizer state;
  - statistics and budget counters are reduced, evaluation is sharded and gathered, and rank 0 alone writes.
With an FSDP accelerate config the trainable models are sharded instead (harness/core/fsdp.py) and FSDP averages the
gradients. With one process every collective is the identity, and nothing changes.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from harness.core import fsdp
from harness.core.errors import UserError

BUCKET_ELEMENTS = 2**24  # gradients are all-reduced in flat buckets of this many elements (64 MB in fp32)


def derived_seed(seed: int, stream: str, rank: int = 0) -> int:
    """Independent, reproducible seeds for the run's random streams (data order, sampling, ...) and ranks."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}/{rank}".encode()).digest()[:7], "big")


@dataclass
class Runtime:
    """This process's place in the run. `Runtime.single()` is one process on CPU (tests, tools)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    fsdp: fsdp.FsdpSettings | None = None  # sharded (FSDP2) instead of replicated models

    @classmethod
    def single(cls, device: str = "cpu") -> "Runtime":
        return cls(device=torch.device(device))

    @classmethod
    def from_environment(cls) -> "Runtime":
        """The launcher's process group if there is one (accelerate launch, torchrun), else one process."""
        import os

        sharding = fsdp.FsdpSettings.from_environment()
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return cls.single("cuda" if torch.cuda.is_available() else "cpu")
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True it would not form a CPU group
        return cls(rank=state.process_index, world_size=state.num_processes, device=state.device,
                   backend=state.backend, fsdp=sharding)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list, what: str = "prompts") -> list:
        """This rank's contiguous block of `items`; every rank gets the same number."""
        if len(items) % self.world_size:
            raise UserError(f"{len(items)} {what} cannot be split evenly over {self.world_size} processes: choose a "
                            f"multiple of {self.world_size}")
        n = len(items) // self.world_size
        return items[self.rank * n : (self.rank + 1) * n]

    def split(self, items: list) -> list:
        """This rank's contiguous part of `items` when they need not split evenly (evaluation prompts)."""
        n, w, r = len(items), self.world_size, self.rank
        return items[r * n // w : (r + 1) * n // w]

    def gather(self, items: list) -> list:
        """The concatenation, in rank order, of every rank's `items` (on every rank)."""
        if not self.distributed:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def mean(self, stats: dict[str, float]) -> dict[str, float]:
        """Per-key mean over the ranks that report the key (equal shards: the mean over the global batch)."""
        if not self.distributed:
            return dict(stats)
        per_rank = self.gather([stats])
        keys = sorted({k for s in per_rank for k in s})
        return {k: sum(s[k] for s in per_rank if k in s) / sum(k in s for s in per_rank) for k in keys}

    def sum(self, counters: dict[str, float]) -> dict[str, float]:
        if not self.distributed:
            return dict(counters)
        per_rank = self.gather([counters])
        return {k: sum(s[k] for s in per_rank) for k in counters}

    def sum_tensors(self, parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Scalar tensors summed over ranks (batch-wide statistics of a loss: Batch.sum_over_ranks)."""
        if not self.distributed:
            return parts
        flat = torch.stack([p.detach().float().reshape(()) for p in parts])
        torch.distributed.all_reduce(flat)
        return tuple(flat.to(parts[0].device))

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (decisions that depend on files only rank 0 may see)."""
        if not self.distributed:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj])[0]

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def prepare_models(self, models) -> None:
        """Shard the trainable models (FSDP runs) before an optimizer is made over their parameters."""
        if self.fsdp is not None:
            for model in (models.policy, models.critic):
                if model is not None:
                    fsdp.shard(model, self.fsdp)

    def gathered(self, *models: nn.Module | None):
        """Sharded models' weights gathered for rollouts and evaluation (FSDP); nothing to do otherwise."""
        return fsdp.gathered(*models) if self.fsdp is not None else contextlib.nullcontext()

    def full_state_dict(self, model: nn.Module) -> dict:
        """The model's whole state on rank 0 (a collective under FSDP; {} on the other ranks there)."""
        return fsdp.full_state_dict(model) if self.fsdp is not None else model.state_dict()

    def load_full_state_dict(self, model: nn.Module, state: dict) -> None:
        if self.fsdp is not None:
            fsdp.load_full_state_dict(model, state)
        else:
            model.load_state_dict(state)

    def optimizer_state(self, modules: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """Optimizer state over `modules`' parameters: identical on every rank for data parallel, gathered to
        rank 0 under FSDP (a collective)."""
        return fsdp.optimizer_state(modules, optimizer) if self.fsdp is not None else optimizer.state_dict()

    def load_optimizer_state(self, modules: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.fsdp is not None:
            fsdp.load_optimizer_state(modules, optimizer, state)
        else:
            optimizer.load_state_dict(state)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """grad := mean over ranks of grad, for every parameter (a missing grad counts as zeros on that rank).
        Under FSDP the gradients are already averaged (reduce-scattered) by the backward."""
        if not self.distributed or self.fsdp is not None:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets(params, BUCKET_ELEMENTS):
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            torch.distributed.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for p in bucket:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()

    @cached_property
    def label(self) -> str:
        if not self.distributed:
            return f"1 process on {self.device}"
        kind = "FSDP2-sharded" if self.fsdp is not None else "data-parallel"
        return f"{self.world_size} {kind} processes ({self.backend}) on {self.device.type}"


def _buckets(params: list[torch.nn.Parameter], size: int):
    """Consecutive parameters of one dtype, about `size` elements per bucket (bounded extra memory)."""
    bucket, n = [], 0
    for p in params:
        if bucket and (n >= size or p.grad.dtype != bucket[0].grad.dtype):
            yield bucket
            bucket, n = [], 0
        bucket.append(p)
        n += p.numel()
    if bucket:
        yield bucket
