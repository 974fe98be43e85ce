"""Edges of the report's statistics that the mutation run (docs/report.md) found unguarded: the learning curves'
t band with uneven seeds, the covariance ellipse's size and angle, rounding in the rank marks, and the matched-KL
table's empty cells, area column and caption. Hand values throughout."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from evals import matched_kl, stats
from evals.runs import row_labels

from .test_matched_kl import two_runs  # noqa: F401  (a fixture)


def test_t_band_hand_values_with_uneven_seeds():
    # point 0: three seeds 1, 2, 6 (mean 3, sd sqrt(7)); point 1: two seeds 0, 4 (a NaN: mean 2, sd 2 sqrt 2);
    # point 2: a single seed, so no band
    curves = np.array([[1.0, 0.0, 5.0], [2.0, 4.0, np.nan], [6.0, np.nan, np.nan]])
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        mean, lo, hi = stats.t_band(curves, 0.9)
    half0 = 2.919985580 * math.sqrt(7) / math.sqrt(3)  # t(0.95, df 2)
    half1 = 6.313751515 * 2 * math.sqrt(2) / math.sqrt(2)  # t(0.95, df 1)
    assert mean.tolist() == pytest.approx([3.0, 2.0, 5.0])
    assert lo.tolist() == pytest.approx([3.0 - half0, 2.0 - half1, 5.0]) and hi.tolist() == pytest.approx(
        [3.0 + half0, 2.0 + half1, 5.0])
    assert sps.t.ppf(0.95, 2) == pytest.approx(2.919985580)
    # the default level is 95%, and two seeds of one point have a band (a one-point curve is still a curve)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        assert np.allclose(stats.t_band(curves)[2], stats.t_band(curves, 0.95)[2], equal_nan=True)
    mean, lo, hi = stats.t_band(np.array([[1.0], [3.0]]))
    assert (lo[0], hi[0]) == pytest.approx((2.0 - 12.70620474, 2.0 + 12.70620474))


def test_ellipse_size_and_angle_by_hand():
    diagonal = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.9, 1.1], [1.1, 0.9]])  # symmetric about y = x
    centre, width, height, angle = stats.ellipse(diagonal)  # default: two sigma
    assert centre.tolist() == pytest.approx([1.0, 1.0]) and angle % 180 == pytest.approx(45.0)
    cov = np.cov(diagonal, rowvar=False)
    big, small = sorted(np.linalg.eigvalsh(cov), reverse=True)
    assert (width, height) == pytest.approx((4 * math.sqrt(big), 4 * math.sqrt(small)))
    _, _, _, flat = stats.ellipse(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [2.0, 0.5]]))
    assert flat % 180 == pytest.approx(0.0, abs=1e-9)  # spread along x: the long axis is horizontal
    three = stats.ellipse(np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0]]))  # three seeds are enough
    assert three is not None and three[1] > 0 and three[2] > 0
    _, _, _, upright = stats.ellipse(np.array([[0.0, 0.0], [0.0, 2.0], [0.0, 4.0], [0.5, 2.0]]))
    assert upright % 180 == pytest.approx(90.0)  # spread along y: the long axis is vertical
    # collinear seeds: the covariance is singular and its small eigenvalue comes out as -1.7e-18 in floating point;
    # the ellipse is flat (height 0), not a math domain error
    collinear = np.array([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2]])
    assert np.linalg.eigvalsh(np.cov(collinear, rowvar=False))[0] < 0
    _, width, height, _ = stats.ellipse(collinear)
    assert height == 0.0 and width == pytest.approx(4 * math.sqrt(1.01))


def test_rank_marks_round_at_the_displayed_decimals():
    assert stats.rank_marks([3.04, 3.01, 2.0], 2) == ["best", "second", ""]
    assert stats.rank_marks([3.04, 3.01, 2.0], 1) == ["best", "best", "second"]


def test_matched_table_empty_cells_area_column_and_caption(two_runs):  # noqa: F811
    mv = matched_kl.matched_values(two_runs, "win_rate")
    mv.values["a"]["at0"] = math.nan  # a level the run could not be interpolated at: an empty cell
    t = matched_kl.matched_table("tiny", two_runs, row_labels(two_runs), mv, "Win rate (%)", 100.0, 1, 0.95, 50,
                                 0, "m")
    rows = {r[1].text: r for r in t.rows}
    assert "nan" not in rows["ppo"][3].text.lower() and rows["ppo"][3].stats.get("n", 0) == 0
    assert rows["ppo"][9].text == "55.0" and rows["ppo"][9].sources[0]["source"].endswith(":area")
    assert t.caption.endswith("With at most 1 seeds per row the IQM equals the mean and the CI is about [min, max].")
