"""Across-seed statistics against hand computation (tiny arrays, as rliable's own tests do)."""
import math

import numpy as np
import pytest

from evals import stats

REPS = 200


def test_mean_std_is_sample_std():
    mean, std, n = stats.mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, ddof=1


def test_mean_std_drops_missing_and_has_no_std_for_one_value():
    assert stats.mean_std([None, 2.0, float("nan")])[::2] == (2.0, 1)
    assert math.isnan(stats.mean_std([2.0])[1])
    assert stats.mean_std([])[2] == 0


def test_iqm_trims_a_quarter_each_side():
    assert stats.iqm([1, 2, 3, 4]) == 2.5          # mean of 2 and 3
    assert stats.iqm([1, 2, 3]) == 2.0             # nothing trimmed below 4 runs: the mean
    assert stats.iqm([0, 1, 2, 3, 4, 5, 6, 100]) == 3.5  # the outlier is trimmed


def test_iqm_ci_few_seeds_hand_values():
    """Three seeds: the IQM is the mean; its bootstrap takes the 27 equally likely resamples, whose sums 3..9 come
    3, 6, 7, 6, 3 times between one each at the ends. 95%: the 2.5% and 97.5% points fall in the end atoms (1/27 =
    3.7% each), so the CI is [1, 3], the data's range; 80%: CDF 4/27 = 14.8% at sum 4 and 23/27 = 85.2% at sum 7
    put the 10% and 90% points at 4/3 and 8/3. Many resamples, so the Monte-Carlo percentiles land on those atoms."""
    assert stats.iqm_ci([1.0, 2.0, 3.0], reps=20000) == pytest.approx((2.0, 1.0, 3.0))
    assert stats.iqm_ci([3.0, 1.0, 2.0], level=0.8, reps=20000) == pytest.approx((2.0, 4 / 3, 8 / 3))


def test_iqm_ci_is_seeded_and_undefined_for_one_seed():
    assert stats.iqm_ci([1.0, 5.0, 2.0, 8.0], reps=REPS, seed=3) == stats.iqm_ci([1.0, 5.0, 2.0, 8.0], reps=REPS, seed=3)
    q, lo, hi = stats.iqm_ci([4.0], reps=REPS)
    assert q == 4.0 and math.isnan(lo) and math.isnan(hi)


def test_probability_of_improvement_hand_values():
    # every x beats every y: P = 1; the bootstrap cannot change that
    assert stats.probability_of_improvement([5, 6, 7], [1, 2, 3], reps=REPS) == (1.0, 1.0, 1.0)
    # x = [1, 3], y = [2]: one win, one loss -> 0.5; single-seed side: no CI
    p, lo, hi = stats.probability_of_improvement([1, 3], [2], reps=REPS)
    assert p == 0.5 and math.isnan(lo)
    # ties count one half
    assert stats.probability_of_improvement([1, 2], [1, 2], reps=REPS)[0] == 0.5


def test_poi_matrix_both_directions_against_the_exact_bootstrap():
    """Each direction's CI against the exact stratified bootstrap of that direction (27 x 27 resamples enumerated
    here), not against the complement formula the code uses."""
    from .test_intervals import clear, exact_interval, resamples

    a, b = [0.2, 1.5, 3.0], [0.4, 1.0, 2.6]
    m = stats.poi_matrix({"a": a, "b": b}, reps=3000)
    win = lambda x, y: np.mean([(u > v) + 0.5 * (u == v) for u in x for v in y])  # noqa: E731
    for first, second, (p, lo, hi) in ((a, b, m[("a", "b")]), (b, a, m[("b", "a")])):
        exact_lo, exact_hi, margin = exact_interval([win(x, y) for x in resamples(first) for y in resamples(second)],
                                                    0.95)
        assert clear(margin, 0.95, 3000)
        assert p == pytest.approx(win(first, second)) and (lo, hi) == pytest.approx((exact_lo, exact_hi))
    assert m[("a", "b")][0] == pytest.approx(5 / 9)  # a beats b in 5 of 9 pairs
    assert stats.significant(*m[("a", "b")][1:]) is False


def test_significant():
    assert stats.significant(0.6, 0.9) is True
    assert stats.significant(0.3, 0.6) is False
    assert stats.significant(float("nan"), float("nan")) is None


def test_rank_marks_as_displayed_with_ties():
    assert stats.rank_marks([1.0, 3.0, 2.0], 1) == ["", "best", "second"]
    assert stats.rank_marks([3.0, 3.04, 2.0], 1) == ["best", "best", "second"]  # equal once rounded
    assert stats.rank_marks([1.0, 3.0, 2.0], 1, higher_is_better=False) == ["best", "", "second"]
    assert stats.rank_marks([None, 3.0], 1) == ["", ""]  # a lone value is not 'best'


def test_t_band_hand_values():
    curves = np.array([[1.0, 2.0], [3.0, 4.0]])
    mean, lo, hi = stats.t_band(curves, 0.95)
    assert mean.tolist() == [2.0, 3.0]
    half = 12.706204736 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * std / sqrt(n)
    assert hi[0] - mean[0] == pytest.approx(half, rel=1e-6)
    one = stats.t_band(curves[:1], 0.95)
    assert one[1].tolist() == one[2].tolist() == [1.0, 2.0]


def test_ellipse_axes_along_the_spread():
    pts = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [2.0, 1.0], [2.0, -1.0]])
    centre, width, height, _ = stats.ellipse(pts, 2.0)
    assert centre.tolist() == [2.0, 0.0]
    assert width == pytest.approx(4 * math.sqrt(2.0))   # var x = 8/4 = 2
    assert height == pytest.approx(4 * math.sqrt(0.5))  # var y = 2/4
    assert stats.ellipse(pts[:2]) is None


@pytest.mark.parametrize("values", [[0.2, 0.9], [1.0, 5.0, 2.0], [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]])
def test_iqm_ci_is_rliables_stratified_bootstrap_bit_for_bit(values):
    """The vectorised bootstrap against rliable's own get_interval_estimates on the same seed (independent path)."""
    x = np.array(values)[:, None]
    reference = stats._bootstrap({"x": x}, lambda s: np.array([stats.rly_metrics.aggregate_iqm(s)]), REPS, 0.9, 7)
    assert stats.iqm_ci(values, level=0.9, reps=REPS, seed=7) == pytest.approx(reference, abs=1e-12)
