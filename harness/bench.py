"""`harness bench`: seconds per iteration (generation / scoring / update) and peak memory of every optimizer, and of
TRL's RLOOTrainer and DPOTrainer on identical work, all in one process (paper Figure 2).

Time: every optimizer runs `warmup` untimed iterations, then `iterations` timed ones on the same preset, prompts per
iteration and generation length; the phases are the backbone's Budget.timings. TRL is timed per optimizer step
(a callback), its generation by wrapping `_generate_single_turn` and its scoring as the rest of
`_generate_and_score_completions`. Our matched run and TRL's alternate for `rounds` rounds (means of the rounds),
so that a drift in the machine's load does not favour either side.
Memory: `peak_memory_mb` is the peak of live tensor bytes recorded by torch.profiler (profile_memory) from before a
contender loads its models through its warm-up iterations (the second one has the optimizer state alive): models,
optimizer state, activations, KV caches - the same way for us and for TRL, and independent of what the C allocator
retains, which makes it comparable across contenders run one after another in one process. `peak_rss_mb` is the
resident-set growth over the same start (a thread samples /proc/self/statm every millisecond), for reference.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from algorithms.base import make, names
from harness.config import RunConfig
from harness.experience import Budget, encode_queries
from harness.models import load_models, load_reward_model, load_tokenizer, resolve_paths
from harness.store import write_json
from harness.tasks.tldr import Example
from harness.train import Trainer, data_order

PHASES = ("generation_s", "scoring_s", "update_s")
MEMORY_METHOD = ("peak_memory_mb: peak of live tensor bytes (torch.profiler memory events, allocations minus frees) "
                 "from before the contender's models are loaded through its warm-up iterations; peak_rss_mb: "
                 "resident-set growth over the same start, sampled every 1 ms (includes what the C allocator "
                 "keeps, noisy when contenders run one after another)")
# TRL comparisons: (our optimizer, its settings for identical work, TRL trainer)
TRL_PAIRS = {"rloo": ("rloo", {"epochs": 1}), "dpo": ("dpo", {})}


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
        self.prof.start()
        self.active = True
        return self

    def stop(self) -> float:
        """Stops (once) and returns the peak in MB above the start."""
        if self.active:
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


def _mean(rows: list[dict]) -> dict:
    out = {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in (*PHASES, "total_s")}
    return {k: round(v, 4) for k, v in out.items()}


def bench_ours(name: str, cfg: RunConfig, data, iterations: int, warmup: int, rss: PeakRss,
               args: dict | None = None) -> dict:
    """One optimizer: fresh models (the SFT policy), `warmup` + `iterations` iterations of the shared Trainer."""
    algo = make(name, args)
    rss.rebase()
    tensors = TensorPeak().start()  # models, warm-up iterations (optimizer state included from the second on)
    models = load_models(cfg.model, needs_critic=algo.needs_critic, log=lambda *a: None)
    examples = data.pref_train if algo.data == "preference_pairs" else data.sft_train
    budget = Budget()
    trainer = Trainer(cfg, algo, models, examples, budget)
    rows = []
    for i in range(1, warmup + iterations + 1):
        if i == warmup + 1:
            tensors.stop()
        start = time.perf_counter()
        trainer.iteration(i)
        total = time.perf_counter() - start
        if i > warmup:
            rows.append({**{f"{k}_s": v for k, v in budget.timings.items()}, "total_s": total})
    out = {**_mean(rows), "peak_memory_mb": round(tensors.stop(), 1), "peak_rss_mb": round(rss.peak_mb(), 1),
           "responses_per_prompt": budget.responses / max(1, budget.prompts),
           "optimizer_steps_per_iteration": budget.optimizer_steps / (warmup + iterations)}
    del trainer, models
    return out


def _prompt_texts(examples: list[Example], tokenizer, max_prompt_tokens: int) -> list[str]:
    """The prompts exactly as our backbone truncates them, as text for TRL (which tokenizes itself)."""
    query = encode_queries(examples, tokenizer, max_prompt_tokens)
    return [tokenizer.decode([t for t in q.tolist() if t != tokenizer.pad_token_id]) for q in query]


def _ordered(examples: list, cfg: RunConfig, n: int) -> list:
    """The first n examples in the Trainer's seeded order (the prompts our optimizers see)."""
    return [examples[i] for i in data_order(len(examples), cfg.seed)[:n]]


