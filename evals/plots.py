"""Figures of `harness report` (matplotlib Agg, PNG), each from run files only.

Every function returns a `Figure`: the PNG it wrote with a caption, or no file and a note saying which data was
absent, so the report can list skipped figures instead of failing. Colours are fixed per row label so one
algorithm looks the same in every figure.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from evals import stats  # noqa: E402
from evals.runs import Run  # noqa: E402


@dataclass
class Figure:
    name: str
    path: Path | None
    caption: str


def _colours(labels: list[str]) -> dict[str, tuple]:
    """One distinct colour per label: tab10 up to 10 labels, else tab20's dark shades first, then its light ones
    (tab10 alone would give two optimizers of a 12-row table the same colour)."""
    names = sorted(set(labels))
    if len(names) <= 10:
        cmap = plt.get_cmap("tab10")
        return {lab: cmap(i) for i, lab in enumerate(names)}
    cmap, order = plt.get_cmap("tab20"), [*range(0, 20, 2), *range(1, 20, 2)]
    return {lab: cmap(order[i % 20]) for i, lab in enumerate(names)}


def _by_row(runs: list[Run], labels: dict) -> dict[tuple[str, str], list[Run]]:
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.preset, labels[r.row_key]), []).append(r)
    return dict(sorted(out.items()))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(run: Run, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in logging order: a trajectory (the frontier) must not be re-sorted by its x."""
    pts = [(m[x], m[y]) for m in run.metrics if _num(m.get(x)) and _num(m.get(y))]
    a = np.array(pts, dtype=float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def _curve(run: Run, counter: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """A learning curve: increasing counter, the last value logged at a repeated counter (the runner logs the
    final evaluation as an extra line at the last iteration's counters)."""
    x, v = _series(run, counter, y)
    last = {cx: cv for cx, cv in zip(x, v)}
    xs = np.array(sorted(last), dtype=float)
    return xs, np.array([last[c] for c in xs], dtype=float)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def frontier(runs: list[Run], labels: dict, path: Path) -> Figure:
    """Reward vs KL over training (paper Figure 5): a thin line per seed, its final point, the mean of the final
    points and their 2-sigma ellipse across seeds. Held-out eval/* columns when every run logged them."""
    use_eval = all(len(_series(r, "eval/kl", "eval/rm_score")[0]) for r in runs)
    kx, ky = ("eval/kl", "eval/rm_score") if use_eval else ("kl", "score")
    rows = {k: v for k, v in _by_row(runs, labels).items() if any(len(_series(r, kx, ky)[0]) for r in v)}
    if not rows:
        return Figure("frontier", None, "Reward-vs-KL frontier skipped: no run logged kl and score.")
    presets = sorted({p for p, _ in rows})
    colours = _colours([lab for _, lab in rows])
    fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 4.2), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        for (p, lab), members in rows.items():
            if p != preset:
                continue
            finals = []
            for r in members:
                x, y = _series(r, kx, ky)
                if len(x):
                    ax.plot(x, y, color=colours[lab], alpha=0.35, lw=1)
                    finals.append((x[-1], y[-1]))
            f = np.array(finals)
            ax.scatter(f[:, 0], f[:, 1], color=colours[lab], s=12)
            ax.scatter(*f.mean(axis=0), color=colours[lab], s=60, marker="D", edgecolor="black", label=lab)
            ell = stats.ellipse(f, 2.0)
            if ell is not None:
                c, w, h, ang = ell
                ax.add_patch(Ellipse(c, w, h, angle=ang, fc=colours[lab], alpha=0.15, ec=colours[lab]))
        ax.set(xlabel=f"KL(π‖π_ref) [{kx}]", ylabel=f"RM score [{ky}]", title=preset)
        ax.legend(fontsize=8)
    src = "held-out periodic evaluation (eval/kl, eval/rm_score)" if use_eval else "training rollouts (kl, score)"
    return Figure("frontier", _save(fig, path),
                  f"Reward vs KL over training from {src}; lines: one per seed; diamonds: mean of the final points; "
                  f"shaded: 2-sigma ellipse of the final points across seeds (drawn with at least 3 seeds).")


def learning_curves(runs: list[Run], labels: dict, counter: str, level: float, path: Path) -> Figure:
    """RM score and win rate against a budget counter, mean and Student-t CI band across seeds; seeds are
    interpolated onto the x range that all of them reached, so the band never extrapolates a seed."""
    panels = [("RM score", "eval/rm_score", 1.0), ("Win rate (%)", "eval/win_rate", 100.0)]
    if not any(len(_curve(r, counter, "eval/rm_score")[0]) for r in runs):
        panels[0] = ("RM score (training rollouts)", "score", 1.0)
    rows = _by_row(runs, labels)
    presets = sorted({p for p, _ in rows})
    colours = _colours([lab for _, lab in rows])
    fig, axes = plt.subplots(len(presets), 2, figsize=(11, 3.8 * len(presets)), squeeze=False)
    drawn = 0
    for i, preset in enumerate(presets):
        for j, (title, col, scale) in enumerate(panels):
            ax = axes[i][j]
            drawn += _mean_bands(ax, rows, preset, lambda r: _curve(r, counter, col), scale, level, colours)
            ax.set(xlabel=counter, ylabel=title, title=f"{preset}: {title}")
            if ax.lines:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, f"no {col} logged", ha="center", transform=ax.transAxes)
    if not drawn:
        plt.close(fig)
        return Figure("learning_curves", None, f"Learning curves skipped: no run logged {counter} with eval columns.")
    return Figure("learning_curves", _save(fig, path),
                  f"Learning curves against {counter}: mean across seeds with a {level:.0%} Student-t band "
                  f"(seeds interpolated onto the range all of them reached).")


