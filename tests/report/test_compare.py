"""Matched-KL metrics, paired tests, Holm and power against hand computation; FWER and power on synthetic tables."""
import math
from itertools import combinations

import numpy as np
import pytest

from evals import compare


def test_at_kl_interpolates_sorts_and_never_extrapolates():
    kl, wr = [4.0, 0.0, 2.0, 2.0], [0.2, 0.0, 0.5, 0.7]  # unsorted, two evaluations at KL 2 (mean 0.6), a dip at 4
    out = compare.at_kl(kl, wr, [0.0, 1.0, 2.0, 3.0, 4.0, -0.1, 4.5])
    assert out[:5] == pytest.approx([0.0, 0.3, 0.6, 0.4, 0.2])  # 0.6 + (0.2 - 0.6) / 2 at KL 3: no envelope
    assert np.isnan(out[5:]).all()
    assert np.isnan(compare.at_kl([], [], [1.0])).all()
    assert compare.at_kl([1.0, np.nan, 3.0], [1.0, 5.0, 3.0], 2.0).tolist() == [2.0]  # non-finite pairs dropped


def test_frontier_area_hand_values():
    kl, v = [0.0, 2.0, 4.0], [0.0, 1.0, 1.0]
    # to 4: triangle 1 + rectangle 2 = 3, / 4; to 3: 1 + 1 = 2, / 3; to 1: 0.25 / 1
    assert compare.frontier_area(kl, v, 4.0) == pytest.approx(0.75)
    assert compare.frontier_area(kl, v, 3.0) == pytest.approx(2 / 3)
    assert compare.frontier_area(kl, v, 1.0) == pytest.approx(0.25)
    assert math.isnan(compare.frontier_area(kl, v, 5.0))  # never reached: no extrapolation
    # a run first evaluated at KL 2 integrates from there only, still divided by kl_max (the missing stretch is lost)
    assert compare.frontier_area([2.0, 4.0], [1.0, 1.0], 4.0) == pytest.approx(0.5)
    assert compare.frontier_area([2.0, 4.0], [1.0, 1.0], 4.0, kl_min=2.0) == pytest.approx(1.0)


def test_common_kl_levels_are_inside_every_run():
    levels = compare.common_kl_levels([np.array([0.5, 3.0, 9.0]), np.array([1.0, 5.0]), np.array([0.0, 6.0, 12.0])])
    assert levels == pytest.approx([2.0, 3.0, 4.0])  # inside [1, 5] at 1/4, 2/4, 3/4
    assert compare.common_kl_levels([[0.0, 1.0], [2.0, 3.0]]).size == 0
    assert compare.common_kl_levels([[0.0, 1.0], [1.0, 3.0]]).tolist() == [1.0]


def test_paired_difference_hand_values():
    a = {0: 3.0, 1: 5.0, 2: 4.0, 3: 6.0, 9: 100.0}
    b = {0: 1.0, 1: 2.0, 2: 3.0, 3: 2.0, 7: -100.0}  # diffs 2, 3, 1, 4 on the shared seeds 0-3
    r = compare.paired_difference(a, b, reps=500)
    assert r.paired and r.n == 4 and r.mean_diff == pytest.approx(2.5)
    assert r.effect_size == pytest.approx(2.5 / np.std([2, 3, 1, 4], ddof=1))
    assert r.p_value == pytest.approx(2 / 16)  # exact: only all-plus and all-minus reach |sum| = 10
    assert 1.0 <= r.low <= 2.5 <= r.high <= 4.0
    assert "2 unmatched" in r.note
    assert compare.paired_difference(a, b, reps=500).low == r.low  # seeded


def test_sign_flip_exact_and_monte_carlo():
    d = np.array([1.0, -2.0, 3.0])  # |sum| 2; sign vectors with |sum| >= 2: sums +-2, +-4, +-6 -> 6 of 8
    assert compare.sign_flip_p(d) == pytest.approx(6 / 8)
    big = np.random.default_rng(0).normal(0.0, 1.0, 20)  # 2^20 > MAX_EXACT: Monte-Carlo, p in (0, 1]
    p = compare.sign_flip_p(big, reps=500)
    assert 1 / 501 <= p <= 1.0 and p == compare.sign_flip_p(big, reps=500)


def test_unpaired_fallback_is_flagged():
    r = compare.paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {5: 4.0, 6: 5.0, 7: 6.0}, reps=200)
    assert not r.paired and r.mean_diff == pytest.approx(-3.0) and r.n == 6
    assert r.p_value == pytest.approx(2 / 20)  # exact: of C(6, 3) = 20 splits only the observed and its mirror
    assert r.effect_size == pytest.approx(-3.0)  # pooled sd 1
    assert "unpaired" in r.method and "shared seeds" in r.note


