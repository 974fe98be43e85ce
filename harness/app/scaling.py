"""`harness bench --scaling sizes|prompts`: how seconds and peak memory per iteration grow with the model size and
with the prompts per iteration, ours and TRL's side by side (issue 16, part 3; docs/bench.md "How cost grows").

Every point runs the contenders of `harness bench` (bench_ours, bench_trl: identical work, float32 without autocast,
the same threads, alternated for `rounds` rounds). An optimizer with a TRL counterpart (TRL_PAIRS: rloo, dpo) runs on
the TRL-matched settings beside TRL's trainer; any other runs alone.

Sizes: `tiny` is the preset's own built models (trained, cached). Every larger size is a recipe built the same way as
the preset (harness.tasks.tiny.new_policy: GPT-NeoX, the preset's tokenizer, its head size, a 4x MLP) with a larger
hidden size and/or more layers, randomly initialised and never trained, and a reward model of the same architecture
with a scalar head, random too: the arithmetic of an iteration does not depend on the weights' values (generation
always runs the full max_new_tokens). The output says which points have random weights.

Where the cost stops being overhead: per contender, the slope of log seconds against log parameters (or prompts) -
near 0 the cost is a fixed overhead, near 1 it is proportional to the work - the local slope between neighbouring
points, a fit of seconds = fixed + per-unit x size whose crossover (fixed = per-unit x size) names the size where the
proportional part takes over, and the share of the measured time that the model FLOPs would take at the matmul peak
measured in the process (harness/app/efficiency.py: 2N (forward) or 6N (forward + backward) FLOPs per token).
"""
from __future__ import annotations

import datetime as dt
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from algorithms.base import make
from harness.app.bench import (PHASES, TRL_PAIRS, _combine, _version, bench_ours, bench_trl, quiet_libraries)
from harness.app.config import RunConfig
from harness.app.efficiency import PeakRss, machine_peaks, matmul_parameters
from harness.core.errors import UserError
from harness.core.models import load_tokenizer
from harness.core.store import read_json, write_json

PRESET_SIZE = "tiny"  # the preset's own trained models
NAMED_SIZES = {"5m": (256, 6), "20m": (512, 6)}  # (hidden size, layers): ~5M and ~20M parameters with the tiny vocab
MODES = ("sizes", "prompts")
DEFAULT_SIZES = "tiny,5m,20m"
DEFAULT_PROMPT_COUNTS = "8,16,32,64"
DEFAULT_ALGOS = ("rebel", "rloo", "dpo")
FILES = ("bench_scaling.json", "bench_scaling.md", "bench_scaling.png")
WEIGHTS_NOTE = ("tiny: the preset's trained models; every other size: the same recipe (GPT-NeoX, the preset's "
                "tokenizer and head size, 4x MLP) with a larger hidden size / more layers, randomly initialised, never "
                "trained (an iteration's arithmetic does not depend on the weights; generation runs the full length), "
                "its reward model the same architecture with a random scalar head")


@dataclass(frozen=True)
class Size:
    label: str
    hidden_size: int | None = None  # None: the preset's own models
    layers: int | None = None


def head_size(cfg: RunConfig) -> int:
    """The preset's attention head size, kept at every size: a larger recipe has more heads, not wider ones."""
    return cfg.model.tiny.hidden_size // cfg.model.tiny.heads


def parse_sizes(text: str, cfg: RunConfig) -> list[Size]:
    """'tiny,5m,20m' or HIDDENxLAYERS items ('384x8'); the hidden size must be a multiple of the preset's head size."""
    head = head_size(cfg)
    sizes = []
    for item in (s.strip().lower() for s in text.split(",") if s.strip()):
        if item == PRESET_SIZE:
            sizes.append(Size(item))
            continue
        custom = re.fullmatch(r"(\d+)x(\d+)", item)
        if item not in NAMED_SIZES and not custom:
            raise UserError(f"unknown size {item!r} in --sizes; valid: {PRESET_SIZE}, {', '.join(NAMED_SIZES)} or "
                            f"HIDDENxLAYERS (e.g. 384x8)")
        hidden, layers = NAMED_SIZES[item] if item in NAMED_SIZES else (int(custom[1]), int(custom[2]))
        if hidden < head or hidden % head or layers < 1:
            raise UserError(f"size {item!r}: the hidden size must be a positive multiple of the preset's head size "
                            f"{head} and layers at least 1")
        sizes.append(Size(item, hidden, layers))
    if not sizes or len({s.label for s in sizes}) < len(sizes):
        raise UserError(f"--sizes needs distinct comma-separated sizes, got {text!r}")
    return sizes


