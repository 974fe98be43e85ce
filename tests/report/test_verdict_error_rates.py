"""The family-wise error and the power of the report's pairwise verdicts, measured through `verdict_table` itself
(evals/verdicts.py: orientation, alpha = 1 - level, Holm over the table's pairs, the significance flag users read)
on simulated run tables with no effect and with a known one, under both tests and for a pre-registered family
(issue 34). No model runs: a few seconds.

A table: R optimizer rows x S seeds, score = a per-seed effect every row shares (what pairing removes) + noise of
sd 1/sqrt(2), so each paired difference has sd 1 and a shift of `d` in row "a" is an effect of d_z = d.
Bounds are sized to the number of draws: the family-wise error may exceed alpha by at most two binomial
standard errors of its estimate; power is stated with the effect, seeds and family it holds for."""
import math

import numpy as np
import pytest

from evals import compare
from evals.verdicts import verdict_table

ALPHA = 0.05


@pytest.fixture(autouse=True)
def _no_seed_planning(monkeypatch):
    """The seeds-for-power column (a noncentral-t search over up to 1000 seed counts per pair) decides nothing the
    rates measure; a stub keeps hundreds of tables within seconds."""
    monkeypatch.setattr(compare, "seeds_needed", lambda *a, **k: compare.SeedsNeeded(None, "not planned here"))


def _tables(rng, draws: int, rows: int, seeds: int, shift: float) -> np.ndarray:
    s = rng.standard_normal((draws, 1, seeds)) + math.sqrt(0.5) * rng.standard_normal((draws, rows, seeds))
    s[:, 0] += shift
    return s


def _verdicts(s: np.ndarray, test: str, labels: str) -> list[dict]:
    """Each draw through verdict_table: {frozenset pair: stats} of its p Holm cells."""
    out = []
    for i, draw in enumerate(s):
        scores = {name: dict(enumerate(draw[j])) for j, name in enumerate(labels)}
        t = verdict_table("sim", scores, {k: [{}] for k in scores}, "score, final", "points", 3, 1 - ALPHA, 10, i,
                          "v", test=test)
        out.append({frozenset((r[5].stats["a"], r[5].stats["b"])): r[5].stats for r in t.rows})
    return out


def _bound(draws: int) -> float:
    return ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / draws)


def _rates(results: list[dict], real: set) -> tuple[float, float, float]:
    """(share of draws with a false rejection, share of real pairs detected as better-vs-worse with 'a' first,
    share of draws where a real pair was called significant the wrong way round)."""
    false_any = np.mean([any(st["significant"] for k, st in r.items() if k not in real) for r in results])
    hits = [r[k]["significant"] and r[k]["a"] == "a" for r in results for k in real]
    wrong_way = np.mean([any(r[k]["significant"] and r[k]["a"] != "a" for k in real) for r in results])
    return float(false_any), float(np.mean(hits)) if hits else math.nan, float(wrong_way)


@pytest.mark.parametrize("test, seeds, effect, power", [
    ("sign-flip", 8, 2.0, 0.9),  # 8 seeds: the exact test's smallest p, 2/256, clears Holm's 0.05/3
    ("t", 5, 3.0, 0.9),           # the t-test has no floor: 5 seeds, at a larger effect
])
def test_verdict_table_keeps_the_family_wise_error_and_finds_a_known_effect(test, seeds, effect, power):
    rng = np.random.default_rng(2034)
    null_draws, effect_draws = 400, 150
    null = _verdicts(_tables(rng, null_draws, 3, seeds, 0.0), test, "abc")
    assert all(st["pairs"] == 3 and st["paired"] for r in null for st in r.values())
    fwer, _, _ = _rates(null, set())
    real = {frozenset("ab"), frozenset("ac")}
    found = _verdicts(_tables(rng, effect_draws, 3, seeds, effect), test, "abc")
    false_any, detected, wrong_way = _rates(found, real)
    print(f"\n{test}, {seeds} seeds, 3 rows: FWER {fwer:.3f} over {null_draws} null tables (bound "
          f"{_bound(null_draws):.3f}); d_z {effect}: power {detected:.3f}, false rejection of b vs c {false_any:.3f}")
    assert fwer <= _bound(null_draws)
    assert false_any <= _bound(effect_draws) and wrong_way == 0.0
    assert detected >= power


def test_a_pre_registered_family_keeps_its_error_and_gains_power():
    """Five rows, of which the family a, b, c was chosen beforehand (--verdict-family passes only those rows to
    verdict_table): Holm corrects over 3 pairs instead of 10, so the same draws give more detections of a's real
    effect, and the family's error stays within its bound."""
    rng = np.random.default_rng(27)
    draws, seeds = 300, 5
    null = _tables(rng, draws, 5, seeds, 0.0)
    family = _verdicts(null[:, :3], "t", "abc")
    assert all(st["pairs"] == 3 for r in family for st in r.values())
    fwer, _, _ = _rates(family, set())
    shifted = _tables(rng, draws // 2, 5, seeds, 3.0)
    real = {frozenset("ab"), frozenset("ac")}
    _, in_family, _ = _rates(_verdicts(shifted[:, :3], "t", "abc"), real)
    everything = _verdicts(shifted, "t", "abcde")
    assert all(st["pairs"] == 10 for r in everything for st in r.values())
    _, in_all, _ = _rates(everything, real)
    print(f"\nfamily a, b, c of 5 rows, paired t, {seeds} seeds: FWER {fwer:.3f} (bound {_bound(draws):.3f}); power at "
          f"d_z 3: {in_family:.3f} with the family, {in_all:.3f} corrected over all 10 pairs")
    assert fwer <= _bound(draws)
    assert in_family >= 0.9 and in_family > in_all + 0.1
