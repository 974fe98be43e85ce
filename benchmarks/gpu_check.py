"""The GPU path in one prepared run (issue 30): on one CUDA GPU, no network, from the repository plus the wheels
docs/bench.md lists. Writes results/gpu/gpu_check.json and .md (GPU, versions, settings, every figure).

  (a) tests: the pytest selection that touches devices, dtypes and generation (TESTS), run with CUDA visible;
  (b) tiny:  the tiny preset on CUDA for every registered optimizer, fp32 and bf16 autocast on fp32 masters: the
      first update on a batch sampled on the CPU, against the same update on the CPU (loss within FP32_TOL / BF16_TOL
      of max(1, |CPU loss|)), then more iterations sampled on the GPU, every loss finite;
  (c) scale: Pythia-1.4B and -2.8B architectures (PYTHIA: their public config.json values) with random weights and
      LoRA as the paper presets, REBEL, PPO, RLOO k=4, GRPO and DPO, and TRL's RLOO, GRPO and DPO trainers at matched
      settings (harness.app.bench): seconds per iteration by phase and peak GPU memory at the stated batch; rollouts
      through vLLM when it imports, the backbone's HF sampler otherwise (the result says which).
Parts stop when the time budget (--budget-s) is spent and say what they skipped.

  python benchmarks/gpu_check.py --cache .cache/harness        # on the GPU machine (docs/scaling.md)
  python benchmarks/gpu_check.py --cpu-dry-run --out /tmp/gpu  # the same code at toy size on CPU (CI runs it)
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TESTS = ["tests/test_precision.py", "tests/test_engines.py", "tests/test_logprob_fidelity.py",
         "tests/test_models_fidelity.py", "tests/test_run.py"]
FP32_TOL, BF16_TOL = 1e-3, 5e-2  # |device loss - CPU loss| / max(1, |CPU loss|), first update, same batch
PYTHIA = {  # EleutherAI/pythia-{1.4b,2.8b}-deduped config.json (GPT-NeoX); not downloaded, written here
    "pythia-1.4b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
                    "intermediate_size": 8192},
    "pythia-2.8b": {"hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32,
                    "intermediate_size": 10240},
}
PYTHIA_COMMON = {"vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
                 "use_parallel_residual": True, "layer_norm_eps": 1e-5, "hidden_act": "gelu",
                 "tie_word_embeddings": False, "initializer_range": 0.02}
TOY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256}
SCALE_ALGOS = [("rebel", "rebel", {}), ("ppo", "ppo", {}), ("rloo_k4", "rloo", {"samples_per_prompt": 4}),
               ("grpo", "grpo", {}), ("dpo", "dpo", {})]  # (label, optimizer, settings); TRL beside rloo/grpo/dpo
TRL_MATCH = {"rloo_k4": "rloo", "grpo": "grpo", "dpo": "dpo"}


class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "accelerate", "peft", "trl", "datasets", "vllm", "pydantic"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- (a) the tests --------------------------------------------------------------------------------------------------

def run_tests(dry: bool, cache: str, timeout_s: float) -> dict:
    """The selection with CUDA visible (tests that go through `harness run` train on it; the precision and engine
    tests probe it). The dry run only collects it: running the suite from inside the suite would recurse."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
    # -W ignore: a warnings summary printed after the collected ids would push them out of the recorded tail
    cmd += ["--collect-only", "-W", "ignore"] if dry else ["-x", "--timeout", str(int(timeout_s))]
    env = {**os.environ, "HARNESS_TEST_CACHE": cache,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s + 30)
        tail, rc = (done.stdout + done.stderr)[-(20000 if dry else 3000):], done.returncode  # dry: every id
    except subprocess.TimeoutExpired as e:
        tail, rc = (str(e.stdout or "") + str(e.stderr or ""))[-3000:], "timeout"
    last = [ln for ln in tail.splitlines() if ln.strip()][-1:] or [""]
    return {"command": " ".join(cmd[1:]), "returncode": rc, "ok": rc == 0, "summary": last[0],
            "seconds": round(time.perf_counter() - start, 1), "output_tail": tail, "collect_only": dry}


# ---- (b) every optimizer on the tiny preset --------------------------------------------------------------------------

def to_device(batch, device: str):
    """A copy of the batch on `device` (a copy even on the same device: the update writes into its batch)."""
    moved = {f.name: getattr(batch, f.name).to(device, copy=True) for f in dataclasses.fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved)


