"""Final-answer extraction and the exact-match checker for math word problems (GSM8K and its offline stand-in).

Extraction rule (`extract_answer`):
1. a "#### N" marker (GSM8K's final line) wins: N is the number right after the FIRST "####" that is followed by
   one (lm-eval-harness's strict match also takes the first; a model that keeps generating after its answer is
   judged on the answer it committed to);
2. otherwise the LAST number anywhere in the response;
3. no number at all: None (`no_answer` is then True and the check scores 0).
Numbers: thousands separators ("1,234"), currency ("$5", "-$5", "$-5"), units ("5 dollars", "5%", "5th") and
trailing zeros ("5.00") are stripped; negatives and decimals are kept. A "-" is a sign only when it does not follow
a digit, letter or ")" and touches the number ("10-3" and "10 - 3" are 10 and 3; "x = -3" is -3). Values are compared exactly (as fractions), so
"7.0" matches 7 and "6.999" does not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from harness.core.examples import Example

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
NUMBER_RE = re.compile(rf"(?<![\w).])(?P<sign>-)?\$?(?P<sign2>-)?(?P<num>{_NUMBER})")
MARKER_RE = re.compile(rf"####\s*(?P<sign>-)?\$?(?P<sign2>-)?(?P<num>{_NUMBER})")


GOLD_RE = re.compile(r"####\s*(-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*$")


def parse_gold(answer: str) -> int:
    """The gold integer of a GSM8K solution: the number on its final "#### " line."""
    last = answer.rstrip().rsplit("\n", 1)[-1].strip()
    m = GOLD_RE.search(last)
    if not m:
        raise ValueError(f"the solution does not end in a '#### <number>' line (last line: {last[:60]!r})")
    text = m.group(1).replace(",", "").replace("$", "")
    value = float(text)
    if value != int(value):
        raise ValueError(f"the gold answer {m.group(1)!r} is not an integer")
    return int(value)


def _value(sign: str | None, digits: str) -> int | float:
    x = Fraction(digits.replace(",", ""))
    if sign:
        x = -x
    return int(x) if x.denominator == 1 else float(x)


def extract_answer(response: str) -> int | float | None:
    """The final number of a response by the rule above: an int when it is integral, a float otherwise, or None."""
    marker = MARKER_RE.search(response)
    if marker:
        return _value(marker["sign"] or marker["sign2"], marker["num"])
    last = None
    for m in NUMBER_RE.finditer(response):
        last = m
    if last is None:
        return None
    return _value(last["sign"] or last["sign2"], last["num"])


def no_answer(response: str) -> bool:
    """True when the response holds no number at all (nothing to check)."""
    return extract_answer(response) is None


def check(response: str, answer: int | float) -> float:
    """1.0 when the extracted final number equals `answer` exactly, else 0.0 (also when there is no number)."""
    got = extract_answer(response)
    if got is None:
        return 0.0
    return 1.0 if Fraction(got) == Fraction(answer) else 0.0


@dataclass(frozen=True)
class Verdict:
    """One checked response: `correct` is check()'s 1.0 / 0.0, `extracted` the number read (None: no answer)."""

    correct: float
    no_answer: bool
    extracted: int | float | None


def verify(response: str, answer: int | float) -> Verdict:
    """check() and no_answer() in one extraction."""
    got = extract_answer(response)
    correct = 0.0 if got is None else float(Fraction(got) == Fraction(answer))
    return Verdict(correct=correct, no_answer=got is None, extracted=got)


@dataclass
class ProblemExample(Example):
    """A word problem's row: the question (the key its checked pairs are cached under) and the ground-truth number
    the checker compares with."""

    question: str = ""
    answer: int | float | None = None

    def record(self) -> dict:
        return {"answer": self.answer}


@dataclass(frozen=True)
class Checker:
    """The exact-match checker as a task's reward (harness.core.examples.TaskReward): 1.0 when the response's final
    number equals `example.answer`, else 0.0. The backbone replaces the score of a response without EOS by the
    run's missing-EOS score, as it does a reward model's."""

    name: str = "exact-match checker"

    def __call__(self, text: str, example) -> float:
        if example.answer is None:
            raise ValueError("the checker needs Example.answer (the ground truth); this example has none")
        return check(text, example.answer)

    def details(self, text: str, example) -> dict:
        """What the math suite records of one response besides its score: whether a number was found, and which."""
        v = verify(text, example.answer)
        return {"no_answer": v.no_answer, "extracted": v.extracted}
