"""Across-seed statistics for the report: plain functions on arrays, uncertainty from `rliable`.

Why these and not a t-test: with 3-5 seeds per cell the paper reports mean (std); rliable's interquartile mean with
a stratified-bootstrap CI and the probability of improvement (Agarwal et al. 2021) are robust to one bad seed and
say how much the seeds support an ordering. Every bootstrap is reseeded with `seed`, so a number does not depend
on which other cells were computed first. With few seeds the IQM is the mean (nothing is trimmed below 4
runs) and the percentile CI is about [min, max]: the tables say so in their captions.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from rliable import library as rly
from rliable import metrics as rly_metrics
from scipy import stats as sps


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (ddof=1, as papers report across seeds); std is nan for one value."""
    x = _clean(values)
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)


def iqm(values: Sequence[float | None]) -> float:
    """Interquartile mean (25% trimmed on each side) of runs of one task: rliable's aggregate_iqm."""
    x = _clean(values)
    return float(rly_metrics.aggregate_iqm(x[:, None])) if x.size else math.nan


def _bootstrap(score_dict: dict, fn, reps: int, level: float, seed: int) -> tuple[float, float, float]:
    """rliable 1.2's bootstrap classes draw indices from the *global* np.random and ignore random_state, so the
    global state is seeded here and restored afterwards: the same inputs always give the same CI."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch's notice about RandomState, which rliable passes
            point, interval = rly.get_interval_estimates(score_dict, fn, reps=reps, confidence_interval_size=level,
                                                         random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    (key,) = point
    return float(point[key][0]), float(interval[key][0][0]), float(interval[key][1][0])


def iqm_ci(values: Sequence[float | None], level: float = 0.95, reps: int = 2000,
           seed: int = 0) -> tuple[float, float, float]:
    """(IQM, low, high): stratified-bootstrap percentile CI over seeds. nan CI for fewer than two values,
    because a bootstrap of one run is a single point and would look like certainty."""
    x = _clean(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    # rliable's bootstrap of one task, vectorised: arch's StratifiedBootstrap draws each resample as
    # np.random.choice(n, (n, 1)) from the global state seeded with `seed` (the same stream as one randint of
    # (reps, n)) and takes percentiles of the statistic; this reproduces its numbers bit for bit
    # (tests/report/test_stats.py holds it against rliable) about a thousand times faster, which matters once the
    # report has an IQM per matched-KL level, metric and row.
    resamples = x[np.random.RandomState(seed).randint(0, x.size, size=(reps, x.size))]
    low, high = np.percentile(sps.trim_mean(resamples, 0.25, axis=1), [50 * (1 - level), 50 * (1 + level)])
    return iqm(x), float(low), float(high)


def probability_of_improvement(x: Sequence[float], y: Sequence[float], level: float = 0.95, reps: int = 2000,
                               seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), low, high) over seeds of one task (ties count one half), CI by independent stratified
    bootstrap of each side. nan CI when either side has a single run."""
    a, b = _clean(x), _clean(y)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    p = float(rly_metrics.probability_of_improvement(a[:, None], b[:, None]))
    if a.size < 2 or b.size < 2:
        return p, math.nan, math.nan
    fn = lambda s, t: np.array([rly_metrics.probability_of_improvement(s, t)])  # noqa: E731
    return _bootstrap({"xy": [a[:, None], b[:, None]]}, fn, reps, level, seed)


def poi_matrix(scores: dict[str, Sequence[float]], level: float = 0.95, reps: int = 2000,
               seed: int = 0) -> dict[tuple[str, str], tuple[float, float, float]]:
    """P(row > column) for every ordered pair. Only one triangle is bootstrapped: P(Y > X) = 1 - P(X > Y) holds
    for every resample (ties count one half), so its percentile CI is [1 - high, 1 - low]."""
    names = list(scores)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p, lo, hi = probability_of_improvement(scores[a], scores[b], level, reps, seed)
            out[(a, b)] = (p, lo, hi)
            out[(b, a)] = (1 - p, 1 - hi, 1 - lo)
    return out


def significant(low: float, high: float) -> bool | None:
    """A difference is significant when the CI of P(X > Y) excludes 0.5; None when there is no CI."""
    if math.isnan(low) or math.isnan(high):
        return None
    return not (low <= 0.5 <= high)


def rank_marks(values: Sequence[float | None], decimals: int, higher_is_better: bool = True) -> list[str]:
    """'best' / 'second' / '' per value, compared as displayed (rounded), so equal-looking cells share a mark.
    Nothing is marked when fewer than two values exist: a lone row is not 'best'."""
    shown = [None if v is None or math.isnan(v) else round(v, decimals) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=higher_is_better)
    if sum(v is not None for v in shown) < 2:
        return [""] * len(values)
    marks = {distinct[0]: "best"}
    if len(distinct) > 1:
        marks[distinct[1]] = "second"
    return [marks.get(v, "") if v is not None else "" for v in shown]


def t_band(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t CI across seeds at each x (curves: seeds x points). A per-point bootstrap would cost
    thousands of resamples per point for a drawing; with one seed the band collapses to the mean."""
    mean = np.nanmean(curves, axis=0)
    n = np.sum(~np.isnan(curves), axis=0)
    if curves.shape[0] < 2:
        return mean, mean, mean
    sem = np.nanstd(curves, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1))
    half = sps.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sem
    half = np.where(n > 1, half, 0.0)
    return mean, mean - half, mean + half


def ellipse(points: np.ndarray, nsigma: float = 2.0) -> tuple[np.ndarray, float, float, float] | None:
    """(centre, width, height, angle in degrees) of the nsigma covariance ellipse of 2-D points (seeds x 2).
    Needs three points: two seeds span a line, not an area."""
    pts = np.asarray(points, dtype=float)
    if pts.shape[0] < 3:
        return None
    cov = np.cov(pts, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
    return pts.mean(axis=0), 2 * nsigma * math.sqrt(vals[1]), 2 * nsigma * math.sqrt(vals[0]), angle
