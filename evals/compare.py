"""Comparisons between algorithms over seeds: matched-KL scores, paired tests, Holm correction, seeds for power.

Plain functions on arrays and {seed: score} dicts; the tests, Holm and power are scipy.stats' and statsmodels'
(permutation_test, ttest_1samp / ttest_ind, multipletests; not TTestPower: see paired_t_power); the report wires them in.

Why matched KL: an optimizer that drifts further from the reference policy buys reward with KL, so comparing final
numbers rewards drift. `at_kl` reads each run's evaluation trajectory (eval/kl, eval/win_rate, ...) at KL levels
that every run reached (`common_kl_levels`), and `frontier_area` summarises the whole reward-KL curve. Neither
ever extrapolates: a level outside a run's observed KL range is NaN, not a guess.

Why paired, and why a sign-flip permutation test: runs with the same seed share data order, prompts and
initialisation, so per-seed differences remove the seed's own luck. With 3-10 seeds nothing supports a normality
assumption, and the sign-flip test (under H0 the sign of each paired difference is exchangeable) is exact without
one: it enumerates all 2^n sign vectors when 2^n <= 10000, else draws `reps` of them (Monte-Carlo, p = (1+k)/(1+reps),
still valid). The price is honest discreteness: its smallest two-sided p is 2/2^n, so 5 seeds can never reach
p < 0.05 and 36 Holm-corrected pairs need 11 seeds at least; `seeds_needed` accounts for that floor.
Seeds that do not overlap at all fall back to an unpaired label-permutation test, flagged `paired=False`.
The alternative, `test="t"`, is the paired t-test (Welch's t-test unpaired): it assumes the per-seed differences are
roughly normal and in exchange has no floor, so 5 seeds can decide a difference that is large against its spread.
A report names the test it used; docs/report.md says when to prefer which.

Why Holm: a report compares every pair of algorithms on several metrics; Holm's step-down controls the family-wise
error rate under any dependence between the tests and is uniformly more powerful than Bonferroni.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Hashable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

MAX_EXACT = 10000  # enumerate the permutation distribution when it has at most this many elements
TESTS = ("sign-flip", "t")  # the per-pair tests: exact sign-flip permutation (no assumption), paired t (normality)


# ---------------------------------------------------------------------------------------------------------------
# matched KL

def _trajectory(kl, value) -> tuple[np.ndarray, np.ndarray]:
    """Finite (kl, value) pairs sorted by KL; evaluations at the same KL (the runner's repeated final line) are
    averaged so interpolation is well defined. No monotone envelope: a dip in the curve stays a dip."""
    k, v = np.asarray(kl, dtype=float).ravel(), np.asarray(value, dtype=float).ravel()
    if k.shape != v.shape:
        raise ValueError(f"kl and value differ in length ({k.size} != {v.size})")
    ok = np.isfinite(k) & np.isfinite(v)
    k, v = k[ok], v[ok]
    uk, inv = np.unique(k, return_inverse=True)
    return uk, np.bincount(inv, weights=v, minlength=uk.size) / np.bincount(inv, minlength=uk.size)


def at_kl(kl, value, levels) -> np.ndarray:
    """A run's value linearly interpolated at each KL level; NaN outside [min KL, max KL] of its evaluations."""
    k, v = _trajectory(kl, value)
    lv = np.atleast_1d(np.asarray(levels, dtype=float))
    if k.size == 0:
        return np.full(lv.shape, np.nan)
    return np.interp(lv, k, v, left=np.nan, right=np.nan)


def frontier_area(kl, value, kl_max: float, kl_min: float = 0.0) -> float:
    """Area under the value-KL curve from max(kl_min, first evaluated KL) to kl_max, divided by kl_max - kl_min
    (by kl_max by default): the curve's mean value over [0, kl_max] when the trajectory starts at KL 0 (prepend the
    SFT policy's point, KL 0, to get that). A run that starts later loses the missing stretch instead of having it
    invented, so compare runs with a common kl_min that all of them reach. NaN when the run never reaches kl_max."""
    k, v = _trajectory(kl, value)
    lo = max(float(kl_min), float(k[0])) if k.size else math.nan
    if k.size < 2 or not kl_max > kl_min or not k[-1] >= kl_max or not lo < kl_max:
        return math.nan
    x = np.concatenate([[lo], k[(k > lo) & (k < kl_max)], [kl_max]])
    y = np.interp(x, k, v)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / (kl_max - kl_min))