def _mean_bands(ax, rows: dict, preset: str, series_of, scale: float, level: float, colours: dict,
                marks: bool = False) -> int:
    """Per row of `preset`: its seeds' curves (series_of(run) -> (x, y)) interpolated onto the x range all of them
    reached, their mean and Student-t band; `marks` also dots every seed's measured points. Returns rows drawn."""
    drawn = 0
    for (p, lab), members in rows.items():
        series = [s for s in (series_of(r) for r in members) if len(s[0]) >= 2]
        if p != preset or not series:
            continue
        lo, hi = max(s[0][0] for s in series), min(s[0][-1] for s in series)
        if hi <= lo:
            continue
        grid = np.linspace(lo, hi, 60)
        curves = np.array([np.interp(grid, x, y * scale) for x, y in series])
        mean, band_lo, band_hi = stats.t_band(curves, level)
        ax.plot(grid, mean, color=colours[lab], label=f"{lab} (n={len(series)})")
        ax.fill_between(grid, band_lo, band_hi, color=colours[lab], alpha=0.2)
        for x, y in series if marks else ():
            ax.scatter(x, y * scale, color=colours[lab], s=10, alpha=0.6)
        drawn += 1
    return drawn


def _pass_at_1_curve(run: Run, counter: str) -> tuple[np.ndarray, np.ndarray]:
    """The SFT policy's pass@1 at counter 0 (summary `sft`: the policy before the first update, same problems),
    then every logged eval/pass@1 (periodic, eval.every, and the final line)."""
    x, y = _curve(run, counter, "eval/pass@1")
    sft = (run.summary.get("sft") or {}).get("pass@1")
    if _num(sft) and not (len(x) and x[0] <= 0):
        x, y = np.concatenate([[0.0], x]), np.concatenate([[float(sft)], y])
    return x, y


def pass_at_1_curves(runs: list[Run], labels: dict, counter: str, level: float, path: Path) -> Figure:
    """Held-out pass@1 against a budget counter, one panel per preset: mean and Student-t band across seeds,
    every seed's evaluations dotted; runs that logged pass@1 only at the end are named in the caption."""
    rows = _by_row(runs, labels)
    presets = sorted({p for p, _ in rows})
    colours = _colours([lab for _, lab in rows])
    fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 4.2), squeeze=False)
    drawn = 0
    for ax, preset in zip(axes[0], presets):
        drawn += _mean_bands(ax, rows, preset, lambda r: _pass_at_1_curve(r, counter), 100.0, level, colours, True)
        ax.set(xlabel=counter, ylabel="pass@1 (%)", title=f"{preset}: held-out pass@1")
        if ax.lines:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return Figure("pass_at_1_curves", None, f"pass@1 curves skipped: no run logged {counter} with eval/pass@1 "
                                                f"(and an SFT pass@1 in its summary).")
    caption = (f"Held-out pass@1 against {counter}: the SFT policy at 0, then every evaluation the run logged "
               f"(eval/pass@1 every eval.every iterations, and the final one); mean across seeds with a {level:.0%} "
               f"Student-t band (seeds interpolated onto the range all of them reached); dots: the evaluations.")
    final_only = [r.run_id for r in runs
                  if not any(_num(m.get("eval/pass@1")) and not m.get("final") for m in r.metrics)]
    if final_only:
        caption += (f" {len(final_only)} of {len(runs)} runs logged pass@1 only at the end (eval.every = 0 or "
                    f"beyond the last iteration: {', '.join(final_only[:6])}{' ...' if len(final_only) > 6 else ''}): "
                    f"their lines are straight from the SFT point to the final evaluation, not a measured trajectory.")
    return Figure("pass_at_1_curves", _save(fig, path), caption)