def test_holm_matches_statsmodels_or_hand():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.5, "f": float("nan")}
    out = compare.holm(p, alpha=0.05)
    keys = ["a", "b", "c", "d", "e"]
    try:
        from statsmodels.stats.multitest import multipletests
        reject, adj, _, _ = multipletests([p[k] for k in keys], alpha=0.05, method="holm")
    except ImportError:  # hand: sorted d, a, c, b, e times 5, 4, 3, 2, 1, then running max
        adj, reject = [0.04, 0.09, 0.09, 0.025, 0.5], [True, False, False, True, False]
    assert [out[k][0] for k in keys] == pytest.approx(list(adj))
    assert [out[k][1] for k in keys] == list(reject)
    assert [out[k][0] for k in keys] == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])  # monotone: c lifted to 0.09
    assert math.isnan(out["f"][0]) and out["f"][1] is False


def test_seeds_needed_textbook_value():
    # d_z = 0.5, two-sided alpha 0.05, 80% power: 34 pairs (Cohen 1988; G*Power gives 34, power 0.808)
    diffs = np.array([-0.5, 0.5, 1.5])  # mean 0.5, sd (ddof 1) 1
    assert compare.seeds_needed(diffs).n == 34
    assert compare.paired_t_power(34, 0.5) == pytest.approx(0.8078, abs=1e-3)
    assert compare.seeds_needed([1.0, -1.0]).n is None  # mean 0
    assert compare.seeds_needed([1.0]).n is None
    assert compare.seeds_needed([0.01, -0.01, 0.012], max_n=50).reason.startswith("more than 50")
    assert compare.seeds_needed([5.0, 5.0, 5.0]).n == 6  # no spread: the sign-flip floor 2/2^n <= 0.05


def test_verdict_sentence():
    r = compare.paired_difference({s: v for s, v in enumerate([1.0, 3.0, 0.0, 2.5, -0.5])},
                                  {s: 0.0 for s in range(5)}, reps=200)
    s = compare.verdict_sentence("REBEL", "PPO", r, (0.41, False), 36)
    assert s.startswith("REBEL vs PPO: +1.2 points [")
    assert "not significant after Holm correction over 36 pairs" in s and "seeds for 80% power" in s
    assert "significant after Holm" in compare.verdict_sentence("A", "B", r, (0.001, True), 2, unit="%")
    assert "not tested" in compare.verdict_sentence("A", "B", r, (float("nan"), False), 2)
    single = compare.paired_difference({0: 20.1}, {0: 19.9}, reps=50)  # one seed a side: no interval to print
    assert compare.verdict_sentence("A", "B", single, (float("nan"), False), 0).startswith("A vs B: +0.2 points, not")


# ---------------------------------------------------------------------------------------------------------------
# the property the report relies on: real effects are found, and the family-wise error rate stays <= alpha

ALGOS, METRICS, SEEDS, ALPHA = 4, 2, 10, 0.05
PAIRS = [(i, j, m) for i, j in combinations(range(ALGOS), 2) for m in range(METRICS)]  # 6 pairs x 2 metrics = 12
TRUE = {(0, 1, 0), (0, 2, 0), (0, 3, 0)}


def _table(rng: np.random.Generator, shift: float) -> np.ndarray:
    """scores[algo, metric, seed]: a shared per-seed effect (what pairing removes) + noise with sd 1/sqrt(2), so
    the paired differences have sd 1; algorithm 0 is better by `shift` sd of the differences on metric 0."""
    s = rng.normal(size=(1, METRICS, SEEDS)) + rng.normal(scale=math.sqrt(0.5), size=(ALGOS, METRICS, SEEDS))
    s[0, 0] += shift
    return s


def _rejections(s: np.ndarray) -> dict:
    """Holm over the 12 comparisons of one table, p-values from the vectorised exact sign-flip test."""
    diffs = np.stack([s[i, m] - s[j, m] for i, j, m in PAIRS])
    p = compare.sign_flip_p(diffs)
    return {k: reject for k, (_, reject) in compare.holm(dict(zip(PAIRS, p)), ALPHA).items()}


def test_vectorised_sign_flip_is_paired_difference():
    s = _table(np.random.default_rng(7), 2.0)
    diffs = np.stack([s[i, m] - s[j, m] for i, j, m in PAIRS])
    one = [compare.paired_difference(dict(enumerate(s[i, m])), dict(enumerate(s[j, m])), reps=50).p_value
           for i, j, m in PAIRS]
    assert compare.sign_flip_p(diffs) == pytest.approx(one)


