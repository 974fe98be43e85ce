"""The math task's checker: answers compared by math-verify (HuggingFace's `math-verify`, what TRL's accuracy
reward and open-r1 use), not by exact match.

`verify_answer(response, gold)`:
1. the gold answer (a MATH `answer` string such as "\\frac{1}{2}", "[1,3)", "\\text{Evelyn}") is wrapped in
   `\\boxed{...}` and parsed with math_verify.parse, so a plain "0.5" parses as well as LaTeX does;
2. the response is parsed with math-verify's default extraction (LatexExtractionConfig + ExprExtractionConfig: a
   `\\boxed{}` answer first, else the last LaTeX expression, else the last plain expression such as "1/2");
   nothing extracted is `no_answer` (scored 0);
3. math_verify.verify(gold, prediction) decides: numbers within its rounding, symbolic equality through sympy,
   sets, intervals (open and closed ends differ), tuples, matrices, equations and text answers.

Timeouts: math-verify bounds each parse and each comparison with signal.alarm, which only works in the main thread
(elsewhere it raises ValueError). `verify_answer` passes `timeout_s` in the main thread and None (no timeout) in any
other thread: a caller that runs the checker in threads must bound the time itself. A timed-out parse is no answer
and a timed-out comparison is wrong (math-verify's own behaviour); verify bounds each pair of parsed forms, so one
call may take up to a few times `timeout_s`.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from harness.core.errors import UserError

DEFAULT_TIMEOUT_S = 5  # math-verify's own default for parsing and for each comparison
INSTALL = 'pip install "math-verify[antlr4_13_2]"'


def _math_verify():
    """The math_verify module, imported on first use (it pulls in sympy and an ANTLR LaTeX parser)."""
    try:
        import math_verify
    except ImportError:
        raise UserError(f"the math task's checker needs the math-verify library: {INSTALL}") from None
    return math_verify


def require_math_verify() -> None:
    """Refuse a math run before any model loads when math-verify is missing (the task's settings check)."""
    _math_verify()


@dataclass(frozen=True)
class MathVerdict:
    """One checked response: `correct` 1.0 / 0.0, `no_answer` when nothing could be extracted, `extracted` the
    response's answer as math-verify read it (its string form; None without one)."""

    correct: float
    no_answer: bool
    extracted: str | None


def gold_latex(gold: str) -> str:
    """The gold answer as math-verify should read it: boxed, unless it is already boxed or in math delimiters."""
    gold = gold.strip()
    if "\\boxed" in gold or gold.startswith(("$", "\\(", "\\[")):
        return gold
    return f"\\boxed{{{gold}}}"


def _timeout(timeout_s: int | None) -> int | None:
    """math-verify's signal-based timeout only where signals work: the main thread."""
    return timeout_s if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout_s: int | None):
    parsed = _math_verify().parse(gold_latex(gold), parsing_timeout=timeout_s)
    if not parsed:  # only an empty or timed-out gold; the loaders refuse empty answers
        raise UserError(f"math-verify cannot read the gold answer {gold!r}; fix that row's answer (plain LaTeX, "
                        f"as in MATH's answer column)")
    return parsed


@functools.lru_cache(maxsize=8192)  # the math suite asks for a response's score and its details separately
def _verdict(response: str, gold: str, timeout_s: int | None) -> MathVerdict:
    mv = _math_verify()
    gold_parsed = _parse_gold(gold, timeout_s)
    pred = mv.parse(response, parsing_timeout=timeout_s)
    if not pred:
        return MathVerdict(correct=0.0, no_answer=True, extracted=None)
    # parse returns [sympy form, the string it came from] (or just the string when sympy failed): keep the string
    extracted = str(pred[-1]) if isinstance(pred[-1], str) else str(pred[0])
    right = mv.verify(gold_parsed, pred, timeout_seconds=timeout_s)
    return MathVerdict(correct=1.0 if right else 0.0, no_answer=False, extracted=extracted)


def verify_answer(response: str, gold: str, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> MathVerdict:
    """math-verify's verdict on `response` against the `gold` answer string (module docstring); `timeout_s` bounds
    each parse and comparison in the main thread (None: no bound)."""
    return _verdict(response, str(gold), _timeout(timeout_s))


@dataclass(frozen=True)
class MathVerifier:
    """math-verify as a task's reward (harness.core.examples.TaskReward): 1.0 when the response's answer equals
    `example.answer` by math-verify, else 0.0. The backbone applies the run's missing-EOS score after it."""

    name: str = "math-verify checker"
    timeout_s: int | None = DEFAULT_TIMEOUT_S

    def __call__(self, text: str, example) -> float:
        return self._verdict(text, example).correct

    def details(self, text: str, example) -> dict:
        """What the math suite records of one response besides its score: whether an answer was found, and which."""
        v = self._verdict(text, example)
        return {"no_answer": v.no_answer, "extracted": v.extracted}

    def _verdict(self, text: str, example) -> MathVerdict:
        if not getattr(example, "answer", None):
            raise ValueError("the math checker needs Example.answer (the gold answer); this example has none")
        return verify_answer(text, example.answer, self.timeout_s)
