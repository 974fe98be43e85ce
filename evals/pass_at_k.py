"""pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1): with n samples of which c
are correct, the unbiased estimate of the chance that at least one of k samples is correct is
1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no huge binomials), averaged over problems.
"""
from __future__ import annotations

import math
from typing import Sequence

DEFAULT_KS = (1, 4, 8)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct (needs 1 <= k <= n, 0 <= c <= n)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _correct(x) -> bool:
    """A checker result (1.0 / 0.0, a bool, or an object with `.correct`) as correct or not."""
    return float(getattr(x, "correct", x)) >= 0.5


def mean_pass_at_k(results: Sequence[Sequence], k: int) -> float:
    """pass@k averaged over problems; results[j] are problem j's checker results (each problem needs >= k)."""
    if not results:
        raise ValueError("pass@k of no problems")
    return sum(pass_at_k(len(r), sum(map(_correct, r)), k) for r in results) / len(results)


def summary(results: Sequence[Sequence], no_answer: Sequence[Sequence[bool]] | None = None,
            ks: Sequence[int] = DEFAULT_KS) -> dict:
    """{"pass@1", "pass@4", "pass@8" (per `ks`), "no_answer_frac", "accuracy", "n_problems", "min_samples",
    "max_samples"} of per-problem lists of checker results (floats / bools, or verifier.Verdict objects, which
    also carry no_answer). pass@k is None when some problem has fewer than k samples; no_answer_frac (over all samples) is
    None when neither `no_answer` nor Verdicts say it. accuracy is the mean over all samples (pass@1 weighs each
    problem equally; the two agree when every problem has the same number of samples)."""
    if not results or any(len(r) == 0 for r in results):
        raise ValueError("a pass@k summary needs at least one problem, each with at least one sample")
    n_min = min(len(r) for r in results)
    out = {f"pass@{k}": (mean_pass_at_k(results, k) if k <= n_min else None) for k in ks}
    flags = no_answer
    if flags is None and all(hasattr(x, "no_answer") for r in results for x in r):
        flags = [[x.no_answer for x in r] for r in results]
    if flags is not None and [len(f) for f in flags] != [len(r) for r in results]:
        raise ValueError("no_answer must hold one flag per sample, aligned with results")
    total = sum(len(r) for r in results)
    out["no_answer_frac"] = None if flags is None else sum(bool(x) for f in flags for x in f) / total
    out["accuracy"] = sum(_correct(x) for r in results for x in r) / total
    out["n_problems"] = len(results)
    out["min_samples"], out["max_samples"] = n_min, max(len(r) for r in results)
    return out