def common_kl_levels(runs_kl: Sequence, n: int = 3) -> np.ndarray:
    """n KL levels every run reached: evenly spaced strictly inside [max of the runs' minima, min of their maxima]
    (fractions 1/(n+1) .. n/(n+1)), so no level rests on one run's first or last evaluation. Empty when the runs'
    KL ranges do not overlap (or a run has no finite KL); the single shared value when they touch."""
    finite = [k[np.isfinite(k)] for k in (np.asarray(r, dtype=float).ravel() for r in runs_kl)]
    if not finite or any(k.size == 0 for k in finite) or n < 1:
        return np.array([])
    lo, hi = max(float(k.min()) for k in finite), min(float(k.max()) for k in finite)
    if lo > hi:
        return np.array([])
    if lo == hi:
        return np.array([lo])
    return lo + (hi - lo) * np.arange(1, n + 1) / (n + 1)


# ---------------------------------------------------------------------------------------------------------------
# paired comparisons

@dataclass
class Comparison:
    """a - b over seeds. `n` = paired seeds (paired) or n_a + n_b (unpaired); `effect_size` is Cohen's d_z
    (mean / sd of the paired differences) or, unpaired, Cohen's d with the pooled sd; `diffs` feed seeds_needed."""
    mean_diff: float
    low: float
    high: float
    n: int
    effect_size: float
    p_value: float
    paired: bool
    method: str
    n_a: int = 0
    n_b: int = 0
    diffs: np.ndarray = field(default_factory=lambda: np.array([]), compare=False, repr=False)
    note: str = ""


def _two_sided(statistic):
    """|statistic| with alternative="greater": the two-sided p-value as the share of the null distribution at least
    as far from 0 as the observation (ties count as extreme), whether or not the null distribution is symmetric."""
    return lambda *samples, axis: np.abs(statistic(*samples, axis=axis))


TIE_RTOL, TIE_ATOL = 1e-12, 1e-15  # a permuted statistic this close to the observed one is a tie (counts as extreme)