def test_holm_controls_fwer_and_detects_a_real_effect():
    rng = np.random.default_rng(2024)
    null_reps, effect_reps = 1000, 200
    fwer = np.mean([any(_rejections(_table(rng, 0.0)).values()) for _ in range(null_reps)])
    hits, false_any = [], []
    for _ in range(effect_reps):
        rej = _rejections(_table(rng, 2.0))
        hits += [rej[k] for k in TRUE]
        false_any.append(any(v for k, v in rej.items() if k not in TRUE))
    se = lambda reps: 2 * math.sqrt(ALPHA * (1 - ALPHA) / reps)  # noqa: E731  two Monte-Carlo standard errors
    print(f"\nFWER under the complete null {fwer:.3f} (bound {ALPHA + se(null_reps):.3f}); detection of d_z = 2 "
          f"{np.mean(hits):.3f}; FWER among the 9 true nulls with the effect present {np.mean(false_any):.3f}")
    assert fwer <= ALPHA + se(null_reps)
    assert np.mean(hits) >= 0.8
    assert np.mean(false_any) <= ALPHA + se(effect_reps)


def test_a_real_effect_end_to_end():
    """One table through paired_difference, holm and verdict_sentence: the real difference is called significant."""
    s = _table(np.random.default_rng(11), 2.0)
    res = {k: compare.paired_difference(dict(enumerate(s[k[0], k[2]])), dict(enumerate(s[k[1], k[2]])), reps=500)
           for k in PAIRS}
    adj = compare.holm({k: r.p_value for k, r in res.items()})
    found = {k for k, (_, reject) in adj.items() if reject}
    assert (0, 1, 0) in found and found <= TRUE  # power is ~0.9 per real pair (measured above), so not all three
    sentence = compare.verdict_sentence("A0", "A1", res[(0, 1, 0)], adj[(0, 1, 0)], len(PAIRS))
    assert "A0 vs A1: +" in sentence and ", significant after Holm correction over 12 pairs" in sentence


# ---------------------------------------------------------------------------------------------------------------
# the paired t-test option: scipy's own implementation agrees, it has no floor, and it keeps the FWER at 5 seeds

def test_paired_t_p_is_scipys_ttest_rel():
    from scipy import stats
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    assert compare.paired_t_p(a - b) == pytest.approx(stats.ttest_rel(a, b, axis=-1).pvalue)
    r = compare.paired_difference(dict(enumerate(a[0])), dict(enumerate(b[0])), reps=50, test="t")
    assert r.method == "paired t-test" and r.p_value == pytest.approx(stats.ttest_rel(a[0], b[0]).pvalue)
    assert compare.paired_t_p([1.0, 1.0, 1.0]) == 0.0 and compare.paired_t_p([0.0, 0.0]) == 1.0
    unpaired = compare.paired_difference({0: 1.0, 1: 2.0, 2: 2.5}, {5: 0.0, 6: 0.5}, reps=50, test="t")
    assert unpaired.method == "unpaired Welch t-test" and not unpaired.paired
    assert unpaired.p_value == pytest.approx(stats.ttest_ind([1.0, 2.0, 2.5], [0.0, 0.5], equal_var=False).pvalue)
    with pytest.raises(ValueError, match="sign-flip, t"):
        compare.paired_difference({0: 1.0}, {0: 2.0}, test="wilcoxon")


def test_t_test_has_no_seed_floor():
    diffs = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]  # d_z = 2.24: the t power needs 4 seeds at 0.05, sign-flip's floor is 6
    assert compare.paired_t_power(3, 2 / math.sqrt(0.8)) < 0.8 <= compare.paired_t_power(4, 2 / math.sqrt(0.8))
    assert compare.seeds_needed(diffs, 0.05, test="t").n == 4
    assert compare.seeds_needed(diffs, 0.05).n == 6
    five = compare.paired_difference({s: 10 + d for s, d in enumerate(diffs[:5])}, {s: 10.0 for s in range(5)},
                                     test="t")
    assert five.p_value < 0.05 < compare.sign_flip_p(five.diffs)  # 5 seeds: t can decide, sign-flip never can


def test_t_test_holm_controls_fwer_at_five_seeds_and_detects_a_large_effect():
    rng = np.random.default_rng(77)
    seeds, null_reps, effect_reps = 5, 1000, 200

    def rejections(shift):
        s = rng.normal(size=(1, METRICS, seeds)) + rng.normal(scale=math.sqrt(0.5), size=(ALGOS, METRICS, seeds))
        s[0, 0] += shift
        p = compare.paired_t_p(np.stack([s[i, m] - s[j, m] for i, j, m in PAIRS]))
        return {k: reject for k, (_, reject) in compare.holm(dict(zip(PAIRS, p)), ALPHA).items()}

    fwer = np.mean([any(rejections(0.0).values()) for _ in range(null_reps)])
    hits = [rejections(4.0) for _ in range(effect_reps)]
    detected = np.mean([h[k] for h in hits for k in TRUE])
    bound = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / null_reps)
    print(f"\npaired t, 5 seeds, Holm over 12: FWER {fwer:.3f} (bound {bound:.3f}); detection of d_z = 4 {detected:.3f}")
    assert fwer <= bound
    assert detected >= 0.7  # noncentral t: power at d_z 4, n 5, alpha 0.05/12 is ~0.8 at Holm's first step


