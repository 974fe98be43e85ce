"""The numbers users read, against hand counts (issue 34): the gold judge's win rate (wins, ties, unfinished
responses; a swap of win and loss fails here) and pass@k with its summary. Fast: no model, no run."""
import math
from itertools import combinations
from types import SimpleNamespace

import pytest

from evals.gold_judge import GoldJudge
from evals.pass_at_k import DEFAULT_KS, mean_pass_at_k, pass_at_k, summary


class TableGold:
    """A gold reward read from a table, -1 for a response that never ended (the stand-in's rule), with a record of
    what it was asked."""

    def __init__(self, scores: dict[str, float]):
        self.scores, self.calls = scores, []

    def __call__(self, text, example, terminated=True):
        self.calls.append((text, example.id, terminated))
        return self.scores[text] if terminated else -1.0


# response, reference, ended, verdict by hand: gold 3 > 1 wins, 1 < 2 loses, 2 = 2 ties, an unfinished 5 scores
# -1 < 0 and loses, an unfinished -1 against a reference at -1 ties
CASES = [("good", "poor", True, "win"), ("poor", "fair", True, "loss"), ("fair", "fair2", True, "tie"),
         ("best", "zero", False, "loss"), ("best", "minus", False, "tie")]
GOLD = {"good": 3.0, "poor": 1.0, "fair": 2.0, "fair2": 2.0, "best": 5.0, "zero": 0.0, "minus": -1.0}


def test_gold_judge_counts_wins_ties_and_unfinished_responses_by_hand():
    examples = [SimpleNamespace(id=i) for i in range(len(CASES))]
    gold = TableGold(GOLD)
    out = GoldJudge(gold, examples).win_rate(["p"] * len(CASES), [c[0] for c in CASES], [c[1] for c in CASES],
                                             terminated=[c[2] for c in CASES])
    assert [s["verdict"] for s in out["per_sample"]] == [c[3] for c in CASES]
    assert (out["wins"], out["losses"], out["ties"], out["n"]) == (1, 2, 2, 5)
    assert out["win_rate"] == pytest.approx((1 + 0.5 * 2) / 5)  # 0.4: a tie is half a win
    assert [s["gold_response"] for s in out["per_sample"]] == [3.0, 1.0, 2.0, -1.0, -1.0]
    assert [s["gold_reference"] for s in out["per_sample"]] == [1.0, 2.0, 2.0, 0.0, -1.0]
    assert [s["index"] for s in out["per_sample"]] == list(range(5))
    # each example's own facts judge its pair; a reference is always scored as finished
    assert gold.calls[0::2] == [(c[0], i, c[2]) for i, c in enumerate(CASES)]
    assert gold.calls[1::2] == [(c[1], i, True) for i, c in enumerate(CASES)]
    # a programmatic judge costs nothing: the LLM judge's accounting keys are all there, at 0 (the report sums them)
    assert (out["position_consistency"], out["parse_failures"], out["calls"], out["cache_hits"]) == (1.0, 0, 0, 0)
    assert (out["prompt_tokens"], out["completion_tokens"]) == (0, 0)


def test_gold_judge_without_termination_flags_treats_every_response_as_finished():
    examples = [SimpleNamespace(id=i) for i in range(3)]
    out = GoldJudge(TableGold(GOLD), examples).win_rate(["p"] * 3, ["best", "poor", "good"], ["zero", "good", "good"])
    assert [s["verdict"] for s in out["per_sample"]] == ["win", "loss", "tie"]
    assert out["win_rate"] == pytest.approx(0.5)
    assert GoldJudge(TableGold(GOLD), []).win_rate([], [], [])["win_rate"] is None  # no pairs: no rate