class _StepTimer:
    """TrainerCallback timing each optimizer step, and wrappers timing TRL's generation and scoring."""

    def __init__(self, stop_after: int, tensors: TensorPeak):
        self.rows: list[dict] = []
        self.current: dict = {}
        self.stop_after, self.tensors = stop_after, tensors

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, *a, **k):
                if len(timer.rows) == timer.stop_after:
                    timer.tensors.stop()  # memory over construction and warm-up steps; timed steps unprofiled
                timer.current = {"generation_s": 0.0, "scoring_s": 0.0, "start": time.perf_counter()}

            def on_step_end(self, *a, **k):
                row = timer.current
                row["total_s"] = time.perf_counter() - row.pop("start")
                row["update_s"] = row["total_s"] - row["generation_s"] - row["scoring_s"]
                timer.rows.append(row)

        return Callback()

    def wrap(self, obj, method: str, phase: str, minus: str | None = None):
        original = getattr(obj, method)

        def timed(*a, **k):
            before = self.current.get(minus, 0.0) if minus else 0.0
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent = time.perf_counter() - start - ((self.current.get(minus, 0.0) - before) if minus else 0.0)
                self.current[phase] = self.current.get(phase, 0.0) + spent

        setattr(obj, method, timed)


def bench_trl(kind: str, cfg: RunConfig, data, iterations: int, warmup: int, rss: PeakRss, k: int) -> dict:
    """TRL's RLOOTrainer (k samples, one update per batch) or DPOTrainer on the same model, tokenizer, prompts,
    generation length, batch and learning rate as ours."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    rss.rebase()
    tensors = TensorPeak().start()
    paths = resolve_paths(cfg.model, log=lambda *a: None)
    tok = load_tokenizer(paths["tokenizer"])
    policy = AutoModelForCausalLM.from_pretrained(paths["policy"], use_safetensors=True)
    g, t, P = cfg.generation, cfg.train, cfg.train.prompts_per_iteration
    steps = warmup + iterations
    common = dict(output_dir=tempfile.mkdtemp(prefix=f"harness-bench-trl-{kind}-"), learning_rate=t.lr,
                  adam_epsilon=t.adam_eps,
                  weight_decay=t.weight_decay, lr_scheduler_type="linear", warmup_steps=0, max_steps=steps,
                  report_to="none", logging_steps=10**6, save_strategy="no", disable_tqdm=True, use_cpu=True,
                  disable_dropout=True, seed=cfg.seed, dataloader_num_workers=0, gradient_accumulation_steps=1)
    timer = _StepTimer(stop_after=warmup, tensors=tensors)
    if kind == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        prompts = _prompt_texts(_ordered(data.sft_train, cfg, P * steps), tok, cfg.task.max_prompt_tokens)
        rm = load_reward_model(paths["reward_model"], tok)
        args = RLOOConfig(**common, per_device_train_batch_size=P * k, num_generations=k, num_iterations=1,
                          max_completion_length=g.max_new_tokens, temperature=g.temperature, top_k=0, top_p=1.0,
                          beta=t.kl_coef, shuffle_dataset=False,
                          # every sequence runs the full generation length, as in our backbone (PROTOCOL.md)
                          generation_kwargs={"min_new_tokens": g.max_new_tokens})
        trainer = RLOOTrainer(model=policy, reward_funcs=rm, args=args, processing_class=tok,
                              reward_processing_classes=tok, train_dataset=Dataset.from_dict({"prompt": prompts}))
        timer.wrap(trainer, "_generate_single_turn", "generation_s")
        timer.wrap(trainer, "_generate_and_score_completions", "scoring_s", minus="generation_s")
    else:
        from trl import DPOConfig, DPOTrainer

        pairs = _ordered(data.pref_train, cfg, P * steps)
        prompts = _prompt_texts(pairs, tok, cfg.task.max_prompt_tokens)
        args = DPOConfig(**common, per_device_train_batch_size=P, beta=make("dpo").beta,
                         max_length=cfg.task.max_prompt_tokens + g.max_new_tokens, precompute_ref_log_probs=False)
        ds = Dataset.from_dict({"prompt": prompts, "chosen": [ex.chosen for ex in pairs],
                                "rejected": [ex.rejected for ex in pairs]})
        trainer = DPOTrainer(model=policy, args=args, processing_class=tok, train_dataset=ds)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    trainer.add_callback(timer.callback())
    try:
        trainer.train()
    finally:
        shutil.rmtree(common["output_dir"], ignore_errors=True)
    rows = timer.rows[warmup:]
    out = {**_mean(rows), "peak_memory_mb": round(tensors.stop(), 1), "peak_rss_mb": round(rss.peak_mb(), 1)}
    del trainer, policy
    return out


def _combine(runs: list[dict]) -> dict:
    """Alternated rounds of one contender: mean seconds, highest peak memory."""
    out = {k: (round(sum(r[k] for r in runs) / len(runs), 4) if k != "peak_memory_mb" else max(r[k] for r in runs))
           for k in runs[0]}
    return {**out, "rounds": len(runs)}


def run_bench(cfg: RunConfig, iterations: int, warmup: int, algos: list[str] | None, with_trl: bool,
              out_dir: Path, log=print, rounds: int = 2) -> dict:
    from harness import tasks

    import datasets

    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    _, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset)
    load_models(cfg.model, log=log)  # builds the preset if needed, outside any measurement
    algos = algos or names()
    result: dict = {"optimizers": {}, "trl": {}, "ratios": {}}
    with PeakRss() as rss:
        log("warm-up (untimed): one rebel run")
        bench_ours("rebel", cfg, data, 1, 1, rss)
        for name in algos:
            log(f"timing {name}")
            result["optimizers"][name] = bench_ours(name, cfg, data, iterations, warmup, rss)
        if with_trl:
            for trl_name, (ours, args) in TRL_PAIRS.items():
                k = make(ours, args).samples_per_prompt
                log(f"timing {ours} {args} and TRL's {trl_name} trainer on identical work, alternating, "
                    f"{rounds} rounds")
                runs = [(bench_ours(ours, cfg, data, iterations, warmup, rss, args),
                         bench_trl(trl_name, cfg, data, iterations, warmup, rss, k))
                        for _ in range(rounds)]
                matched, theirs = (_combine([r[i] for r in runs]) for i in (0, 1))
                result["trl"][trl_name] = theirs
                result["ratios"][trl_name] = {
                    "time": round(matched["total_s"] / theirs["total_s"], 3),
                    "memory": round(matched["peak_memory_mb"] / theirs["peak_memory_mb"], 3),
                    "ours": {"algorithm": ours, "settings": args, **matched}}
    result["setup"] = {
        "preset": cfg.preset, "iterations": iterations, "warmup_iterations": warmup,
        "prompts_per_iteration": cfg.train.prompts_per_iteration, "max_new_tokens": cfg.generation.max_new_tokens,
        "max_prompt_tokens": cfg.task.max_prompt_tokens, "temperature": cfg.generation.temperature,
        "lr": cfg.train.lr, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
        "trl": _version("trl"), "transformers": _version("transformers"), "python": platform.python_version(),
        "memory_method": MEMORY_METHOD, "time_unit": "seconds per iteration (mean over timed iterations)",
        "trl_rounds": rounds if with_trl else 0,
        "trl_settings": "RLOO: k samples, num_iterations 1, min_new_tokens = max_new_tokens, beta = kl_coef; "
                        "DPO: precompute_ref_log_probs False, same batch of pairs; both: same lr, AdamW eps, "
                        "weight decay, linear decay, dropout off"}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "bench.json", result)
    plot(result, out_dir / "bench.png")
    return result


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return None


def plot(result: dict, path: Path) -> None:
    """Stacked seconds per iteration (generation / scoring / update) and peak memory; TRL hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [(n, v, False) for n, v in result["optimizers"].items()]
    entries += [(f"{r['ours']['algorithm']} (as TRL)", r["ours"], False) for r in result["ratios"].values()]
    entries += [(f"TRL {n}", v, True) for n, v in result["trl"].items()]
    labels = [n for n, _, _ in entries]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    bottom = [0.0] * len(entries)
    for phase, colour in zip(PHASES, ("C0", "C1", "C2")):
        vals = [v.get(phase, 0.0) for _, v, _ in entries]
        ax1.bar(labels, vals, bottom=bottom, color=colour, label=phase[:-2],
                hatch=["//" if t else "" for _, _, t in entries])
        bottom = [b + x for b, x in zip(bottom, vals)]
    ax1.set(ylabel="seconds per iteration", title=f"Runtime ({result.get('setup', {}).get('preset', '')})")
    ax1.legend(fontsize=8)
    ax2.bar(labels, [v["peak_memory_mb"] for _, v, _ in entries], color="C3",
            hatch=["//" if t else "" for _, _, t in entries])
    ax2.set(ylabel="peak live tensor memory (MB)", title="Peak memory (model load + warm-up)")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict):
    """The rich table printed by `harness bench`."""
    from rich.table import Table

    s = result["setup"]
    tab = Table(title=f"harness bench: preset {s['preset']}, {s['prompts_per_iteration']} prompts x "
                      f"{s['max_new_tokens']} new tokens, mean of {s['iterations']} iterations after "
                      f"{s['warmup_iterations']} warm-up")
    for col in ("optimizer", "resp/prompt", "generation s", "scoring s", "update s", "total s", "peak MB",
                "vs TRL time", "vs TRL memory"):
        tab.add_column(col, justify="right" if col != "optimizer" else "left")

    def row(name, v, ratio=None):
        tab.add_row(name, f"{v['responses_per_prompt']:g}" if "responses_per_prompt" in v else "",
                    *(f"{v[k]:.3f}" for k in (*PHASES, "total_s")), f"{v['peak_memory_mb']:.0f}",
                    f"{ratio['time']:.2f}x" if ratio else "", f"{ratio['memory']:.2f}x" if ratio else "")

    for name, v in result["optimizers"].items():
        row(name, v)
    for trl_name, r in result["ratios"].items():
        row(f"{r['ours']['algorithm']} {json.dumps(r['ours']['settings'])}", r["ours"], r)
        row(f"TRL {trl_name}", result["trl"][trl_name])
    tab.caption = f"memory: {s['memory_method']}"
    return tab
