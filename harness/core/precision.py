"""Precision policy: fp32 master weights for everything trained, bf16 compute only where the hardware runs it natively.

- Trainable weights (policy, critic, LoRA adapters) are always float32, so that an AdamW step of lr 3e-6 on a
  weight of 0.02 is not rounded away (a bf16 weight there has a spacing of 1.2e-4: 96% of them never move).
- `model.compute_dtype` (auto | float32 | bfloat16) is the dtype of the forward passes, run under torch.autocast.
  auto = bfloat16 on a CUDA device with native bf16, or on a CPU whose measured bf16 matmul is at least as fast as
  fp32 (native AVX512-BF16/AMX); float32 otherwise. An AVX2-only CPU emulates bf16 about 100x slower than fp32.
- `model.frozen_dtype` is the storage dtype of the frozen models (reference copy, reward model, a LoRA model's base
  weights); a dtype the hardware cannot run natively falls back to float32 rather than to emulation.
- `model.logprob_dtype` is the arithmetic of the training log-probs after the logits (harness.core.scoring.
  sequence_logprobs): float32 (the default: logits upcast, log-softmax and sums in fp32), or bfloat16, the REBEL
  authors' arithmetic (every step and the summed sequence log-probs rounded to bf16). It is a fidelity option, not a
  speed one, so it never falls back: asked for, it is what runs.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass

import torch

PROBE_SIZE = 256  # small enough that even emulated bf16 (~1 GFLOP/s, 33 ms a product) keeps the probe < 0.5 s
PROBE_TRIALS = 5  # interleaved rounds per dtype
PROBE_SECONDS = 0.01  # per round and dtype


def _fastest(a: torch.Tensor, b: torch.Tensor, seconds: float) -> float:
    """The fastest single product within `seconds`: on a shared machine a product that waits for a descheduled
    thread measures the neighbours, the fastest one measures the hardware."""
    fastest, start = float("inf"), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        torch.mm(a, b)
        t1 = time.perf_counter()
        fastest = min(fastest, t1 - t0)
        if t1 - start >= seconds:
            return fastest


@functools.lru_cache(maxsize=None)
def cpu_matmul_gflops(threads: int = 2, size: int = PROBE_SIZE) -> dict[str, float]:
    """Measured CPU matmul throughput, {"float32": GFLOP/s, "bfloat16": GFLOP/s}, of a size x size product with
    `threads` threads: its fastest run over PROBE_TRIALS interleaved rounds per dtype (cached per process; about
    0.1-0.3 s the first time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        operands = {}
        for name in ("float32", "bfloat16"):
            a, b = (torch.randn(size, size).to(getattr(torch, name)) for _ in range(2))
            torch.mm(a, b)  # warm-up: kernel selection, first-touch allocation
            operands[name] = (a, b)
        fastest = dict.fromkeys(operands, float("inf"))
        for _ in range(PROBE_TRIALS):
            for name, (a, b) in operands.items():
                fastest[name] = min(fastest[name], _fastest(a, b, PROBE_SECONDS))
        return {name: round(2 * size**3 / t / 1e9, 2) for name, t in fastest.items()}
    finally:
        torch.set_num_threads(before)


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Does `device` run bf16 natively (not emulated)? With the evidence, for the run's record."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
        return ok, f"CUDA {'with' if ok else 'without'} native bf16"
    if device.type != "cpu":
        return False, f"{device.type}: bf16 support unknown, float32 used"
    # One thread: on a shared machine a two-thread product waits for whichever thread was descheduled (measured
    # here: 1.7 GFLOP/s with 2 threads against 108 with 1, under load), and the ratio then measures the neighbours.
    g = cpu_matmul_gflops(threads=1)
    ok = g["bfloat16"] >= g["float32"]
    return ok, (f"CPU matmul probe (1 thread): bf16 {g['bfloat16']:.1f} vs fp32 {g['float32']:.1f} GFLOP/s, "
                f"bf16 {'native' if ok else 'emulated'}")


@dataclass(frozen=True)
class Precision:
    compute: torch.dtype = torch.float32  # forward passes (autocast when not float32)
    frozen: torch.dtype = torch.float32  # reference, reward model, LoRA base weights
    reason: str = "float32 throughout"
    master: torch.dtype = torch.float32  # every trained weight, gradient and AdamW state
    logprob: torch.dtype = torch.float32  # arithmetic of the training log-probs (model.logprob_dtype)

    @property
    def compute_name(self) -> str:
        return str(self.compute).removeprefix("torch.")

    @property
    def frozen_name(self) -> str:
        return str(self.frozen).removeprefix("torch.")

    def autocast(self, device: torch.device | str):
        """The context of a trainable model's forward: bf16 autocast, or nothing at float32."""
        if self.compute == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.compute)

    def describe(self) -> str:
        logprob = ("" if self.logprob == torch.float32 else
                   f", log-probs {str(self.logprob).removeprefix('torch.')} (the REBEL authors' arithmetic)")
        return (f"trainable weights float32 (master weights, grads, AdamW states), compute {self.compute_name}, "
                f"frozen models {self.frozen_name}{logprob} ({self.reason})")


def resolve_precision(compute: str, frozen: str, device: torch.device | str, logprob: str = "float32") -> Precision:
    """The run's precision from model.compute_dtype and model.frozen_dtype on `device`. The probe runs only when a
    16-bit dtype is asked for, so float32 presets (tiny, CI) never pay for it."""
    device = torch.device(device)
    wants_16 = compute != "float32" or frozen != "float32"
    native, evidence = native_bf16(device) if wants_16 else (False, "")
    if compute == "auto":
        compute = "bfloat16" if native else "float32"
    notes = [evidence] if evidence else []
    if compute == "bfloat16" and not native:
        notes.append("bfloat16 compute was asked for explicitly: it runs emulated here")
    if frozen == "bfloat16" and not native or frozen == "float16" and device.type != "cuda":
        notes.append(f"frozen models float32: {frozen} would run emulated here")
        frozen = "float32"
    return Precision(getattr(torch, compute), getattr(torch, frozen), "; ".join(notes) or "float32 throughout",
                     logprob=getattr(torch, logprob))
