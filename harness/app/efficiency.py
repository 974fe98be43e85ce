"""How close a contender runs to the machine (`harness bench`): tokens/s per phase, model FLOP/s as a fraction of
the measured matmul peak (MFU), and decode steps beside the memory-bandwidth bound. Definitions: docs/bench.md.

Counting: a forward pre-hook on every model's transformer backbone adds up the token positions it is fed
(input_ids or inputs_embeds, padding included: the hardware computes them) and the phase it ran in. Model FLOPs
of one call = 2 * N * tokens, times 3 when gradients are recorded (the backward costs twice the forward), so a
forward + backward is 6 * N * tokens; N = the backbone's parameters minus its input embedding (a lookup, not a
matmul). LM/score heads and attention scores are left out, so the count is a lower bound and does not depend on
how many positions a contender's head projects (ours: response positions only; TRL: a tiled fused head).
Memory: TensorPeak (live tensor bytes from torch.profiler's memory events) and PeakRss (resident-set growth).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
import time
from collections import defaultdict

import torch

from harness.core.precision import cpu_matmul_gflops

PEAK_SIZE = 512  # square matmul of the peak probe: big enough to reach fp32 peak, small enough for emulated bf16
COPY_MB = 256  # tensor copied by the bandwidth probe: far larger than any CPU cache


def backbone(model) -> torch.nn.Module:
    """The transformer body that every forward of `model` goes through (PEFT and heads unwrapped)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, "base_model", model)


def matmul_parameters(model) -> int:
    """N of the FLOP count: the backbone's parameters without its input embedding table."""
    body = backbone(model)
    embedding = body.get_input_embeddings() if hasattr(body, "get_input_embeddings") else None
    skip = {id(p) for p in embedding.parameters()} if embedding is not None else set()
    return sum(p.numel() for p in body.parameters() if id(p) not in skip)


class PhaseCounter:
    """Token positions, forward calls and model FLOPs per phase, from hooks on the models' backbones."""

    def __init__(self, default_phase: str = "other"):
        self.phase = default_phase
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "tokens": 0, "flops": 0.0})
        self.handles: list = []
        self.paused = False

    def watch(self, *models) -> "PhaseCounter":
        seen = set()
        for model in models:
            if model is None or id(body := backbone(model)) in seen:
                continue
            seen.add(id(body))
            n = matmul_parameters(model)
            self.handles.append(body.register_forward_pre_hook(self._hook(n), with_kwargs=True))
        return self

    def _hook(self, n_params: int):
        def count(module, args, kwargs):
            if self.paused:
                return
            x = kwargs.get("input_ids", args[0] if args else None)
            if x is None:
                x = kwargs.get("inputs_embeds")
            tokens = int(x.shape[0] * x.shape[1]) if x is not None and x.dim() >= 2 else 0
            c = self.counts[self.phase]
            c["calls"] += 1
            c["tokens"] += tokens
            c["flops"] += (6 if torch.is_grad_enabled() else 2) * n_params * tokens

        return count

    @contextlib.contextmanager
    def during(self, phase: str):
        before, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = before

    def reset(self) -> None:
        self.counts.clear()

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@contextlib.contextmanager
def our_phases(counter: PhaseCounter):
    """Tells `counter` which of the backbone's timed phases (experience.Timer: generation, scoring, update) runs."""
    from harness.core import experience

    enter, exit_ = experience.Timer.__enter__, experience.Timer.__exit__

    def entered(timer):
        timer._outer, counter.phase = counter.phase, timer.phase
        return enter(timer)

    def exited(timer, *exc):
        counter.phase = timer._outer
        return exit_(timer, *exc)

    experience.Timer.__enter__, experience.Timer.__exit__ = entered, exited
    try:
        yield counter
    finally:
        experience.Timer.__enter__, experience.Timer.__exit__ = enter, exit_


