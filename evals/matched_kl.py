"""Matched-KL tables of `harness report`: each run's win rate, RM score and gold reward read off its own evaluation
trajectory at KL levels every run of the preset reached, and its mean value over that common KL range.

Why: an optimizer that drifts further from the reference policy buys reward with KL, so comparing final numbers
rewards drift (evals/compare.py says more). A run's trajectory is the SFT policy's evaluation (the summary's `sft`
block: the policy at iteration 0, KL 0, the same prompts and judge) followed by every periodic evaluation in
metrics.jsonl (each line carrying eval/kl and the metric); under an equal-budget cut only the lines within the
budget. Between evaluations a value is a straight line, beyond them it is never guessed (NaN), so how often a run
evaluated (eval.every) decides how much of a matched value was measured: the notes say when it is thin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from evals import compare
from evals.runs import Run
from evals.tables import Metric, Table, numeric_table

N_LEVELS = 3
# Fewer distinct evaluations (SFT included) inside the common KL range than this: some level is read off a straight
# line across a stretch of the curve nobody evaluated, which the notes name.
MIN_POINTS_IN_RANGE = 3
MAX_NAMED = 6  # run ids listed in a note before "..."


@dataclass
class Trajectory:
    """One run's (KL, value) evaluations in logging order; `iterations` says where each point came from."""
    kl: np.ndarray
    value: np.ndarray
    iterations: list


@dataclass
class MatchedValues:
    """One preset and metric: the common KL range [low, high], its levels, and per run {"at0".., "area": value}."""
    metric: str
    levels: np.ndarray
    low: float
    high: float
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def trajectory(run: Run, metric: str, counter: str | None = None, budget: float | None = None) -> Trajectory:
    """The SFT point (when the summary's sft block has kl and the metric), then every metrics.jsonl line with
    eval/kl and eval/<metric>; with a counter, only lines whose cumulative counter is within the budget."""
    kl, value, its = [], [], []
    sft = run.summary.get("sft")
    if isinstance(sft, dict) and _finite(sft.get("kl")) and _finite(sft.get(metric)):
        kl.append(float(sft["kl"]))
        value.append(float(sft[metric]))
        its.append("sft")
    for m in run.metrics:
        if counter is not None and not (_finite(m.get(counter)) and m[counter] <= budget):
            continue
        if _finite(m.get("eval/kl")) and _finite(m.get(f"eval/{metric}")):
            kl.append(float(m["eval/kl"]))
            value.append(float(m[f"eval/{metric}"]))
            its.append(m.get("iteration"))
    return Trajectory(np.array(kl), np.array(value), its)


def _named(ids: list[str]) -> str:
    return ", ".join(ids[:MAX_NAMED]) + (f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else "")