def parse_counts(text: str) -> list[int]:
    """'8,16,32,64' -> [8, 16, 32, 64]: distinct positive prompt counts."""
    try:
        counts = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--prompt-counts expects comma-separated whole numbers, got {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) < len(counts):
        raise UserError(f"--prompt-counts needs distinct positive numbers, got {text!r}")
    return sorted(counts)


def random_models(cfg: RunConfig, size: Size, tokenizer_dir: str, out: Path) -> dict[str, str]:
    """A policy and a reward model of the preset's recipe at `size`, randomly initialised (seeded), saved as
    safetensors under `out`; returns the model settings that point at them."""
    from transformers import GPTNeoXForSequenceClassification

    from harness.tasks.tiny import new_policy

    recipe = cfg.model.tiny.model_copy(update={"hidden_size": size.hidden_size, "layers": size.layers,
                                               "heads": size.hidden_size // head_size(cfg)})
    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(cfg.seed)
    policy = new_policy(recipe, tokenizer)
    rm_config = policy.config.__class__.from_dict({**policy.config.to_dict(), "num_labels": 1})
    reward_model = GPTNeoXForSequenceClassification(rm_config)
    for name, model in (("policy", policy), ("reward", reward_model)):
        model.save_pretrained(out / name, safe_serialization=True)
        tokenizer.save_pretrained(out / name)
    return {"policy": str(out / "policy"), "reward_model": str(out / "reward"), "tokenizer": str(out / "policy")}


def _point_config(cfg: RunConfig, models: dict[str, str] | None, prompts: int) -> RunConfig:
    point = cfg.model_copy(deep=True)
    for key, value in (models or {}).items():
        setattr(point.model, key, value)
    point.train.prompts_per_iteration = prompts
    return point


def _parameters(policy_dir: str) -> tuple[int, int]:
    """(all parameters, the FLOP count's N: without the input embedding) of the policy at `policy_dir`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy_dir, use_safetensors=True)
    return sum(p.numel() for p in model.parameters()), matmul_parameters(model)


def arithmetic(entry: dict) -> dict:
    """Model FLOPs and tokens per iteration over all phases, the seconds they would take at the measured matmul peak,
    and that as a share of the measured seconds (the whole iteration's MFU)."""
    e = entry.get("efficiency") or {}
    phases = [p for p in ("generation", "scoring", "update") if p in e]
    gflop = sum(e[p]["model_gflops"] * entry[f"{p}_s"] for p in phases)
    at_peak = gflop / e["peak_gflops"] if e.get("peak_gflops") else float("nan")
    return {"model_gflop": round(gflop, 3), "tokens": sum(e[p]["tokens"] for p in phases),
            "seconds_at_matmul_peak": round(at_peak, 4), "arithmetic_share": round(at_peak / entry["total_s"], 4)}


def fixed_plus_linear(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = fixed + per_unit * x with both terms non-negative."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    per_unit, fixed = np.polyfit(x, y, 1) if len(set(xs)) > 1 else (0.0, float(y.mean()))
    if fixed < 0:
        fixed, per_unit = 0.0, float(x @ y / (x @ x))
    if per_unit * x.max() <= 1e-9 * abs(y).max():  # falling or flat (up to rounding): all fixed
        fixed, per_unit = float(y.mean()), 0.0
    return float(fixed), float(per_unit)


def fit(xs: list[float], seconds: list[float], memory: list[float]) -> dict:
    """Log-log slopes (overall least squares and between neighbours) and the fixed + per-unit split of seconds."""
    lx = np.log(np.asarray(xs, float))
    slope = lambda ys: float(np.polyfit(lx, np.log(np.asarray(ys, float)), 1)[0])
    fixed, per_unit = fixed_plus_linear(xs, seconds)
    return {"seconds_slope": round(slope(seconds), 3), "memory_slope": round(slope(memory), 3),
            "local_seconds_slopes": [round(math.log(b / a) / math.log(xb / xa), 3) if xb != xa else None
                                     for (xa, a), (xb, b) in zip(zip(xs, seconds), zip(xs[1:], seconds[1:]))],
            "fixed_s": round(fixed, 4), "per_unit_s": per_unit,
            "crossover": round(fixed / per_unit, 1) if per_unit > 0 else None}


def _human(x: float) -> str:
    """Parameters as 0.97M / 28.2k, prompt counts as they are."""
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:g}"


def verdict(name: str, unit: str, xs: list[float], f: dict, shares: list[float]) -> str:
    """One plain sentence: how seconds grow, where the proportional part overtakes the fixed one, how much of the
    time the arithmetic at peak would take."""
    local = ", ".join(f"{_human(a)}->{_human(b)}: {s:.2f}" for a, b, s in zip(xs, xs[1:], f["local_seconds_slopes"])
                      if s is not None)
    lo, hi = xs[0], xs[-1]
    where = f["crossover"]
    if where is None:
        turn = f"the cost does not grow with {unit} here: all fixed overhead"
    elif where < lo:
        turn = (f"the cost grows with the work from the smallest point on: the {unit}-proportional part of the "
                f"fixed + linear fit already exceeds its fixed {f['fixed_s']:.2f} s at {_human(lo)} (crossover "
                f"{_human(where)})")
    elif where <= hi:
        turn = (f"the cost stops being overhead near {_human(where)} {unit}, where the {unit}-proportional part of "
                f"the fixed + linear fit overtakes its fixed {f['fixed_s']:.2f} s")
    else:
        turn = (f"still mostly fixed overhead at {_human(hi)} {unit}; the fixed + linear fit puts the crossover at "
                f"{_human(where)} (extrapolated)")
    return (f"{name}: seconds per iteration grow as {unit}^{f['seconds_slope']:.2f} from {_human(lo)} to {_human(hi)} "
            f"(between neighbours: {local}); {turn}; the model FLOPs at the measured matmul peak would take "
            f"{shares[0]:.0%} of the measured time at {_human(lo)} and {shares[-1]:.0%} at {_human(hi)}.")


def _contenders(cfg: RunConfig, data, algos: list[str], with_trl: bool, iterations: int, warmup: int, rounds: int,
                checkpointing: bool, rss: PeakRss, peaks: dict, measure) -> dict:
    """One point: every optimizer in `algos`, each with a TRL counterpart beside its TRL-matched settings.
    `measure(what, thunk)` runs one contender (and shows it on the progress bar)."""
    out = {}
    for name in algos:
        if not (with_trl and name in TRL_PAIRS):
            out[name] = measure(name, lambda: bench_ours(name, cfg, data, iterations, warmup, rss, None,
                                                         checkpointing, peaks))
            continue
        ours, args = TRL_PAIRS[name]
        k = make(ours, args).samples_per_prompt
        runs = []
        for r in range(rounds):  # alternated, so that a drift in the machine's load favours neither side
            mine = measure(f"{ours} (TRL-matched), round {r + 1}/{rounds}",
                           lambda: bench_ours(ours, cfg, data, iterations, warmup, rss, args, checkpointing, peaks))
            theirs = measure(f"TRL {name}, round {r + 1}/{rounds}",
                             lambda: bench_trl(name, cfg, data, iterations, warmup, rss, k, checkpointing, peaks))
            runs.append((mine, theirs))
        out[name] = {**_combine([a for a, _ in runs]), "settings": args, "trl_matched": True}
        out[f"TRL {name}"] = _combine([b for _, b in runs])
    for entry in out.values():
        entry["arithmetic"] = arithmetic(entry)
    return out


def _runs_per_point(algos: list[str], with_trl: bool, rounds: int) -> int:
    return sum(2 * rounds if with_trl and a in TRL_PAIRS else 1 for a in algos)


def run_scaling(cfg: RunConfig, mode: str, sizes: list[Size], prompt_counts: list[int], algos: list[str],
                with_trl: bool, iterations: int, warmup: int, rounds: int, checkpointing: bool, out_dir: Path,
                log=print, console=None) -> dict:
    """Measure one mode ('sizes': every size at the preset's prompts per iteration; 'prompts': every prompt count at
    the first size) and write its section of bench_scaling.json (the other mode's section is kept), the markdown
    table and the log-log figure. Returns the whole file's content."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness import tasks
    from harness.tasks import resolve_paths

    if mode not in MODES:
        raise UserError(f"--scaling must be one of {', '.join(MODES)}, got {mode!r}")
    if cfg.model.policy != "builtin:tiny":
        raise UserError(f"--scaling builds its sizes on the tiny recipe: use a preset on builtin:tiny (tiny, "
                        f"tiny-test), not one on {cfg.model.policy!r}")
    quiet_libraries()
    _, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset)
    preset_paths = resolve_paths(cfg.model, log=log)  # builds the preset if needed, outside any measurement
    peaks = machine_peaks(torch.get_num_threads())
    log(f"machine: matmul {peaks['matmul_gflops']} GFLOP/s, copy bandwidth {peaks['memory_bandwidth_gbs']} GB/s "
        f"({peaks['device']})")
    grid = ([(s, cfg.train.prompts_per_iteration) for s in sizes] if mode == "sizes"
            else [(sizes[0], p) for p in prompt_counts])
    points, built = [], {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True)
    with tempfile.TemporaryDirectory(prefix="harness-scaling-") as tmp, PeakRss() as rss, progress:
        bar = progress.add_task("scaling", total=1 + len(grid) * _runs_per_point(algos, with_trl, rounds))
        for size, prompts in grid:
            label = f"{size.label}, {prompts} prompts"

            def measure(what: str, thunk, label=label):
                progress.update(bar, description=f"{label}: {what}")
                try:
                    return thunk()
                finally:
                    progress.advance(bar)

            if size.label not in built:
                progress.update(bar, description=f"{size.label}: saving random {size.hidden_size}x{size.layers} "
                                                 f"models" if size.hidden_size else f"{size.label}: the preset's")
                built[size.label] = (random_models(cfg, size, preset_paths["tokenizer"], Path(tmp) / size.label)
                                     if size.hidden_size else None)
            point_cfg = _point_config(cfg, built[size.label], prompts)
            if not points:  # the process's first calls (lazy initialisation) are no point's cost
                first = TRL_PAIRS[algos[0]][0] if algos[0] in TRL_PAIRS else algos[0]
                measure("warm-up (untimed)", lambda: bench_ours(first, point_cfg, data, 1, 1, rss))
            parameters, matmul_n = _parameters((built[size.label] or preset_paths)["policy"])
            contenders = _contenders(point_cfg, data, algos, with_trl, iterations, warmup, rounds, checkpointing,
                                     rss, peaks, measure)
            points.append({"size": size.label, "parameters": parameters, "matmul_parameters": matmul_n,
                           "hidden_size": size.hidden_size or cfg.model.tiny.hidden_size,
                           "layers": size.layers or cfg.model.tiny.layers,
                           "weights": "random" if size.hidden_size else "trained",
                           "prompts_per_iteration": prompts, "contenders": contenders})
            log(f"{label}: " + ", ".join(f"{n} {v['total_s']:.2f} s" for n, v in contenders.items()))
    section = {"setup": _setup(cfg, mode, algos, with_trl, iterations, warmup, rounds, checkpointing, peaks),
               "points": points, **_fits(points, mode)}
    return write_outputs(out_dir, mode, section)


def run_from_cli(cfg: RunConfig, mode: str, sizes: str | None, prompt_counts: str | None, algos: list[str],
                 with_trl: bool, iterations: int, warmup: int, rounds: int, checkpointing: str, out_dir: Path,
                 console) -> dict:
    """`harness bench --scaling MODE`: check the options (one line each), measure, print the tables, say what was
    written."""
    from rich.console import Console
    from rich.markdown import Markdown

    if mode not in MODES:
        raise UserError(f"--scaling must be one of {', '.join(MODES)}, got {mode!r}")
    if checkpointing == "both":
        raise UserError("--scaling measures one setting: --checkpointing off or on, not both")
    counts = parse_counts(prompt_counts or DEFAULT_PROMPT_COUNTS)
    result = run_scaling(cfg, mode, parse_sizes(sizes or DEFAULT_SIZES, cfg), counts,
                         algos or list(DEFAULT_ALGOS), with_trl, iterations, warmup, rounds, checkpointing == "on",
                         out_dir, log=console.print, console=console)
    Console(width=max(160, Console().width)).print(Markdown(markdown({mode: result[mode]})))
    console.print("wrote " + ", ".join(str(out_dir / f) for f in FILES))
    return result


AXES = {"sizes": ("parameters", "parameters"), "prompts": ("prompts_per_iteration", "prompts")}


def _fits(points: list[dict], mode: str) -> dict:
    """Per contender measured at two or more points: slopes, the fixed + linear split, and its sentence."""
    key, unit = AXES[mode]
    fits, sentences = {}, []
    for name in dict.fromkeys(n for p in points for n in p["contenders"]):
        mine = sorted((p for p in points if name in p["contenders"]), key=lambda p: p[key])
        if len({p[key] for p in mine}) < 2:
            continue
        xs = [float(p[key]) for p in mine]
        entries = [p["contenders"][name] for p in mine]
        f = fit(xs, [e["total_s"] for e in entries], [max(e["peak_memory_mb"], 1e-3) for e in entries])
        fits[name] = f
        sentences.append(verdict(name, unit, xs, f, [e["arithmetic"]["arithmetic_share"] for e in entries]))
    return {"fits": fits, "summary": sentences}


def _setup(cfg: RunConfig, mode: str, algos, with_trl, iterations, warmup, rounds, checkpointing, peaks) -> dict:
    return {"mode": mode, "preset": cfg.preset, "algorithms": algos, "trl": with_trl, "trl_rounds": rounds,
            "iterations": iterations, "warmup_iterations": warmup, "activation_checkpointing": checkpointing,
            "max_new_tokens": cfg.generation.max_new_tokens, "max_prompt_tokens": cfg.task.max_prompt_tokens,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "trl_version": _version("trl"),
            "transformers": _version("transformers"), "machine": peaks, "weights": WEIGHTS_NOTE,
            "measured": dt.datetime.now().isoformat(timespec="seconds"),
            "time_unit": "seconds per iteration (mean over timed iterations; TRL: per optimizer step)",
            "memory": "peak_memory_mb: peak live tensor bytes over model loading and warm-up (harness bench)"}


def write_outputs(out_dir: Path, mode: str, section: dict) -> dict:
    """bench_scaling.json with this mode's section replaced (a readable other section kept), its markdown and figure."""
    from evals.plots import scaling_figure

    path = out_dir / FILES[0]
    try:
        result = read_json(path) if path.is_file() else {}
    except ValueError:
        result = {}  # an unreadable file is replaced
    result = {m: result[m] for m in MODES if isinstance(result, dict) and isinstance(result.get(m), dict)}
    result[mode] = section
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    (out_dir / FILES[1]).write_text(markdown(result), encoding="utf-8")
    scaling_figure(result, out_dir / FILES[2])
    return result


def markdown(result: dict) -> str:
    """Tables (one row per point and contender) and the fitted slopes with their sentences, per mode."""
    lines = ["# harness bench --scaling", ""]
    for mode in MODES:
        if mode not in result:
            continue
        sec = result[mode]
        s, m = sec["setup"], sec["setup"]["machine"]
        lines += [f"## Cost vs {AXES[mode][1]}", "",
                  f"Preset {s['preset']}, {s['max_new_tokens']} new tokens, mean of {s['iterations']} iterations "
                  f"after {s['warmup_iterations']} warm-up, {s['torch_threads']} threads, measured {s['measured']} "
                  f"on {m.get('cpu')} (matmul peak {m['matmul_gflops'].get('float32')} GFLOP/s float32). "
                  f"Weights: {s['weights']}.", "",
                  "| size | parameters | prompts | contender | generation s | scoring s | update s | total s | "
                  "peak MB | tokens | GFLOP | at matmul peak |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in sec["points"]:
            for name, v in p["contenders"].items():
                a = v["arithmetic"]
                lines.append(f"| {p['size']} ({p['weights']}) | {_human(p['parameters'])} | "
                             f"{p['prompts_per_iteration']} | {name} | "
                             + " | ".join(f"{v[k]:.3f}" for k in (*PHASES, "total_s"))
                             + f" | {v['peak_memory_mb']:.0f} | {a['tokens']:.0f} | {a['model_gflop']:.1f} | "
                             f"{a['arithmetic_share']:.0%} |")
        lines += ["", "| contender | seconds slope | local slopes | memory slope | fixed s | crossover |",
                  "|---|---|---|---|---|---|"]
        for name, f in sec["fits"].items():
            cross = "none" if f["crossover"] is None else _human(f["crossover"])
            local = ", ".join("same size" if x is None else f"{x:.2f}" for x in f["local_seconds_slopes"])
            lines.append(f"| {name} | {f['seconds_slope']:.2f} | {local} | {f['memory_slope']:.2f} | "
                         f"{f['fixed_s']:.3f} | {cross} |")
        lines += ["", *(f"- {sentence}" for sentence in sec["summary"]), ""]
    lines += ["Slopes: least squares of log seconds (or log peak MB) on log parameters (or prompts); 0 = fixed "
              "overhead, 1 = proportional to the work. Crossover: where the fitted seconds = fixed + per-unit x size "
              "have equal parts. At matmul peak: the model FLOPs (2N per token forward, 6N forward + backward, "
              "N without the input embedding) at the fp32 matmul peak measured in the process, as a share of the "
              "measured seconds (docs/bench.md).", ""]
    return "\n".join(lines)
