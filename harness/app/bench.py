"""`harness bench`: seconds per iteration (generation / scoring / update) and peak memory of every optimizer, and of
TRL's RLOOTrainer, GRPOTrainer and DPOTrainer on identical work, all in one process (paper Figure 2).

Time: every optimizer runs `warmup` untimed iterations, then `iterations` timed ones on the same preset, prompts per
iteration and generation length; the phases are the backbone's Budget.timings. TRL is timed per optimizer step
(a callback), its generation by wrapping `_generate_single_turn` and its scoring as the rest of
`_generate_and_score_completions`. Our matched run and TRL's alternate for `rounds` rounds (means of the rounds),
so that a drift in the machine's load does not favour either side.
Identical work: both contenders compute in float32 without autocast (TRL's configs default to bf16=True, an
emulated 100x-slower path on AVX2-only CPUs), with the same thread count, and with activation checkpointing off
or on for both (`checkpointing`); every such setting is read back from each contender and stored under
`work_settings` in bench.json. Efficiency (harness/app/efficiency.py, docs/bench.md): tokens/s, MFU and the decode
bandwidth bound per phase, against the matmul peak and bandwidth measured in this process.
Memory: `peak_memory_mb` is the peak of live tensor bytes recorded by torch.profiler (profile_memory) from before a
contender loads its models through its warm-up iterations (the second one has the optimizer state alive): models,
optimizer state, activations, KV caches - the same way for us and for TRL, and independent of what the C allocator
retains, which makes it comparable across contenders run one after another in one process. `peak_rss_mb` is the
resident-set growth over the same start (a thread samples /proc/self/statm every millisecond), for reference.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from algorithms.base import make, names
from harness.app.config import RunConfig
from harness.app.efficiency import PeakRss, PhaseCounter, TensorPeak, efficiency, machine_peaks, our_phases
from harness.core.distributed import Runtime
from harness.core.experience import Budget, encode_queries
from harness.core.models import load_models, load_reward_model, load_tokenizer, lora_config
from harness.core.precision import resolve_precision
from harness.tasks import resolve_paths
from harness.core.store import write_json
from harness.core.examples import Example
from harness.core.train import Trainer, data_order

PHASES = ("generation_s", "scoring_s", "update_s")
MEMORY_METHOD = ("peak_memory_mb: peak of live tensor bytes (torch.profiler memory events, allocations minus frees) "
                 "from before the contender's models are loaded through its warm-up iterations; peak_rss_mb: "
                 "resident-set growth over the same start, sampled every 1 ms (includes what the C allocator "
                 "keeps, noisy when contenders run one after another)")
# TRL comparisons: (our optimizer, its settings for identical work, TRL trainer)
TRL_PAIRS = {"rloo": ("rloo", {"epochs": 1}), "grpo": ("grpo", {}), "dpo": ("dpo", {})}
CHECKPOINTING = {"off": (False,), "on": (True,), "both": (False, True)}
OUR_LOGPROBS = "logits at response positions only (logits_to_keep), then a full log_softmax; not chunked"
TRL_LOGPROBS = "TRL's fused LM head: tiled log-probs without the full logits (always on in TRL's RLOO/GRPO/DPO)"


def _mean(rows: list[dict]) -> dict:
    out = {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in (*PHASES, "total_s")}
    return {k: round(v, 4) for k, v in out.items()}


def _weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def bench_ours(name: str, cfg: RunConfig, data, iterations: int, warmup: int, rss: PeakRss,
               args: dict | None = None, checkpointing: bool = False, peaks: dict | None = None,
               device: str = "cpu") -> dict:
    """One optimizer: fresh models (the SFT policy), `warmup` + `iterations` iterations of the shared Trainer."""
    algo = make(name, args)
    rss.rebase()
    tensors = TensorPeak().start()  # models, warm-up iterations (optimizer state included from the second on)
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=algo.needs_critic,
                         device=device)
    examples = data.pref_train if algo.data == "preference_pairs" else data.sft_train
    budget = Budget()
    trainer = Trainer(cfg, algo, models, examples, budget, runtime=Runtime.single(device))
    if checkpointing:
        for m in (models.policy, models.critic):
            if m is not None:
                m.activation_checkpointing_enable()  # transformers' default: non-reentrant, as TRL's
        trainer.shared_prefix = False  # checkpointed blocks drop the KV cache a shared-prefix forward continues from
    counter = PhaseCounter().watch(models.policy, models.reference, models.reward_model, models.critic)
    rows = []
    with our_phases(counter):
        for i in range(1, warmup + iterations + 1):
            if i == warmup + 1:
                tensors.stop()
                counter.reset()
            start = time.perf_counter()
            trainer.iteration(i)
            total = time.perf_counter() - start
            if i > warmup:
                rows.append({**{f"{k}_s": v for k, v in budget.timings.items()}, "total_s": total})
    counter.close()
    mean = _mean(rows)
    precision = models.precision
    out = {**mean, "peak_memory_mb": round(tensors.stop(), 1), "peak_rss_mb": round(rss.peak_mb(), 1),
           "responses_per_prompt": budget.responses / max(1, budget.prompts),
           "optimizer_steps_per_iteration": budget.optimizer_steps / (warmup + iterations),
           "work_settings": {"compute_dtype": precision.compute_name, "autocast": precision.compute != torch.float32,
                             "frozen_dtype": precision.frozen_name, "activation_checkpointing": checkpointing,
                             "padding_free": False, "shared_prefix_forward": trainer.shared_prefix,
                             "log_probs": OUR_LOGPROBS, "torch_threads": torch.get_num_threads()}}
    if peaks:
        out["efficiency"] = efficiency(counter.counts, mean, peaks, precision.compute_name,
                                       _weight_bytes(models.policy), iterations)
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
    """TrainerCallback timing each optimizer step, and wrappers timing TRL's generation and scoring (and telling the
    token counter which phase runs: outside both wrappers a TRL step is in its update)."""

    def __init__(self, stop_after: int, tensors: TensorPeak, counter: PhaseCounter):
        self.rows: list[dict] = []
        self.current: dict = {}
        self.stop_after, self.tensors, self.counter = stop_after, tensors, counter

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, *a, **k):
                if len(timer.rows) == timer.stop_after:
                    timer.tensors.stop()  # memory over construction and warm-up steps; timed steps unprofiled
                    timer.counter.reset()
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
                with self.counter.during(phase.removesuffix("_s")):
                    return original(*a, **k)
            finally:
                spent = time.perf_counter() - start - ((self.current.get(minus, 0.0) - before) if minus else 0.0)
                self.current[phase] = self.current.get(phase, 0.0) + spent

        setattr(obj, method, timed)


def _trl_work_settings(trainer) -> dict:
    """What TRL actually ran with, read back from the trainer (not from what was asked)."""
    args, model = trainer.args, trainer.model
    forward = getattr(model.forward, "__func__", model.forward)
    fused = getattr(getattr(forward, "__code__", None), "co_name", "") == "_fused_forward"
    return {"compute_dtype": "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32",
            "autocast": trainer.accelerator.mixed_precision != "no", "bf16": args.bf16, "fp16": args.fp16,
            "accelerate_mixed_precision": trainer.accelerator.mixed_precision,
            "activation_checkpointing": bool(getattr(model, "is_activation_checkpointing", False)),
            "activation_checkpointing_kwargs": args.gradient_checkpointing_kwargs,
            "padding_free": bool(getattr(trainer, "padding_free", getattr(args, "padding_free", False))),
            "log_probs": TRL_LOGPROBS if fused else "full logits", "torch_threads": torch.get_num_threads()}


def bench_trl(kind: str, cfg: RunConfig, data, iterations: int, warmup: int, rss: PeakRss, k: int,
              checkpointing: bool = False, peaks: dict | None = None, device: str = "cpu") -> dict:
    """TRL's RLOOTrainer or GRPOTrainer (k samples, one update per batch) or DPOTrainer on the same model,
    tokenizer, prompts, generation length, batch (and micro-batches), learning rate, precision and checkpointing as
    ours: float32 where ours is (the CPU presets), bf16 autocast on fp32 masters where ours autocasts (GPUs), the
    LoRA adapter of the preset with the base at the frozen dtype."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    rss.rebase()
    tensors = TensorPeak().start()
    paths = resolve_paths(cfg.model, log=lambda *a: None)
    tok = load_tokenizer(paths["tokenizer"])
    m = cfg.model
    precision = resolve_precision(m.compute_dtype, m.frozen_dtype, device, m.logprob_dtype)
    policy = AutoModelForCausalLM.from_pretrained(paths["policy"], use_safetensors=True,
                                                  dtype=precision.frozen if m.lora else torch.float32)
    peft = lora_config(m.lora, policy.config.model_type) if m.lora else None
    g, t, P = cfg.generation, cfg.train, cfg.train.prompts_per_iteration
    micro = min(t.micro_batch_prompts or P, P)  # one optimizer step per batch, accumulated over micro-batches as ours
    steps = warmup + iterations
    bf16 = precision.compute == torch.bfloat16
    common = dict(output_dir=tempfile.mkdtemp(prefix=f"harness-bench-trl-{kind}-"), learning_rate=t.lr,
                  adam_epsilon=t.adam_eps,
                  weight_decay=t.weight_decay, lr_scheduler_type="linear", warmup_steps=0, max_steps=steps,
                  report_to="none", logging_steps=10**6, save_strategy="no", disable_tqdm=True,
                  use_cpu=torch.device(device).type == "cpu",
                  disable_dropout=True, seed=cfg.seed, dataloader_num_workers=0, gradient_accumulation_steps=P // micro,
                  # TRL defaults to bf16=True and gradient_checkpointing=True: not the work ours does
                  bf16=bf16, fp16=False, gradient_checkpointing=checkpointing)
    counter = PhaseCounter(default_phase="update")
    timer = _StepTimer(stop_after=warmup, tensors=tensors, counter=counter)
    if kind in ("rloo", "grpo"):
        prompts = _prompt_texts(_ordered(data.sft_train, cfg, P * steps), tok, cfg.task.max_prompt_tokens)
        rm = load_reward_model(paths["reward_model"], tok, precision.frozen)
        online = dict(per_device_train_batch_size=micro * k, num_generations=k, num_iterations=1,
                      max_completion_length=g.max_new_tokens, temperature=g.temperature, top_k=0, top_p=1.0,
                      shuffle_dataset=False,
                      # every sequence runs the full generation length, as in our backbone (PROTOCOL.md)
                      generation_kwargs={"min_new_tokens": g.max_new_tokens})
        if kind == "rloo":
            from trl import RLOOConfig as Config, RLOOTrainer as TrlTrainer

            args = Config(**common, **online, beta=t.kl_coef)
        else:
            from trl import GRPOConfig as Config, GRPOTrainer as TrlTrainer

            ours = make("grpo")  # its defaults, TRL's names: k3 KL in the loss, seq-mean-token-mean, group std
            args = Config(**common, **online, beta=ours.kl_coef, loss_type="grpo", epsilon=ours.eps_low,
                          epsilon_high=ours.eps_high, scale_rewards=ours.scale_rewards, use_bias_correction_kl=False,
                          mask_truncated_completions=False)
        trainer = TrlTrainer(model=policy, reward_funcs=rm, args=args, processing_class=tok, peft_config=peft,
                             reward_processing_classes=tok, train_dataset=Dataset.from_dict({"prompt": prompts}))
        timer.wrap(trainer, "_generate_single_turn", "generation_s")
        timer.wrap(trainer, "_generate_and_score_completions", "scoring_s", minus="generation_s")
        counter.watch(trainer.model, getattr(trainer, "ref_model", None), *trainer.reward_funcs)
    else:
        from trl import DPOConfig, DPOTrainer

        pairs = _ordered(data.pref_train, cfg, P * steps)
        prompts = _prompt_texts(pairs, tok, cfg.task.max_prompt_tokens)
        args = DPOConfig(**common, per_device_train_batch_size=micro, beta=make("dpo").beta, padding_free=False,
                         max_length=cfg.task.max_prompt_tokens + g.max_new_tokens, precompute_ref_log_probs=False)
        ds = Dataset.from_dict({"prompt": prompts, "chosen": [ex.chosen for ex in pairs],
                                "rejected": [ex.rejected for ex in pairs]})
        trainer = DPOTrainer(model=policy, args=args, processing_class=tok, train_dataset=ds, peft_config=peft)
        counter.watch(trainer.model, getattr(trainer, "ref_model", None))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    trainer.add_callback(timer.callback())
    try:
        trainer.train()
    finally:
        shutil.rmtree(common["output_dir"], ignore_errors=True)
        counter.close()
    rows = timer.rows[warmup:]
    mean = _mean(rows)
    out = {**mean, "peak_memory_mb": round(tensors.stop(), 1), "peak_rss_mb": round(rss.peak_mb(), 1),
           "work_settings": _trl_work_settings(trainer)}
    if peaks:
        out["efficiency"] = efficiency(counter.counts, mean, peaks, out["work_settings"]["compute_dtype"],
                                       _weight_bytes(policy), iterations)
    del trainer, policy
    return out