def first_loss(trainer, batch, iteration: int = 1) -> tuple[float, dict]:
    """The update on this batch; returns its first micro-batch's loss (the same prompts on every device: the
    minibatch permutation comes from a CPU generator seeded alike) and the update's statistics."""
    seen, objective = [], trainer.objective

    def record(b, new):
        loss, stats = objective(b, new)
        if not seen:
            seen.append(loss.item())
        return loss, stats

    trainer.objective = record
    try:
        stats = trainer.update(batch, iteration)
    finally:
        trainer.objective = objective
    return seen[0], stats


def check_optimizer(name: str, cfg, data, device: str, iterations: int) -> dict:
    """CPU reference update, then for fp32 and bf16 autocast: the same update on `device` and more iterations."""
    from algorithms.base import make
    from harness.core.distributed import Runtime
    from harness.core.experience import Budget
    from harness.core.models import load_models
    from harness.core.train import Trainer, training_examples
    from harness.tasks import resolve_paths

    algo = make(name)
    paths = resolve_paths(cfg.model, log=lambda *a: None)
    examples = training_examples(algo, data)
    cpu_models = load_models(cfg.model, paths, needs_critic=algo.needs_critic, device="cpu")
    cpu = Trainer(cfg, algo, cpu_models, examples, Budget())
    with cpu_models.autocast():
        batch = cpu.collect(cpu.next_prompts())
    copies = {dtype: to_device(batch, device) for dtype in ("float32", "bfloat16")}
    reference, _ = first_loss(cpu, batch)
    out = {"cpu_first_loss": reference}
    for dtype, tol in (("float32", FP32_TOL), ("bfloat16", BF16_TOL)):
        row: dict = {}
        try:
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.model.compute_dtype = dtype
            models = load_models(run_cfg.model, paths, needs_critic=algo.needs_critic, device=device)
            trainer = Trainer(run_cfg, make(name), models, examples, Budget(), runtime=Runtime.single(device))
            trainer.next_prompts()  # the CPU trainer's prompts, consumed alike
            sync(device)
            start = time.perf_counter()
            loss, _ = first_loss(trainer, copies[dtype])
            losses = [loss]
            for i in range(2, iterations + 1):
                losses.append(trainer.iteration(i).get("loss", float("nan")))
            sync(device)
            diff = abs(loss - reference) / max(1.0, abs(reference))
            finite = all(x == x and abs(x) != float("inf") for x in losses)
            row = {"first_loss": loss, "relative_difference": diff, "tolerance": tol, "losses": losses,
                   "finite": finite, "ok": finite and diff <= tol, "seconds": round(time.perf_counter() - start, 3),
                   "compute_dtype": models.precision.compute_name, "trained_dtype": str(
                       next(p for p in models.policy.parameters() if p.requires_grad).dtype)}
            del trainer, models
        except Exception as e:  # one optimizer's failure is a finding, not the end of the run
            row = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        out[dtype] = row
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def run_tiny(preset: str, cache: str, device: str, prompts: int, new_tokens: int, iterations: int, clock: Clock,
             stop_at_s: float) -> dict:
    from algorithms.base import names
    from harness import tasks
    from harness.app.config import resolve

    cfg = resolve(preset, {"model": {"cache_dir": cache}, "train": {"prompts_per_iteration": prompts,
                                                                   "iterations": iterations},
                           "generation": {"max_new_tokens": new_tokens, "engine": "hf"}})
    _, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset)
    rows, skipped = {}, []
    for name in names():
        if clock.left() < stop_at_s:
            skipped.append(name)
            continue
        try:
            rows[name] = check_optimizer(name, cfg, data, device, iterations)
        except Exception as e:  # the CPU reference failed: recorded, and the next optimizer runs
            rows[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return {"preset": preset, "prompts_per_iteration": prompts, "max_new_tokens": new_tokens,
            "iterations": iterations, "tolerance": {"float32": FP32_TOL, "bfloat16": BF16_TOL},
            "optimizers": rows, "skipped_for_time": skipped,
            "ok": all(r.get(d, {}).get("ok") for r in rows.values() for d in ("float32", "bfloat16")) and not skipped}


# ---- (c) the paper's runtime and memory comparison at real size ------------------------------------------------------

class CudaPeak:
    """Stands in for harness.app.bench.TensorPeak on a GPU: the CUDA allocator's peak over the same span (models
    loaded, warm-up iterations), above what was allocated before."""

    def start(self) -> "CudaPeak":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.base, self.peak = torch.cuda.memory_allocated(), None
        return self

    def stop(self) -> float:
        if self.peak is None:
            self.peak = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return self.peak


@functools.lru_cache(maxsize=None)
def wide_tokenizer(path: str, vocab: int):
    """The preset's tokenizer with added tokens up to the model's vocabulary, so that every sampled id decodes to
    one token and re-encodes to it (TRL scores decoded text: without them it would score a shorter sequence)."""
    from harness.core.models import load_tokenizer

    tok = load_tokenizer(path)
    tok.add_tokens([f"<x{i}>" for i in range(len(tok), vocab)])
    return tok


def random_pythia(size: str, tokenizer_dir: str, out: Path, device: str, dry: bool) -> dict:
    """A policy and a reward model of the architecture, randomly initialised (seeded) in bf16 and saved."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    from harness.core.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    shape = TOY if dry else PYTHIA[size]
    config = GPTNeoXConfig(**{**PYTHIA_COMMON, **shape, "vocab_size": len(tok) if dry else 50304,
                              "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                              "bos_token_id": tok.bos_token_id})
    torch.manual_seed(0)
    for name, cls, extra in (("policy", GPTNeoXForCausalLM, {}), ("reward", GPTNeoXForSequenceClassification,
                                                                   {"num_labels": 1})):
        with torch.device(device):
            model = cls(GPTNeoXConfig(**{**config.to_dict(), **extra})).to(torch.bfloat16)
        model.save_pretrained(out / name, safe_serialization=True)
        tok.save_pretrained(out / name)
        del model
    with torch.device("meta"):
        parameters = sum(p.numel() for p in GPTNeoXForCausalLM(config).parameters())
    return {"policy": str(out / "policy"), "reward_model": str(out / "reward"), "tokenizer": str(out / "policy"),
            "parameters": parameters}


def long_prompts(data, tokens: int):
    """The synthetic task's posts repeated (line by line) until every prompt fills max_prompt_tokens, as TL;DR's
    do; the prompt's truncation then cuts them at a line."""
    grow = lambda ex: dataclasses.replace(ex, post="\n".join([ex.post] * (1 + 4 * tokens // max(1, len(ex.post)))))
    return dataclasses.replace(data, sft_train=[grow(e) for e in data.sft_train[:512]],
                               pref_train=[grow(e) for e in data.pref_train[:512]])


def run_scale(cache: str, device: str, dry: bool, prompts: int, iterations: int, warmup: int, clock: Clock,
              stop_at_s: float) -> dict:
    from harness import tasks
    from harness.app import bench
    from harness.app.config import resolve
    from harness.app.efficiency import PeakRss, machine_peaks
    from harness.core import models as models_module
    from harness.tasks import resolve_paths

    bench.quiet_libraries()
    engine = "vllm" if device == "cuda" and _importable("vllm") else "hf"
    trl_ok = _importable("trl") and _importable("datasets")
    tiny = resolve("tiny-test" if dry else "tiny", {"model": {"cache_dir": cache}})
    tokenizer_dir = resolve_paths(tiny.model, log=lambda *a: None)["tokenizer"]
    peaks = machine_peaks(torch.get_num_threads())
    out: dict = {"engine": engine, "trl_available": trl_ok, "prompts_per_iteration": prompts,
                 "iterations": iterations, "warmup_iterations": warmup, "sizes": {}, "skipped_for_time": []}
    original_tokenizer, original_peak = models_module.load_tokenizer, bench.TensorPeak
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp, PeakRss() as rss:
        try:
            # 2.8B first (the paper's Figure 2); the dry run's toy model stands for one size (the code is the same)
            for size in ("pythia-2.8b",) if dry else ("pythia-2.8b", "pythia-1.4b"):
                if clock.left() < stop_at_s:
                    out["skipped_for_time"].append(size)
                    continue
                preset = "tldr-pythia-2.8b" if size == "pythia-2.8b" else "tldr-pythia-1.4b"
                paths = random_pythia(size, tokenizer_dir, Path(tmp) / size, device, dry)
                vocab = 50304 if not dry else None
                # one widened tokenizer object for every contender (loading one with 50k added tokens is slow)
                loader = (lambda p, _o=original_tokenizer: wide_tokenizer(p, vocab) if p.startswith(tmp) else _o(p)) \
                    if vocab else original_tokenizer
                models_module.load_tokenizer = bench.load_tokenizer = loader
                if device == "cuda":
                    bench.TensorPeak = CudaPeak
                overrides = {"task": {"name": "tldr", "source": "synthetic", "dataset": None,
                                      "preference_dataset": None},
                             "model": {"policy": paths["policy"], "reward_model": paths["reward_model"],
                                       "tokenizer": paths["tokenizer"], "cache_dir": cache},
                             "train": {"prompts_per_iteration": prompts, "iterations": warmup + iterations},
                             "generation": {"engine": engine}}
                if dry:
                    overrides["task"]["max_prompt_tokens"] = 32
                    overrides["generation"]["max_new_tokens"] = 8
                    overrides["model"]["compute_dtype"] = "float32"
                cfg = resolve(preset, overrides)
                _, data = tasks.load("tldr", "synthetic")
                data = long_prompts(data, cfg.task.max_prompt_tokens)
                rows = {}
                for label, algo, args in SCALE_ALGOS:
                    for contender in ("ours", "trl") if label in TRL_MATCH and trl_ok else ("ours",):
                        key = label if contender == "ours" else f"TRL {TRL_MATCH[label]}"
                        if clock.left() < stop_at_s:
                            out["skipped_for_time"].append(f"{size} {key}")
                            continue
                        rows[key] = measure(contender, label, algo, args, cfg, data, iterations, warmup, rss,
                                            peaks, device)
                out["sizes"][size] = {"preset": preset, "micro_batch_prompts": cfg.train.micro_batch_prompts,
                                      "max_prompt_tokens": cfg.task.max_prompt_tokens,
                                      "max_new_tokens": cfg.generation.max_new_tokens,
                                      "lora": cfg.model.lora.model_dump() if cfg.model.lora else None,
                                      "architecture": TOY if dry else PYTHIA[size],
                                      "parameters": paths["parameters"], "contenders": rows}
        finally:
            models_module.load_tokenizer, bench.TensorPeak = original_tokenizer, original_peak
            bench.load_tokenizer = original_tokenizer
    out["machine"] = peaks
    return out


def measure(contender: str, label: str, algo: str, args: dict, cfg, data, iterations: int, warmup: int, rss,
            peaks: dict, device: str) -> dict:
    from algorithms.base import make
    from harness.app import bench

    start = time.perf_counter()
    try:
        if contender == "ours":
            row = bench.bench_ours(algo, cfg, data, iterations, warmup, rss, args, False, peaks, device=device)
        else:
            k = make(algo, args).samples_per_prompt
            row = bench.bench_trl(TRL_MATCH[label], cfg, data, iterations, warmup, rss, k, False, peaks,
                                  device=device)
        row = {**row, "ok": True}
    except Exception as e:
        row = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---- the report ---------------------------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    s = r["setup"]
    lines = [f"# GPU check ({'CPU dry run, toy size' if s['dry_run'] else s['device_name']})", "",
             f"`{s['command']}` at commit {s['commit']}, {s['date']}; {s['device_name']}; "
             + ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v) + f"; {s['seconds']} s in all.", ""]
    t = r.get("tests")
    if t:
        lines += ["## (a) tests", "", f"`{t['command']}`: {'passed' if t['ok'] else 'FAILED'} ({t['summary']}), "
                  f"{t['seconds']} s{' (collected only: dry run)' if t['collect_only'] else ''}", ""]
    b = r.get("tiny")
    if b:
        lines += ["## (b) every optimizer", "",
                  f"Preset {b['preset']}, {b['prompts_per_iteration']} prompts x {b['max_new_tokens']} tokens, "
                  f"{b['iterations']} iterations (the first on a CPU-sampled batch, compared with the same update on "
                  f"the CPU: relative difference over max(1, |CPU loss|), tolerance fp32 {FP32_TOL}, bf16 "
                  f"{BF16_TOL}). Skipped for time: {', '.join(b['skipped_for_time']) or 'none'}.", "",
                  "| optimizer | CPU first loss | fp32 first loss | fp32 diff | bf16 first loss | bf16 diff | "
                  "losses finite | ok |", "|---|---|---|---|---|---|---|---|"]
        for name, row in b["optimizers"].items():
            f, h = row.get("float32", {}), row.get("bfloat16", {})
            cell = lambda x, k: f"{x[k]:.6g}" if k in x else x.get("error", "")[:60]
            lines.append(f"| {name} | {row.get('cpu_first_loss', float('nan')):.6g} | {cell(f, 'first_loss')} | "
                         f"{cell(f, 'relative_difference')} | {cell(h, 'first_loss')} | "
                         f"{cell(h, 'relative_difference')} | {f.get('finite')} / {h.get('finite')} | "
                         f"{bool(f.get('ok') and h.get('ok'))} {row.get('error', '')[:80]} |")
        lines.append("")
    c = r.get("scale")
    if c:
        lines += ["## (c) runtime and peak memory at real size", "",
                  f"Random weights, the architectures' public configurations, LoRA as the presets; "
                  f"{c['prompts_per_iteration']} prompts per iteration, {c['warmup_iterations']} warm-up + "
                  f"{c['iterations']} timed iterations; rollouts: {c['engine']}; TRL importable: "
                  f"{c['trl_available']}. Peak MB: CUDA allocator peak above the start, from model loading through "
                  f"the warm-up (CPU dry run: live tensor bytes). Skipped for time: "
                  f"{', '.join(c['skipped_for_time']) or 'none'}.", ""]
        for size, v in c["sizes"].items():
            lines += [f"### {size} ({v['parameters'] / 1e9:.2f}B parameters, micro-batch {v['micro_batch_prompts']}, "
                      f"{v['max_prompt_tokens']} + {v['max_new_tokens']} tokens)", "",
                      "| contender | generation s | scoring s | update s | total s | peak MB | wall s | note |",
                      "|---|---|---|---|---|---|---|---|"]
            for key, row in v["contenders"].items():
                if row.get("ok"):
                    lines.append(f"| {key} | {row['generation_s']:.3f} | {row['scoring_s']:.3f} | "
                                 f"{row['update_s']:.3f} | {row['total_s']:.3f} | {row['peak_memory_mb']:.0f} | "
                                 f"{row['wall_s']} | |")
                else:
                    lines.append(f"| {key} | | | | | | {row['wall_s']} | {row['error'][:120]} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="the same code at toy size on the CPU")
    p.add_argument("--out", type=Path, default=None, help="default: results/gpu; a temporary folder for the dry run "
                   "(toy-size numbers are not GPU results)")
    p.add_argument("--cache", default=os.environ.get("HARNESS_TEST_CACHE") or str(ROOT / ".cache" / "harness"),
                   help="the harness cache holding the built tiny/tiny-test presets (carried to the GPU machine)")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting new work after this many seconds "
                   "(default 450; none for the dry run, which checks code, not time)")
    p.add_argument("--parts", default="tests,tiny,scale")
    p.add_argument("--prompts", type=int, default=8, help="prompts per iteration at real size")
    p.add_argument("--build-only", action="store_true", help="build the tiny and tiny-test presets into --cache "
                   "(on this machine, before the device run carries them) and stop")
    a = p.parse_args(argv)
    dry, parts = a.cpu_dry_run, set(a.parts.split(","))
    if a.build_only:
        from harness.app.config import resolve
        from harness.tasks import resolve_paths

        for preset in ("tiny-test", "tiny"):
            print(preset, resolve_paths(resolve(preset, {"model": {"cache_dir": a.cache}}).model))
        return 0
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-dry-run on a machine without a GPU", file=sys.stderr)
        return 2
    device = "cpu" if dry else "cuda"
    a.budget_s = a.budget_s or (float("inf") if dry else 450.0)
    clock = Clock(a.budget_s)
    result: dict = {}
    if "tests" in parts:
        result["tests"] = run_tests(dry, a.cache, timeout_s=600.0 if dry else min(90.0, max(30.0, clock.left() * 0.2)))
    if "tiny" in parts:
        result["tiny"] = run_tiny("tiny-test" if dry else "tiny", a.cache, device, 2 if dry else 8,
                                  4 if dry else 32, 2 if dry else 3, clock, stop_at_s=0.0 if dry else 0.6 * a.budget_s)
    if "scale" in parts:
        result["scale"] = run_scale(a.cache, device, dry, 4 if dry else a.prompts, 1 if dry else 2, 1, clock,
                                    stop_at_s=20.0 if not dry else 0.0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result["setup"] = {"dry_run": dry, "device_name": torch.cuda.get_device_name() if not dry else "CPU",
                       "command": " ".join(["python", "benchmarks/gpu_check.py", *(argv or sys.argv[1:])]),
                       "commit": commit.stdout.strip() or "unknown", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                           time.gmtime()),
                       "versions": versions(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                       "budget_s": a.budget_s, "seconds": round(time.perf_counter() - clock.start, 1),
                       "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
                       if not dry else None}
    a.out = a.out or (Path(tempfile.mkdtemp(prefix="gpu-check-dry-")) if dry else ROOT / "results" / "gpu")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    (a.out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {a.out / 'gpu_check.json'} and {a.out / 'gpu_check.md'}")
    ok = all(part.get("ok", True) for part in (result.get("tests", {}), result.get("tiny", {})))
    ok = ok and all(row.get("ok") for v in result.get("scale", {}).get("sizes", {}).values()
                    for row in v["contenders"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
