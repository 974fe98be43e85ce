"""Every interval the report prints, checked independently (issue 34): the percentile-bootstrap CIs of the
verdicts (paired and unpaired differences), the IQM and the probability of improvement against the exact bootstrap
distribution (all n^n resamples enumerated here, no shared code), the verdicts' CI and the curves' t band by
coverage simulation (the nominal 95% interval covers the true value 93-97% of the time). A 50% interval in place
of a 95% one fails every test here."""
import math
from itertools import product

import numpy as np
import pytest

from evals import compare, stats

REPS = 40000  # enough resamples that the Monte-Carlo percentiles land on the exact bootstrap distribution's atoms


def exact_interval(values, level):
    """The percentile interval of a discrete distribution given as equally likely values: the smallest value whose
    CDF reaches (1 - level) / 2, and the largest whose upper tail reaches it; with the margin by which the CDF
    clears those probabilities (a Monte-Carlo percentile lands on the same values when it is several standard errors)."""
    v = np.sort(np.asarray(values, dtype=float))
    atoms, counts = np.unique(np.round(v, 12), return_counts=True)
    cdf = np.cumsum(counts) / v.size
    tail = (1 - level) / 2
    lo_i = int(np.argmax(cdf >= tail))
    hi_i = int(np.argmax(cdf >= 1 - tail))
    margin = min(cdf[lo_i] - tail, tail - (cdf[lo_i - 1] if lo_i else 0.0),
                 cdf[hi_i] - (1 - tail), (1 - tail) - (cdf[hi_i - 1] if hi_i else 0.0))
    return atoms[lo_i], atoms[hi_i], margin


def clear(margin: float, level: float, reps: int) -> bool:
    """The exact CDF clears the percentile's probability by over five Monte-Carlo standard errors of reps draws."""
    tail = (1 - level) / 2
    return margin > 5 * math.sqrt(tail * (1 - tail) / reps)


def resamples(x):
    """All len(x)^len(x) ordered resamples of x, each as likely as the others under the bootstrap."""
    return np.array(list(product(x, repeat=len(x))), dtype=float)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_paired_difference_ci_is_the_exact_bootstrap_percentile_interval(level):
    a = {s: v for s, v in enumerate([2.0, 3.0, 3.0, 5.0])}  # repeated values: atoms with mass
    b = {s: 2.0 for s in range(4)}
    lo, hi, margin = exact_interval(resamples([0.0, 1.0, 1.0, 3.0]).mean(axis=1), level)
    assert clear(margin, level, REPS)
    r = compare.paired_difference(a, b, reps=REPS, level=level)
    assert (r.low, r.high) == pytest.approx((lo, hi), abs=1e-9)


def test_unpaired_difference_ci_is_the_exact_bootstrap_percentile_interval():
    x, y = [0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0]  # no shared seeds: each side resampled on its own
    diffs = (resamples(x).mean(axis=1)[:, None] - resamples(y).mean(axis=1)[None, :]).ravel()
    lo, hi, margin = exact_interval(diffs, 0.95)
    assert clear(margin, 0.95, REPS)
    r = compare.paired_difference(dict(enumerate(x)), {10 + i: v for i, v in enumerate(y)}, reps=REPS)
    assert not r.paired and (r.low, r.high) == pytest.approx((lo, hi), abs=1e-9)


def test_iqm_ci_is_the_exact_bootstrap_percentile_interval():
    x = [0.0, 4.0, 1.0, 4.0, 0.0]
    # IQM of 5 values: a quarter trimmed each side rounds down to one value, so the mean of the middle three
    iqms = np.sort(resamples(x), axis=1)[:, 1:4].mean(axis=1)
    lo, hi, margin = exact_interval(iqms, 0.95)
    assert clear(margin, 0.95, REPS)
    q, low, high = stats.iqm_ci(x, reps=REPS)
    assert q == pytest.approx(np.mean(sorted(x)[1:4])) and (low, high) == pytest.approx((lo, hi), abs=1e-9)


def test_probability_of_improvement_ci_is_the_exact_stratified_bootstrap_interval():
    x, y = [0.2, 1.5, 3.0], [0.4, 1.0, 2.6]
    win = lambda a, b: np.mean([(u > v) + 0.5 * (u == v) for u in a for v in b])  # noqa: E731
    pois = [win(a, b) for a in resamples(x) for b in resamples(y)]
    lo, hi, margin = exact_interval(pois, 0.95)
    assert clear(margin, 0.95, 3000)  # rliable's bootstrap loops in Python: fewer resamples, still 7 se clear
    p, low, high = stats.probability_of_improvement(x, y, reps=3000)
    assert p == pytest.approx(win(x, y)) and (low, high) == pytest.approx((lo, hi), abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# coverage: draws with a known true value; the binomial standard error of the coverage over DRAWS is ~0.56 points,
# so [93%, 97%] is over three standard errors either side of 95%

DRAWS = 1500


def _coverage_band(hits: np.ndarray) -> tuple[float, float]:
    cov = float(np.mean(hits))
    se = math.sqrt(0.95 * 0.05 / hits.size)
    assert 2 * se < 0.02, "too few draws to tell 93-97% from 95%"
    return cov, se


def test_the_verdicts_95_percent_ci_covers_the_true_difference_93_to_97_percent_of_the_time():
    rng = np.random.default_rng(34)
    n, true = 200, 0.3  # many seeds: the percentile bootstrap of a mean is then close to its nominal level
    diffs = true + rng.standard_normal((DRAWS, n))
    hits = []
    for i, d in enumerate(diffs):
        r = compare.paired_difference(dict(enumerate(d)), dict.fromkeys(range(n), 0.0), reps=1000, seed=i, test="t")
        hits.append(r.low <= true <= r.high)
    cov, se = _coverage_band(np.array(hits))
    print(f"\npaired-difference 95% CI coverage over {DRAWS} draws: {cov:.3f} (se {se:.3f})")
    assert 0.93 <= cov <= 0.97


def test_the_learning_curves_t_band_covers_the_true_mean_93_to_97_percent_of_the_time():
    rng = np.random.default_rng(27)
    for seeds in (3, 5):  # the band is exact for normal seeds, however few
        curves = 2.0 + rng.standard_normal((seeds, DRAWS * 2))  # every x point is one draw
        mean, lo, hi = stats.t_band(curves, 0.95)
        cov, se = _coverage_band((lo <= 2.0) & (2.0 <= hi))
        print(f"\nt band, {seeds} seeds, coverage over {2 * DRAWS} points: {cov:.3f}")
        assert 0.93 <= cov <= 0.97
