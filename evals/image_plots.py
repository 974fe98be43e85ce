"""The image task's report pieces: image grids, learning curves of the reward against reward queries with the IQM
and a 95% bootstrap CI across seeds at each evaluation point (evals/stats.py `iqm_ci`), and a final-score table.

    python -m evals.image_plots RUN_DIR... --out DIR     (writes curves.png, grids.png, report.md into DIR)
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evals.stats import iqm_ci  # noqa: E402


def save_grid(images, path: Path, scores: list[float] | None = None, columns: int = 8) -> Path:
    """[N, 3, H, W] images in [0, 1] as one PNG grid, each titled with its score."""
    images = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.35 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if scores is not None:
                ax.set_title(f"{scores[i]:.3f}", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"dir": run_dir, "summary": summary, "lines": lines}


def eval_curve(run: dict, counter: str = "rm_queries") -> tuple[np.ndarray, np.ndarray]:
    """(counter, eval/score) at the base policy (0 queries) and at every evaluated iteration, the final included."""
    xs, ys = [0.0], [run["summary"]["sft"]["score"]]
    for line in run["lines"]:
        if "eval/score" in line:
            xs.append(float(line[counter]))
            ys.append(float(line["eval/score"]))
    return np.array(xs), np.array(ys)


def curve_stats(curves: list[tuple[np.ndarray, np.ndarray]], level: float = 0.95):
    """Per evaluation point shared by every seed: (x, IQM, low, high); seeds with the same settings evaluate at the
    same counters, so no interpolation is needed (points some seed lacks are dropped)."""
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    out = []
    for x in common:
        values = [float(y[np.flatnonzero(xs == x)[0]]) for xs, y in curves]
        out.append((x, *iqm_ci(values, level=level)))
    return np.array(out)


def report(run_dirs: list[Path], out: Path, counter: str = "rm_queries", level: float = 0.95) -> Path:
    """curves.png, grids.png and report.md for the runs, grouped by optimizer."""
    runs = [load(d) for d in run_dirs]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["summary"]["algorithm"], []).append(r)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = ["| optimizer | seeds | base score | final score IQM [95% CI] | final scores | reward queries | "
            "optimizer steps | wall time (s, mean) |", "|---|---|---|---|---|---|---|---|"]
    for name, members in sorted(groups.items()):
        stats = curve_stats([eval_curve(r, counter) for r in members], level)
        (line,) = ax.plot(stats[:, 0], stats[:, 1], marker="o", label=f"{name} (IQM, {len(members)} seeds)")
        ax.fill_between(stats[:, 0], stats[:, 2], stats[:, 3], alpha=0.2, color=line.get_color())
        finals = [r["summary"]["eval"]["score"] for r in members]
        mid, low, high = iqm_ci(finals, level=level)
        b = members[0]["summary"]["budget"]
        rows.append(f"| {name} | {len(members)} | {members[0]['summary']['sft']['score']:.4f} | {mid:.4f} "
                    f"[{low:.4f}, {high:.4f}] | {', '.join(f'{f:.4f}' for f in finals)} | {b['rm_queries']} | "
                    f"{b['optimizer_steps']} | {np.mean([r['summary']['budget']['wall_time_s'] for r in members]):.0f} |")
    reward = runs[0]["summary"]["reward"]
    ax.set(xlabel=f"reward queries ({counter})", ylabel=f"held-out {reward}",
           title=f"{reward} vs reward queries\n(IQM, {level:.0%} bootstrap CI over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    _grids(groups, out / "grids.png")
    text = ["# Image runs", "", f"Runs: {len(runs)} ({', '.join(sorted(groups))}); reward: {reward}; preset "
            f"{runs[0]['summary']['preset']}. Held-out score: the mean reward of one image per evaluation prompt from "
            "fixed starting noise (the same for every run). IQM and 95% stratified-bootstrap CI over seeds "
            "(evals/stats.py; with 3 seeds the IQM trims nothing: it is the mean).", "", *rows, "",
            "![curves](curves.png)", "", "![grids](grids.png)", ""]
    (out / "report.md").write_text("\n".join(text))
    return out / "report.md"


def _grids(groups: dict, path: Path) -> None:
    """The first seed's before and after images of each optimizer, side by side."""
    from PIL import Image

    panels = []
    for name, members in sorted(groups.items()):
        first = sorted(members, key=lambda r: r["summary"]["seed"])[0]["dir"]
        panels += [(f"{name}: before (base policy)", first / "images" / "before.png"),
                   (f"{name}: after", first / "images" / "after.png")]
    fig, axes = plt.subplots(len(panels) // 2, 2, figsize=(14, 3.2 * len(panels) // 2), squeeze=False)
    for ax, (title, file) in zip(axes.flat, panels):
        ax.imshow(Image.open(file))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_figure(members: list, counter: str, level: float, path: Path):
    """`harness report`'s figure of an image comparison group (evals/image_suite.py `figures`): the curves of
    `report` from its runs (evals.runs.Run), at the report's x counter; the grids beside them."""
    from evals.plots import Figure

    import shutil

    report([Path(r.path) for r in members], path.parent / path.stem, counter, level)
    shutil.copyfile(path.parent / path.stem / "curves.png", path)  # the report links plots/<name>.png
    return Figure("image_curves", path, f"Held-out image reward against {counter}: IQM across seeds with a "
                  f"{level:.0%} stratified-bootstrap band; before/after images in {path.stem}/grids.png.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(report(args.runs, args.out))


if __name__ == "__main__":
    main()