def bench(bench_file: Path | None, path: Path) -> Figure:
    """Runtime split (generation, scoring, update) and peak memory per optimizer (paper Figure 2), from a bench.json."""
    if bench_file is None or not Path(bench_file).is_file():
        return Figure("bench", None, "Runtime and memory plot skipped: no bench/bench.json (run `harness bench` "
                                     "or pass --bench FILE).")
    try:
        data = json.loads(Path(bench_file).read_text(encoding="utf-8"))
        bench_figure(data, path)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        return Figure("bench", None, f"Runtime and memory plot skipped: {bench_file} unreadable ({e}).")
    return Figure("bench", path, f"Runtime (stacked: generation, scoring, update; bar: total) and peak "
                                 f"memory per optimizer from {bench_file}; hatched: TRL.")


def bench_figure(data: dict, path: Path) -> Path:
    """The one bench figure (`harness bench` and `harness report`): ours, ours on the TRL-matched settings, TRL
    (hatched); seconds per iteration stacked by phase with the total marked, and peak memory."""
    entries = [(n, v, False) for n, v in sorted(data["optimizers"].items())]
    entries += [(f"{r['ours']['algorithm']} (as TRL {n})", r["ours"], False)
                for n, r in sorted((data.get("ratios") or {}).items()) if isinstance(r, dict) and "ours" in r]
    trl = data.get("trl") or {}
    if isinstance(trl, dict) and trl and all(isinstance(v, dict) for v in trl.values()):
        entries += [(f"TRL {n}", v, True) for n, v in sorted(trl.items())]
    elif isinstance(trl, dict) and trl:
        entries.append(("TRL", trl, True))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [n for n, _, _ in entries]
    bottom = np.zeros(len(entries))
    for part, colour in (("generation_s", "C0"), ("scoring_s", "C1"), ("update_s", "C2")):
        vals = np.array([float(v.get(part) or 0.0) for _, v, _ in entries])
        ax1.bar(names, vals, bottom=bottom, color=colour, label=part[:-2],
                hatch=["//" if t else "" for _, _, t in entries])
        bottom += vals
    ax1.scatter(names, [float(v.get("total_s") or np.nan) for _, v, _ in entries], color="black", marker="_",
                s=300, label="total", zorder=3)
    preset = (data.get("setup") or {}).get("preset", "")
    ax1.set(ylabel="seconds per iteration", title=f"Runtime ({preset})" if preset else "Runtime")
    ax1.legend(fontsize=8)
    ax2.bar(names, [float(v.get("peak_memory_mb") or np.nan) for _, v, _ in entries], color="C3",
            hatch=["//" if t else "" for _, _, t in entries])
    ax2.set(ylabel="peak memory (MB)", title="Peak memory")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=40, labelsize=8)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    return _save(fig, path)


def mt_bench_radar(runs: list[Run], labels: dict, path: Path) -> Figure:
    """MT-Bench score per category (mean over seeds), one polygon per row, Base when present."""
    polys: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        mt = (r.evals.get("chat") or {}).get("mt_bench") or {}
        base = ((r.evals.get("chat") or {}).get("base") or {}).get("mt_bench") or {}
        for name, block in ((f"{r.preset}: {labels[r.row_key]}", mt), (f"{r.preset}: Base", base)):
            for cat, v in (block.get("per_category") or {}).items():
                if _num(v):
                    polys.setdefault(name, {}).setdefault(cat, []).append(float(v))
    if not polys:
        return Figure("mt_bench_radar", None, "MT-Bench radar skipped: no evals/chat.json with mt_bench.per_category.")
    cats = sorted({c for p in polys.values() for c in p})
    angles = np.linspace(0, 2 * np.pi, len(cats), endpoint=False).tolist()
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(polar=True)
    colours = _colours(list(polys))
    for name, per_cat in sorted(polys.items()):
        vals = [float(np.mean(per_cat[c])) if c in per_cat else np.nan for c in cats]
        ax.plot(angles + angles[:1], vals + vals[:1], color=colours[name], label=name)
        ax.fill(angles + angles[:1], vals + vals[:1], color=colours[name], alpha=0.08)
    ax.set_xticks(angles, cats)
    ax.set_ylim(0, 10)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.1))
    return Figure("mt_bench_radar", _save(fig, path), "MT-Bench score (1-10) per category, mean across seeds.")