def matched_values(runs: list[Run], metric: str, counter: str | None = None,
                   budget: float | None = None) -> MatchedValues | None:
    """Every run's metric at the common KL levels and its mean over the common range. None when no run logged a
    periodic eval/<metric> (then there is no trajectory to read, only the SFT point)."""
    trajs = {r.run_id: trajectory(r, metric, counter, budget) for r in runs}
    if not any(it != "sft" for t in trajs.values() for it in t.iterations):
        return None
    within = " within the budget" if counter else ""
    usable = {k: t for k, t in trajs.items() if np.unique(t.kl).size >= 2}
    out = MatchedValues(metric, np.array([]), math.nan, math.nan)
    too_few = sorted(set(trajs) - set(usable))
    if too_few:
        out.notes.append(f"{metric}: {_named(too_few)} logged fewer than two evaluations with eval/kl and "
                         f"eval/{metric}{within} (the SFT point included): nothing to interpolate, their matched "
                         f"cells are empty. Evaluate more often (eval.every) for matched-KL comparisons.")
    if not usable:
        return out
    out.levels = compare.common_kl_levels([t.kl for t in usable.values()], N_LEVELS)
    if out.levels.size == 0:
        out.notes.append(f"{metric}: the runs' evaluated KL ranges do not overlap: no common KL level.")
        return out
    out.low = max(float(t.kl.min()) for t in usable.values())
    out.high = min(float(t.kl.max()) for t in usable.values())
    for run_id, t in usable.items():
        at = compare.at_kl(t.kl, t.value, out.levels)
        out.values[run_id] = {f"at{i}": float(v) for i, v in enumerate(at)}
        out.values[run_id]["area"] = compare.frontier_area(t.kl, t.value, out.high, out.low)
        its = ",".join(str(i) for i in t.iterations if i != "sft")
        out.sources[run_id] = ("summary.json:sft + " if "sft" in t.iterations else "") + \
            f"metrics.jsonl:eval/kl and eval/{metric} at iterations {its}"
    limiting = sorted(k for k, t in usable.items() if float(t.kl.max()) == out.high)
    out.notes.append(f"{metric}: the common KL range ends at {out.high:.3g}, the largest KL every run reached{within} "
                     f"(set by {_named(limiting)}); rows that drift further are compared below their final KL.")
    thin = {k: int(np.unique(t.kl[(t.kl >= out.low) & (t.kl <= out.high)]).size) for k, t in usable.items()}
    thin = {k: n for k, n in thin.items() if n < MIN_POINTS_IN_RANGE}
    if thin:
        listed = [f"{k} ({n})" for k, n in sorted(thin.items())]
        out.notes.append(f"{metric}: {len(thin)} of {len(usable)} runs have fewer than {MIN_POINTS_IN_RANGE} "
                         f"evaluations (SFT included) in the common KL range [{out.low:.3g}, {out.high:.3g}]: "
                         f"{_named(listed)}; their matched values are straight lines across stretches nobody "
                         f"evaluated. Evaluate more often (eval.every) for a measured comparison.")
    return out


def _getter(key: str):
    def get(obs: dict) -> float | None:
        v = obs.get(key)
        return float(v) if _finite(v) else None  # NaN (no interpolation possible) is an empty cell, not a number
    return get


def matched_table(preset: str, runs: list[Run], labels: dict, mv: MatchedValues, header: str, scale: float,
                  decimals: int, level: float, reps: int, seed: int, name: str, budget_note: str = "") -> Table:
    """One table per preset and metric: rows = optimizer rows, columns = the metric at each common KL level and
    its mean over the common range, each as mean (std) and IQM [CI] over seeds, as in Table 1."""
    metrics = [Metric(f"at{i}", f"{header} @ KL {lv:.3g}", _getter(f"at{i}"), scale, decimals)
               for i, lv in enumerate(mv.levels)]
    metrics.append(Metric("area", f"{header}, mean over KL {mv.low:.3g}-{mv.high:.3g}", _getter("area"), scale,
                          decimals))
    by_row: dict[str, list[tuple[dict, dict]]] = {}
    for r in runs:
        if r.run_id in mv.values:
            by_row.setdefault(labels[r.row_key], []).append(
                (mv.values[r.run_id], {"runs": [r.provenance(mv.sources[r.run_id])]}))
    n_max = max((len(v) for v in by_row.values()), default=0)
    caption = (f"Matched KL, preset {preset}: each run's {mv.metric} linearly interpolated on its own evaluation "
               f"trajectory (the SFT policy at KL 0, then every periodic evaluation: eval/kl vs eval/{mv.metric}) "
               f"at {mv.levels.size} KL level(s) inside [{mv.low:.3g}, {mv.high:.3g}], the range every run reached; "
               f"last column: the run's mean {mv.metric} over that range (trapezoidal area / width). Never "
               f"extrapolated: a run that cannot be interpolated has no value. Cells: mean (std, ddof=1) across "
               f"seeds and IQM with a {level:.0%} stratified-bootstrap CI ({reps} resamples, seed {seed}); bold: "
               f"best, underlined: second best per column.")
    if n_max < 4:
        caption += f" With at most {n_max} seeds per row the IQM equals the mean and the CI is about [min, max]."
    if budget_note:
        caption += " " + budget_note
    table = numeric_table(name, f"Matched KL ({preset}): {header}", caption, {preset: sorted(by_row.items())},
                          metrics, True, level, reps, seed)
    table.notes = list(mv.notes)
    return table