def test_unpaired_permutation_is_exact_up_to_max_exact_splits_then_monte_carlo():
    """The label-permutation test enumerates every split while there are at most MAX_EXACT of them, whatever
    `reps` says, and draws `reps` random splits beyond (mutation-run survivors: exact/Monte-Carlo switch)."""
    x, y = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0], [0.0, 1.0, 2.0, 3.0, 4.0, 4.5]
    six = compare.paired_difference(dict(enumerate(x)), {10 + i: v for i, v in enumerate(y)}, reps=200)
    # C(12, 6) = 924 splits > reps: still exact; only the observed split and its mirror are as extreme
    assert six.method == "unpaired label permutation (exact)" and six.p_value == pytest.approx(2 / 924)
    small = compare.paired_difference({0: 1.0, 1: 3.0}, {5: 0.0, 6: 2.0, 7: 4.0, 8: 6.0}, reps=50)
    # 2 vs 4 seeds, C(6, 2) = 15 splits; |mean difference| 1 is reached by 11 of them (hand count)
    assert small.method == "unpaired label permutation (exact)" and small.p_value == pytest.approx(11 / 15)
    rng = np.random.default_rng(5)
    big_x, big_y = rng.normal(1.0, 1.0, 10), rng.normal(0.0, 1.0, 10)  # C(20, 10) = 184756 > MAX_EXACT
    big = compare.paired_difference(dict(enumerate(big_x)), {20 + i: v for i, v in enumerate(big_y)}, reps=99)
    assert big.method == "unpaired label permutation (Monte-Carlo)"
    assert (big.p_value * 100) == pytest.approx(round(big.p_value * 100))  # (1 + k) / (1 + 99)


def test_paired_t_p_shapes_and_degenerate_rows_without_warnings():
    """Vectorised shapes, one difference (no test: NaN of the right shape) and constant rows (t = 0/0 or x/0)
    handled without a warning escaping (mutation-run survivors)."""
    import warnings

    assert isinstance(compare.paired_t_p([1.0]), float) and math.isnan(compare.paired_t_p([1.0]))
    out = compare.paired_t_p(np.ones((3, 1)))
    assert out.shape == (3,) and np.isnan(out).all()
    assert compare.paired_t_p(np.ones((2, 4, 1))).shape == (2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns about constant rows and divides by zero: kept inside
        p = compare.paired_t_p(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 4.0]]))
    assert p[:2].tolist() == [0.0, 1.0] and 0 < p[2] < 1


def test_paired_t_p_spread_guard_is_per_row():
    """Only a row without spread gets the 0 / 1 convention; small spreads, two seeds and mixed rows are scipy's."""
    from scipy import stats as sps

    for row in ([0.1, 0.2, 0.3], [1.0, 2.0], [0.01, -0.02, 0.015, 0.0]):
        assert compare.paired_t_p(row) == pytest.approx(sps.ttest_1samp(row, 0.0).pvalue, rel=1e-12)
    mixed = compare.paired_t_p(np.array([[2.0, 2.0, 2.0], [0.1, 0.2, 0.3]]))
    assert mixed[0] == 0.0 and mixed[1] == pytest.approx(sps.ttest_1samp([0.1, 0.2, 0.3], 0.0).pvalue)


def test_sign_flip_counts_ties_that_rounding_separates():
    """Differences of pass@1 in points from the committed arith runs (grpo vs gspo): in exact arithmetic 20 of the 32
    sign patterns tie or beat the observed |mean|, p = 0.625; float rounding puts some ties 1e-16 apart, which
    scipy's own tolerance alone misses (it gave 0.5). The exact count by rationals is the reference."""
    from fractions import Fraction
    from itertools import product

    a = ["20.65", "19.8", "20.325", "20.75", "20.825"]
    b = ["20.45", "19.85", "20.425", "20.6", "20.825"]
    exact = [Fraction(x) - Fraction(y) for x, y in zip(a, b)]
    observed = abs(sum(exact))
    k = sum(abs(sum(s * d for s, d in zip(signs, exact))) >= observed for signs in product((1, -1), repeat=5))
    diffs = np.array([float(x) for x in a]) - np.array([float(y) for y in b])
    assert k / 32 == 0.625 and compare.sign_flip_p(diffs) == 0.625