def eta_ablation(runs: list[Run], path: Path) -> Figure:
    """Win rate (RM score when no judge) against eta, for runs of one algorithm whose algorithm_config differs
    only in eta; mean and standard deviation across seeds."""
    families: dict[tuple, dict[float, list[float]]] = {}
    use_win = all(_num(r.summary["eval"].get("win_rate")) for r in runs)
    key = "win_rate" if use_win else "rm_score"
    for r in runs:
        cfg = r.algorithm_config
        if not _num(cfg.get("eta")) or not _num(r.summary["eval"].get(key)):
            continue
        rest = json.dumps({k: v for k, v in cfg.items() if k != "eta"}, sort_keys=True)
        fam = families.setdefault((r.preset, r.algorithm, rest), {})
        fam.setdefault(float(cfg["eta"]), []).append(r.summary["eval"][key] * (100 if use_win else 1))
    families = {k: v for k, v in families.items() if len(v) >= 2}
    if not families:
        return Figure("eta_ablation", None, "eta ablation skipped: no algorithm has runs that differ only in eta.")
    fig, ax = plt.subplots(figsize=(6, 4))
    for (preset, algo, _), fam in sorted(families.items()):
        etas = sorted(fam)
        ms = [stats.mean_std(fam[e]) for e in etas]
        ax.errorbar(etas, [m for m, _, _ in ms], yerr=[0 if math.isnan(s) else s for _, s, _ in ms],
                    marker="o", capsize=3, label=f"{preset}: {algo}")
    ax.set(xlabel="eta", ylabel="win rate (%)" if use_win else "RM score", title="eta ablation")
    ax.legend(fontsize=8)
    return Figure("eta_ablation", _save(fig, path), f"Final {key} against eta (mean and std across seeds) for runs "
                                                   f"that differ only in algorithm_config.eta.")


def winrate_vs_length(runs: list[Run], labels: dict, path: Path) -> Figure:
    """Win rate against mean response length per run (and SFT): a judge that likes long answers shows here."""
    pts: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        for name, block in ((labels[r.row_key], r.summary["eval"]), ("SFT", r.summary.get("sft") or {})):
            if _num(block.get("win_rate")) and _num(block.get("response_length")):
                pts.setdefault(name, []).append((block["response_length"], 100 * block["win_rate"]))
    if not pts:
        return Figure("winrate_vs_length", None, "Win rate vs length skipped: no run has eval.win_rate and "
                                                 "eval.response_length.")
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = _colours(list(pts))
    for name, p in sorted(pts.items()):
        a = np.array(p)
        ax.scatter(a[:, 0], a[:, 1], color=colours[name], label=name, s=20)
    ax.set(xlabel="mean response length (tokens)", ylabel="win rate (%)", title="Win rate vs response length")
    ax.legend(fontsize=8)
    return Figure("winrate_vs_length", _save(fig, path), "Final win rate against mean response length, one point "
                                                         "per run (SFT: the run's SFT baseline).")


def scaling_figure(data: dict, path: Path) -> Path:
    """`harness bench --scaling` (bench_scaling.json): seconds and peak memory per iteration against parameters and
    against prompts per iteration, log-log, one line per contender (TRL dashed, in its counterpart's colour), the
    fitted slope in the legend, and a dotted slope-1 guide (cost proportional to the work)."""
    axes_of = (("sizes", "parameters", "parameters (policy)"),
               ("prompts", "prompts_per_iteration", "prompts per iteration"))
    names = sorted({n.removeprefix("TRL ") for sec in data.values() if isinstance(sec, dict)
                    for p in sec.get("points", []) for n in p["contenders"]})
    colours = _colours(names)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), squeeze=False)
    for col, (mode, key, xlabel) in enumerate(axes_of):
        sec = data.get(mode) or {}
        points, fits = sec.get("points") or [], sec.get("fits") or {}
        for row, (value, ylabel, slope_key) in enumerate((("total_s", "seconds per iteration", "seconds_slope"),
                                                          ("peak_memory_mb", "peak memory (MB)", "memory_slope"))):
            ax = axes[row][col]
            if not points:
                ax.text(0.5, 0.5, f"not measured (harness bench --scaling {mode})", ha="center",
                        transform=ax.transAxes)
                ax.set(xlabel=xlabel, ylabel=ylabel, xticks=[], yticks=[])
                continue
            guide = None
            for name in dict.fromkeys(n for p in points for n in p["contenders"]):
                pts = sorted((float(p[key]), float(p["contenders"][name][value])) for p in points
                             if name in p["contenders"] and p["contenders"][name][value] > 0)
                if not pts:
                    continue
                xs, ys = zip(*pts)
                slope = (fits.get(name) or {}).get(slope_key)
                label = name + (f" (slope {slope:.2f})" if _num(slope) else "")
                ax.plot(xs, ys, marker="o", color=colours[name.removeprefix("TRL ")], label=label,
                        ls="--" if name.startswith("TRL ") else "-")
                guide = guide or (xs, ys[0])
            if guide and len(guide[0]) > 1:
                xs, y0 = guide
                ax.plot([xs[0], xs[-1]], [y0, y0 * xs[-1] / xs[0]], color="grey", ls=":", label="slope 1")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs {xlabel}")
            ax.legend(fontsize=7)
    return _save(fig, path)