def _permutation_p(data: tuple, statistic, permutation_type: str, exact: bool, reps: int, seed: int):
    """The permutation p-value over scipy.stats.permutation_test's null distribution: every permutation enumerated
    when `exact` (p = k / N), else `reps` random ones from `seed` (p = (1 + k) / (1 + reps), still valid). k counts
    the permuted statistics at least the observed one within TIE_RTOL: scipy's own tie tolerance (100 float
    epsilons) misses ties that rounding separates, e.g. sign flips of pass@1 differences in points (0.625 becomes
    0.5 on the committed arith runs). Batches bound the memory of a vectorised call to ~32 MB."""
    size = max(1, sum(np.asarray(x).size for x in data))
    res = sps.permutation_test(data, _two_sided(statistic), permutation_type=permutation_type, vectorized=True,
                               n_resamples=np.inf if exact else reps, batch=max(1, 4_000_000 // size),
                               alternative="greater", axis=-1, rng=np.random.default_rng(seed))
    null = np.moveaxis(np.asarray(res.null_distribution, dtype=float), 0, -1)  # (..., draws)
    observed = np.asarray(res.statistic, dtype=float)[..., None]
    k = np.sum(null >= observed * (1 - TIE_RTOL) - TIE_ATOL, axis=-1)
    return k / null.shape[-1] if exact else (1 + k) / (1 + null.shape[-1])


def sign_flip_p(diffs, reps: int = 2000, seed: int = 0):
    """Two-sided sign-flip permutation p-value of mean(diffs) = 0 (scipy.stats.permutation_test, one sample, its
    signs flipped); exact when 2^n <= MAX_EXACT. Vectorised: diffs of shape (..., n) give p-values of shape (...),
    one per row (a float for a 1-D input). Fewer than two differences give NaN, as in paired_t_p (scipy's
    permutation_test needs two)."""
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n < 2:
        return math.nan if d.ndim == 1 else np.full(d.shape[:-1], np.nan)
    p = _permutation_p((d,), np.mean, "samples", 2 ** n <= MAX_EXACT, reps, seed)
    return float(p) if d.ndim == 1 else np.asarray(p, dtype=float)


def paired_t_p(diffs):
    """Two-sided paired t-test p-value of mean(diffs) = 0 (df n-1): scipy.stats.ttest_rel(a, b) is the one-sample
    t-test of a - b, so the differences go to scipy.stats.ttest_1samp. Vectorised like sign_flip_p. All-equal
    non-zero differences give p = 0 (t is infinite); all-zero differences give p = 1 (scipy says nan: 0 / 0)."""
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n < 2:
        return math.nan if d.ndim == 1 else np.full(d.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss notice for constant rows
        p = np.asarray(sps.ttest_1samp(d, 0.0, axis=-1).pvalue, dtype=float)
    spread = d.std(axis=-1, ddof=1) > 0
    p = np.where(spread, p, np.where(d.mean(axis=-1) != 0, 0.0, 1.0))
    return float(p) if d.ndim == 1 else p


def _check_test(test: str) -> None:
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, not {test!r}")


def _label_permutation_p(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> tuple[float, str]:
    """Two-sided label-permutation p-value of mean(x) - mean(y) (scipy.stats.permutation_test, independent
    samples): exact over all C(n_x + n_y, n_x) splits when there are at most MAX_EXACT, else `reps` random ones."""
    exact = math.comb(x.size + y.size, x.size) <= MAX_EXACT
    diff = lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis)  # noqa: E731
    return float(_permutation_p((x, y), diff, "independent", exact, reps, seed)), "exact" if exact else "Monte-Carlo"


def _clean(d: Mapping) -> dict:
    return {k: float(v) for k, v in d.items() if v is not None and math.isfinite(float(v))}


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float], reps: int = 2000, seed: int = 0,
                      level: float = 0.95, test: str = "sign-flip") -> Comparison:
    """a - b from {seed: score} dicts. Paired over the seeds present in both when there are at least two: mean
    difference, percentile-bootstrap CI over the paired seeds, Cohen's d_z, sign-flip permutation p (or, with
    test="t", the paired t-test's). Otherwise (seeds do not overlap) unpaired: difference of means, independent
    bootstrap of each side, label-permutation p (Welch's t with test="t"), flagged paired=False. Seeds in only one
    dict are ignored in the paired case and counted in `note`."""
    _check_test(test)
    a, b = _clean(a), _clean(b)
    rng = np.random.default_rng(seed)
    q = [50 * (1 - level), 50 * (1 + level)]
    common = sorted(set(a) & set(b), key=str)
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common])
        n, mean = d.size, float(d.mean())
        sd = float(d.std(ddof=1))
        dz = mean / sd if sd > 0 else (math.copysign(math.inf, mean) if mean else math.nan)
        lo, hi = np.percentile(d[rng.integers(0, n, (reps, n))].mean(axis=1), q)
        exact = 2 ** n <= MAX_EXACT
        dropped = len(a) + len(b) - 2 * n
        p, method = ((paired_t_p(d), "paired t-test") if test == "t" else
                     (sign_flip_p(d, reps, seed), f"paired sign-flip permutation ({'exact' if exact else 'Monte-Carlo'})"))
        return Comparison(mean, float(lo), float(hi), n, dz, p, True, method, len(a), len(b),
                          d, f"{dropped} unmatched seed(s) ignored" if dropped else "")
    x, y = np.array([a[s] for s in sorted(a, key=str)]), np.array([b[s] for s in sorted(b, key=str)])
    if x.size == 0 or y.size == 0:
        return Comparison(math.nan, math.nan, math.nan, x.size + y.size, math.nan, math.nan, False, "none",
                          x.size, y.size, note="a side has no finite scores")
    mean = float(x.mean() - y.mean())
    note = "unpaired: fewer than two shared seeds"
    if x.size < 2 or y.size < 2:
        return Comparison(mean, math.nan, math.nan, x.size + y.size, math.nan, math.nan, False, "none",
                          x.size, y.size, note=note + "; a side has a single seed, no test")
    pooled_sd = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    d = mean / pooled_sd if pooled_sd > 0 else (math.copysign(math.inf, mean) if mean else math.nan)
    boot = (x[rng.integers(0, x.size, (reps, x.size))].mean(axis=1)
            - y[rng.integers(0, y.size, (reps, y.size))].mean(axis=1))
    lo, hi = np.percentile(boot, q)
    if test == "t":
        p, method = float(sps.ttest_ind(x, y, equal_var=False).pvalue), "unpaired Welch t-test"
    else:
        p, kind = _label_permutation_p(x, y, reps, seed)
        method = f"unpaired label permutation ({kind})"
    return Comparison(mean, float(lo), float(hi), x.size + y.size, d, p, False, method, x.size, y.size, note=note)


# ---------------------------------------------------------------------------------------------------------------
# multiple comparisons and power

def holm(pvalues: Mapping[Hashable, float], alpha: float = 0.05) -> dict[Hashable, tuple[float, bool]]:
    """Holm-Bonferroni step-down (statsmodels' multipletests, method "holm"): adjusted
    p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)), rejected when the step-down says so. NaN p-values (no test
    possible) are left out of the family: (nan, False)."""
    keys = [k for k, p in pvalues.items() if p is not None and math.isfinite(p)]
    out = {k: (math.nan, False) for k in pvalues}
    if keys:
        reject, adj, _, _ = multipletests([pvalues[k] for k in keys], alpha=alpha, method="holm")
        out.update({k: (float(a), bool(r)) for k, a, r in zip(keys, adj, reject)})
    return out