def test_gold_judge_on_the_stand_in_prefers_the_reference_to_an_empty_or_unfinished_summary():
    """The real gold reward of the synthetic task (an empty summary scores 0, an unfinished one -1): on posts whose
    reference scores above 0, the reference beats an empty response, ties itself, and beats its unfinished copy."""
    from harness.tasks.tldr import load_task

    data = load_task("synthetic")
    assert data.gold("", data.sft_train[0]) == 0.0
    examples = [ex for ex in data.sft_train[:20] if data.gold(ex.reference, ex) > 0][:4]
    refs = [ex.reference for ex in examples]
    judge = GoldJudge(data.gold, examples)
    out = judge.win_rate([""] * 4, refs, refs)
    assert (out["ties"], out["win_rate"]) == (4, 0.5)
    out = judge.win_rate([""] * 4, [""] * 4, refs)
    assert out["losses"] == 4 and out["win_rate"] == 0.0
    out = judge.win_rate([""] * 4, refs, refs, terminated=[False] * 4)
    assert out["losses"] == 4 and all(s["gold_response"] == -1.0 for s in out["per_sample"])


def _brute(outcomes, k):
    """pass@k by enumeration: the share of k-subsets of the samples with at least one correct."""
    subsets = list(combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample():
    for n in range(1, 9):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute(outcomes, k), abs=1e-12), (n, c, k)
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - math.comb(6, 4) / math.comb(8, 4))  # 1 - 15/70
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 1, 5) == 1.0 and pass_at_k(4, 1, 1) == 0.25
    for bad in ((4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)):
        with pytest.raises(ValueError, match=r"^pass@k needs 0 <= c <= n and 1 <= k <= n, got n="):
            pass_at_k(*bad)


def test_summary_by_hand():
    # problem 1: 2 of 4 correct; problem 2: 0 of 4; problem 3: 4 of 4 (checker results as floats, bools, Verdicts)
    verdict = lambda ok, none=False: SimpleNamespace(correct=1.0 if ok else 0.0, no_answer=none)  # noqa: E731
    results = [[1.0, 0.0, 1.0, 0.0], [verdict(False, True), verdict(False), verdict(False, True), verdict(False)],
               [True, True, True, True]]
    out = summary(results, no_answer=[[False] * 4, [True, False, True, False], [False] * 4])
    assert out["pass@1"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert out["pass@4"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert out["pass@8"] is None  # problems have 4 samples: no estimate of pass@8
    assert out["no_answer_frac"] == pytest.approx(2 / 12) and out["accuracy"] == pytest.approx(6 / 12)
    assert (out["n_problems"], out["min_samples"], out["max_samples"]) == (3, 4, 4)
    assert summary([[0.49, 0.5]])["accuracy"] == 0.5  # a result counts as correct from 0.5 up
    assert summary([[1.0]])["no_answer_frac"] is None  # nobody said which samples had no answer
    assert summary([[verdict(True, False), verdict(False, True)]])["no_answer_frac"] == 0.5  # Verdicts say it
    unequal = summary([[1.0, 0.0], [1.0, 1.0, 1.0, 0.0]], ks=(1, 2, 4))
    assert unequal["pass@1"] == pytest.approx((0.5 + 0.75) / 2) and unequal["accuracy"] == pytest.approx(4 / 6)
    assert unequal["pass@2"] == pytest.approx((1.0 + 1.0) / 2) and unequal["pass@4"] is None
    assert (unequal["min_samples"], unequal["max_samples"]) == (2, 4)
    assert mean_pass_at_k([[1.0, 0.0], [0.0, 0.0]], 1) == pytest.approx(0.25)
    assert DEFAULT_KS == (1, 4, 8)
    for bad in ([], [[]], [[1.0], []]):
        with pytest.raises(ValueError, match=r"^a pass@k summary needs at least one problem, each with at least "
                                             r"one sample$"):
            summary(bad)
    with pytest.raises(ValueError, match=r"^pass@k of no problems$"):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError, match=r"^no_answer must hold one flag per sample, aligned with results$"):
        summary([[1.0, 0.0]], no_answer=[[True]])
