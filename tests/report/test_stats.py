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


def test_iqm_ci_few_seeds_is_within_min_max():
    q, lo, hi = stats.iqm_ci([1.0, 2.0, 3.0], reps=REPS)
    assert q == 2.0
    assert 1.0 <= lo <= q <= hi <= 3.0


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


def test_poi_matrix_is_complementary():
    m = stats.poi_matrix({"a": [1, 4, 5], "b": [2, 3, 6]}, reps=REPS)
    p, lo, hi = m[("a", "b")]
    assert p == pytest.approx(4 / 9)  # a beats b in 4 of 9 pairs
    assert m[("b", "a")] == pytest.approx((1 - p, 1 - hi, 1 - lo))
    assert stats.significant(lo, hi) is False


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