def _combine(runs: list[dict]) -> dict:
    """Alternated rounds of one contender: mean of every number (nested ones too), highest peak memory, the first
    round's value of anything else (settings, identical in every round)."""
    def merge(values: list, key: str = ""):
        first = values[0]
        if isinstance(first, dict):
            return {k: merge([v[k] for v in values], k) for k in first}
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            return max(values) if key == "peak_memory_mb" else round(sum(values) / len(values), 4)
        return first

    return {**merge(runs), "rounds": len(runs)}


def quiet_libraries() -> None:
    """No warnings or progress bars of datasets/transformers/TRL in the bench's terminal."""
    import datasets
    import transformers

    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()  # e.g. "caching is incompatible with gradient checkpointing"


# what an off-policy setting costs (`--off-policy`): GRPO on-policy, then stale and corrected (docs/objective.md)
OFF_POLICY = {"on-policy": {}, "staleness 2": {"staleness": 2},
              "staleness 2 + token_truncate": {"staleness": 2, "rollout_correction": "token_truncate"},
              "staleness 2 + sequence_mask": {"staleness": 2, "rollout_correction": "sequence_mask"}}


def run_bench(cfg: RunConfig, iterations: int, warmup: int, algos: list[str] | None, with_trl: bool,
              out_dir: Path, log=print, rounds: int = 2, checkpointing: str = "off", off_policy: bool = False) -> dict:
    """Every optimizer in `algos` (None: all; [] none), then ours vs TRL for each TRL_PAIRS entry with activation
    checkpointing off / on / both (`checkpointing`), alternating for `rounds` rounds; with `off_policy`, GRPO under
    each OFF_POLICY setting, alternating for `rounds` rounds, with its time ratio to the on-policy run."""
    from harness import tasks

    quiet_libraries()
    _, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset)
    load_models(cfg.model, resolve_paths(cfg.model, log=log))  # builds the preset if needed, outside any measurement
    algos = names() if algos is None else algos
    peaks = machine_peaks(torch.get_num_threads())
    log(f"machine: matmul {peaks['matmul_gflops']} GFLOP/s, copy bandwidth {peaks['memory_bandwidth_gbs']} GB/s "
        f"({peaks['device']})")
    result: dict = {"optimizers": {}, "trl": {}, "ratios": {}}
    with PeakRss() as rss:
        log("warm-up (untimed): one rebel run")
        bench_ours("rebel", cfg, data, 1, 1, rss)
        for name in algos:
            log(f"timing {name}")
            result["optimizers"][name] = bench_ours(name, cfg, data, iterations, warmup, rss, peaks=peaks)
        for ck in CHECKPOINTING[checkpointing] if with_trl else ():
            for trl_name, (ours, args) in TRL_PAIRS.items():
                key = f"{trl_name}+checkpointing" if ck else trl_name
                k = make(ours, args).samples_per_prompt
                log(f"timing {ours} {args} and TRL's {trl_name} trainer on identical work (float32, activation "
                    f"checkpointing {'on' if ck else 'off'}), alternating, {rounds} rounds")
                runs = [(bench_ours(ours, cfg, data, iterations, warmup, rss, args, ck, peaks),
                         bench_trl(trl_name, cfg, data, iterations, warmup, rss, k, ck, peaks))
                        for _ in range(rounds)]
                matched, theirs = (_combine([r[i] for r in runs]) for i in (0, 1))
                result["trl"][key] = theirs
                result["ratios"][key] = {
                    "time": round(matched["total_s"] / theirs["total_s"], 3),
                    "memory": round(matched["peak_memory_mb"] / theirs["peak_memory_mb"], 3),
                    "time_by_round": [round(a["total_s"] / b["total_s"], 3) for a, b in runs],
                    "activation_checkpointing": ck, "ours": {"algorithm": ours, "settings": args, **matched}}
        if off_policy:
            runs: dict[str, list] = {label: [] for label in OFF_POLICY}
            for _ in range(rounds):
                for label, train in OFF_POLICY.items():
                    log(f"timing grpo, {label}")
                    varied = cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})
                    runs[label].append(bench_ours("grpo", varied, data, iterations, warmup, rss, peaks=peaks))
            combined = {label: _combine(r) for label, r in runs.items()}
            base = combined["on-policy"]["total_s"]
            result["off_policy"] = {label: {**c, "settings": OFF_POLICY[label],
                                            "time_ratio": round(c["total_s"] / base, 3)}
                                    for label, c in combined.items()}
    result["machine"] = peaks
    result["setup"] = {
        "preset": cfg.preset, "iterations": iterations, "warmup_iterations": warmup,
        "prompts_per_iteration": cfg.train.prompts_per_iteration, "max_new_tokens": cfg.generation.max_new_tokens,
        "max_prompt_tokens": cfg.task.max_prompt_tokens, "temperature": cfg.generation.temperature,
        "lr": cfg.train.lr, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
        "trl": _version("trl"), "transformers": _version("transformers"), "accelerate": _version("accelerate"),
        "python": platform.python_version(), "cpu": peaks["cpu"],
        "memory_method": MEMORY_METHOD, "time_unit": "seconds per iteration (mean over timed iterations)",
        "trl_rounds": rounds if with_trl else 0, "activation_checkpointing": checkpointing,
        "trl_settings": "RLOO: k samples, num_iterations 1, min_new_tokens = max_new_tokens, beta = kl_coef; "
                        "GRPO: k = 4, num_iterations 1, beta 0.04 (k3 in the loss), loss_type grpo, epsilon 0.2, "
                        "scale_rewards group, use_bias_correction_kl False, mask_truncated_completions False; "
                        "DPO: precompute_ref_log_probs False, padding_free False, same batch of pairs; both: "
                        "bf16 False, fp16 False, gradient_checkpointing as ours, same lr, AdamW eps, weight decay, "
                        "linear decay, dropout off, same torch threads (one process); each contender's "
                        "work_settings are read back from it"}
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
    """The bench figure (evals.plots.bench_figure, the same one `harness report` shows)."""
    from evals.plots import bench_figure

    bench_figure(result, path)