class SeedsNeeded(NamedTuple):
    n: int | None
    reason: str = ""


def paired_t_power(n, dz: float, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided paired t-test with n pairs at effect d_z (noncentral t with df n-1, nc d_z sqrt n).
    Not statsmodels' TTestPower: with scipy 1.17 its lower tail, nct.cdf(-t, df, nc), is NaN at some (n, d_z)
    (d_z 2, alpha 0.05/153, n 11), which would silently raise a seed count; the lower tail here is the same
    probability as nct.sf(t, df, -nc), finite there. tests/report/test_library_pvalues.py holds it against
    TTestPower wherever that is finite."""
    n = np.asarray(n, dtype=float)
    df, nc = n - 1, dz * np.sqrt(n)
    t = sps.t.ppf(1 - alpha / 2, df)
    return sps.nct.sf(t, df, nc) + sps.nct.sf(t, df, -nc)


def seeds_needed(diffs, alpha: float = 0.05, power: float = 0.8, max_n: int = 1000,
                 test: str = "sign-flip") -> SeedsNeeded:
    """Paired seeds needed to detect the observed mean difference with `power` (two-sided, level alpha; pass
    alpha/m for the Holm worst case), from the observed d_z = mean / sd of the paired differences via the paired
    t-test's noncentral t. For the sign-flip test, never fewer than its floor: 2 / 2^n <= alpha. (None, reason) when
    the mean difference is 0, fewer than two differences, or more than max_n seeds would be needed."""
    _check_test(test)
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return SeedsNeeded(None, "fewer than two paired differences: no spread to plan from")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if mean == 0:
        return SeedsNeeded(None, "the mean difference is 0: no number of seeds detects it")
    floor = max(2, math.ceil(math.log2(2 / alpha))) if test == "sign-flip" else 2
    if sd == 0:
        return SeedsNeeded(floor, f"no spread in the differences: only the {test} test's floor applies")
    ns = np.arange(2, max_n + 1)
    hit = np.nonzero(paired_t_power(ns, abs(mean) / sd, alpha) >= power)[0]
    if hit.size == 0:
        return SeedsNeeded(None, f"more than {max_n} seeds (d_z = {abs(mean) / sd:.2g})")
    return SeedsNeeded(int(max(ns[hit[0]], floor)))


def verdict_sentence(name_a: str, name_b: str, result: Comparison, adjusted: tuple[float, bool], n_pairs: int,
                     unit: str = "points", decimals: int = 1, alpha: float = 0.05, power: float = 0.8,
                     test: str = "sign-flip") -> str:
    """One plain sentence, e.g. 'REBEL vs PPO: +1.2 points [-0.3, 2.6], not significant after Holm correction over
    36 pairs (p_adj=0.41, d=0.4; ~23 seeds for 80% power at alpha 0.05/36)'. The seed estimate uses alpha/n_pairs,
    Holm's first (strictest) step, so it is what the family-wide claim needs in the worst case."""
    f = lambda x: "nan" if not math.isfinite(x) else f"{x:+.{decimals}f}"  # noqa: E731
    g = lambda x: "nan" if not math.isfinite(x) else f"{x:.{decimals}f}"  # noqa: E731
    ci = f" [{g(result.low)}, {g(result.high)}]" if math.isfinite(result.low) and math.isfinite(result.high) else ""
    head = f"{name_a} vs {name_b}: {f(result.mean_diff)} {unit}{ci}"  # one seed a side: a difference, no interval
    adj_p, reject = adjusted
    if not math.isfinite(adj_p):
        return f"{head}, not tested ({result.note or 'no p-value'})"
    verdict = "significant" if reject else "not significant"
    detail = f"p_adj={adj_p:.2g}, d={result.effect_size:.1f}"
    if result.paired:
        detail += f", {result.n} paired seeds"
        if not reject:
            need = seeds_needed(result.diffs, alpha / max(n_pairs, 1), power, test=test)
            detail += (f"; ~{need.n} seeds for {power:.0%} power at alpha {alpha:g}/{n_pairs}" if need.n
                       else f"; {need.reason}")
    else:
        detail += f", unpaired {result.n_a} vs {result.n_b} seeds (no shared seeds)"
    return f"{head}, {verdict} after Holm correction over {n_pairs} pairs ({detail})"