def memory_bandwidth_gbs(mb: int = COPY_MB, repeats: int = 5) -> float:
    """Sustained memory bandwidth in GB/s: the best of `repeats` copies of a `mb`-MB float32 tensor (each byte read
    once and written once)."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch of the destination pages
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def cuda_matmul_gflops(dtype: torch.dtype, size: int = 4096, seconds: float = 0.2) -> float:
    """GPU counterpart of the CPU probe (not exercised on this project's CPU machines)."""
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    torch.mm(a, b)
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    torch.cuda.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


def machine_peaks(threads: int) -> dict:
    """Measured in this process, with the bench's thread count: matmul GFLOP/s in fp32 and bf16 (harness/precision's
    probe at PEAK_SIZE) and copy bandwidth."""
    if torch.cuda.is_available():
        matmul = {name: round(cuda_matmul_gflops(getattr(torch, name)), 1) for name in ("float32", "bfloat16")}
        where = torch.cuda.get_device_name()
    else:
        matmul = dict(cpu_matmul_gflops(threads, PEAK_SIZE))
        where = f"CPU, {threads} threads"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        bandwidth = memory_bandwidth_gbs()
    finally:
        torch.set_num_threads(before)
    return {"matmul_gflops": matmul, "memory_bandwidth_gbs": round(bandwidth, 2), "device": where, "cpu": cpu_name(),
            "matmul_size": PEAK_SIZE, "bf16_native": matmul["bfloat16"] >= matmul["float32"]}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def efficiency(counts: dict, seconds: dict, peaks: dict, dtype: str, weight_bytes: int, iterations: int) -> dict:
    """Per phase: tokens/s, model GFLOP/s and MFU against the `dtype` matmul peak; for generation also decode steps/s
    beside the bandwidth bound (one decode step reads every weight once: bound = bandwidth / weight bytes)."""
    peak = peaks["matmul_gflops"][dtype]
    out = {}
    for phase in ("generation", "scoring", "update"):
        c, s = counts.get(phase), seconds.get(f"{phase}_s", 0.0) * iterations
        if not c or s <= 0:
            continue
        gflops = c["flops"] / s / 1e9
        row = {"tokens_per_s": round(c["tokens"] / s, 1), "model_gflops": round(gflops, 3),
               "mfu": round(gflops / peak, 4), "forward_calls": c["calls"] / iterations,
               "tokens": c["tokens"] / iterations}
        if phase == "generation":
            bound = peaks["memory_bandwidth_gbs"] * 1e9 / weight_bytes
            row.update({"forward_calls_per_s": round(c["calls"] / s, 1),
                        "bandwidth_bound_calls_per_s": round(bound, 1),
                        "fraction_of_bandwidth_bound": round(c["calls"] / s / bound, 4)})
        out[phase] = row
    return {"peak_gflops": peak, "dtype": dtype, **out}


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 sent to /dev/null: silences what C++ libraries print there (Python's sys.stderr flushed
    first, restored after)."""
    import sys

    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class PeakRss:
    """Highest resident set size seen since `rebase()`, in MB above the RSS at that moment."""

    def __init__(self, interval: float = 0.001):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.interval, self.baseline, self.peak = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def rebase(self) -> None:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so the next baseline is honest
        except OSError:
            pass
        self.baseline = self.peak = self.rss()

    def peak_mb(self) -> float:
        return (max(self.peak, self.rss()) - self.baseline) / 2**20


class TensorPeak:
    """Peak bytes of live tensors (PyTorch's CPU allocator; CUDA's too on GPU) while active, from torch.profiler's
    memory events (profile_memory=True): allocations minus frees in time order, highest running total. Independent
    of what the C allocator keeps or returns to the system, so contenders run one after another in one process
    measure the same way; profiled passes are never the timed ones (the profiler slows them)."""

    def __init__(self):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.prof = profile(activities=activities, profile_memory=True)
        self.active = False

    def start(self) -> "TensorPeak":
        gc.collect()
        with quiet_stderr():  # kineto prints "USDT ... profiler_start" lines to fd 2, whatever KINETO_LOG_LEVEL says
            self.prof.start()
        self.active = True
        return self

    def stop(self) -> float:
        """Stops (once) and returns the peak in MB above the start."""
        if self.active:
            with quiet_stderr():
                self.prof.stop()
            self.active = False
            events = sorted((e.start_ns(), e.nbytes()) for e in self.prof.profiler.kineto_results.events()
                            if e.name() == "[memory]")
            running = self.peak = 0
            for _, nbytes in events:
                running += nbytes
                self.peak = max(self.peak, running)
            self.prof = None  # drop the event buffers
        return self.peak / 2**20