def table(result: dict):
    """The rich table printed by `harness bench`."""
    from rich.table import Table

    s = result["setup"]
    tab = Table(title=f"harness bench: preset {s['preset']}, {s['prompts_per_iteration']} prompts x "
                      f"{s['max_new_tokens']} new tokens, mean of {s['iterations']} iterations after "
                      f"{s['warmup_iterations']} warm-up")
    for col in ("optimizer", "resp/prompt", "generation s", "scoring s", "update s", "total s", "peak MB",
                "decode tok/s", "of BW bound", "update tok/s", "update MFU", "vs TRL time", "vs TRL memory"):
        tab.add_column(col, justify="right" if col != "optimizer" else "left")

    def row(name, v, ratio=None):
        e = v.get("efficiency", {})
        gen, upd = e.get("generation", {}), e.get("update", {})
        tab.add_row(name, f"{v['responses_per_prompt']:g}" if "responses_per_prompt" in v else "",
                    *(f"{v[k]:.3f}" for k in (*PHASES, "total_s")), f"{v['peak_memory_mb']:.0f}",
                    f"{gen['tokens_per_s']:.0f}" if gen else "",
                    f"{100 * gen['fraction_of_bandwidth_bound']:.1f}%" if gen else "",
                    f"{upd['tokens_per_s']:.0f}" if upd else "", f"{100 * upd['mfu']:.1f}%" if upd else "",
                    f"{ratio['time']:.2f}x" if ratio else "", f"{ratio['memory']:.2f}x" if ratio else "")

    for name, v in result["optimizers"].items():
        row(name, v)
    for trl_name, r in result["ratios"].items():
        row(f"{r['ours']['algorithm']} {json.dumps(r['ours']['settings'])}", r["ours"], r)
        row(f"TRL {trl_name}", result["trl"][trl_name])
    for label, v in result.get("off_policy", {}).items():  # the time ratio to on-policy GRPO in the TRL column
        row(f"grpo, {label} ({v['time_ratio']:.2f}x on-policy)", v)
    m = result.get("machine", {})
    tab.caption = (f"machine ({m.get('device')}): matmul {m.get('matmul_gflops')} GFLOP/s, copy bandwidth "
                   f"{m.get('memory_bandwidth_gbs')} GB/s; MFU = 6 N tokens / s / matmul peak of the compute dtype (docs/bench.md); "
                   f"memory: {s['memory_method']}")
    return tab
