"""Rewards a task file names: Python functions with TRL's `reward_funcs` signature, the built-in verifiers and a
format reward, several at once with weights (TRL's `reward_weights`). All are one `FunctionReward`, a task reward
(harness.core.examples.TaskReward) the backbone treats as it treats a checker: scale, missing-EOS rule and the
reward-calls counter are the backbone's.

A reward function is called once per batch, as TRL's GRPOTrainer calls it:

    f(prompts=[...], completions=[...], completion_ids=None, **columns) -> list[float | None]

`prompts` are the dataset's prompts (strings, or message lists for conversational rows), `completions` the sampled
responses (strings, or [{"role": "assistant", "content": text}] for conversational rows), and every other column
of the rows is a keyword argument holding one value per completion. `None` means "not applicable": the weighted sum
skips it (TRL's nansum); a completion every function skips scores 0 (TRL 1.16 instead leaves it out of its group's
baseline, which only group-normalising optimizers can do). TRL's `trainer_state`, `log_extra` and `log_metric`
keyword arguments are not passed: write functions that take `**kwargs`, as TRL's documentation does.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.core.errors import UserError

VERIFIERS = ("gsm8k", "math")


class RewardFunctionError(UserError):
    """A reward function raised or returned something that is not one number (or None) per completion."""


@dataclass(frozen=True)
class Term:
    name: str  # as the task file names it: "file.py:func", "module:func", "verifier gsm8k", "format"
    fn: Callable
    weight: float = 1.0
    source: str = ""  # the code that computes it (a fingerprint of the run's reward)


def load_function(spec: str, base: Path | None = None, where: str = "reward") -> tuple[Callable, str]:
    """(the function, its source file's text) of "path/to/file.py:name" (relative to `base`) or "module:name"."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise UserError(f"{where}: a reward function is named 'path/to/file.py:function' or 'module:function', got "
                        f"{spec!r}")
    target, name = spec.split(":")
    if target.endswith(".py"):
        path = Path(target) if base is None or Path(target).is_absolute() else base / target
        if not path.is_file():
            raise UserError(f"{where}: reward file {path} does not exist (paths are relative to the task file)")
        module_name = f"harness_reward_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
        spec_ = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_)
        try:
            spec_.loader.exec_module(module)
        except Exception as e:
            raise UserError(f"{where}: importing {path} failed: {type(e).__name__}: {e}") from None
        sys.modules[module_name] = module  # pickling and tracebacks find it
    else:
        if base is not None and str(base) not in sys.path:
            sys.path.append(str(base))  # a module beside the task file imports without an install
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise UserError(f"{where}: cannot import module {target!r} ({type(e).__name__}: {e}); install it or name "
                            f"a file: 'path/to/file.py:{name}'") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise UserError(f"{where}: {target} has no function {name!r}; its functions: {', '.join(found) or 'none'}")
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = spec
    return fn, source


def gsm8k_reward(prompts, completions, answer, **_) -> list[float]:
    """The GSM8K exact-match checker (harness.tasks.verifier) against an `answer` column: a number, or a GSM8K
    solution ending in '#### N'."""
    from harness.tasks.verifier import check, parse_gold

    return [check(_content(c), a if isinstance(a, (int, float)) else parse_gold(str(a)))
            for c, a in zip(completions, answer)]


def math_reward(prompts, completions, answer, **_) -> list[float]:
    """Answer equivalence through math-verify (harness.tasks.math_answers) against an `answer` column."""
    from harness.tasks.math_answers import verify_answer

    return [float(bool(getattr(v, "correct", v))) for v in
            (verify_answer(_content(c), str(a)) for c, a in zip(completions, answer))]


def format_reward(pattern: str, where: str = "reward") -> Callable:
    """1.0 when the completion matches the regular expression (re.search, DOTALL: anchor with ^ and $), else 0.0."""
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise UserError(f"{where}: format {pattern!r} is not a valid regular expression ({e})") from None

    def score(prompts, completions, **_):
        return [1.0 if compiled.search(_content(c)) else 0.0 for c in completions]

    return score


def _content(completion) -> str:
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def _renamed(fn: Callable, column: str) -> Callable:
    """A verifier that reads its ground truth from `column` (its own keyword is `answer`)."""
    if column == "answer":
        return fn

    def call(prompts, completions, **columns):
        if column not in columns:
            raise ValueError(f"the rows have no {column!r} column (the verifier's ground truth)")
        return fn(prompts, completions, answer=columns[column])

    return call


def make_terms(specs: list[dict], base: Path | None, where: str) -> list[Term]:
    """The reward terms of a task file's `reward` list (validated by its schema)."""
    terms = []
    for i, spec in enumerate(specs):
        at = f"{where}: reward[{i}]"
        weight = float(spec.get("weight", 1.0))
        if spec.get("function"):
            fn, source = load_function(spec["function"], base, at)
            terms.append(Term(spec["function"], fn, weight, source))
        elif spec.get("verifier"):
            kind = spec["verifier"]
            fn = {"gsm8k": gsm8k_reward, "math": math_reward}[kind]
            column = spec.get("answer") or "answer"
            terms.append(Term(f"verifier {kind} ({column})", _renamed(fn, column), weight, f"{kind}:{column}"))
        else:
            terms.append(Term("format", format_reward(spec["format"], at), weight, f"format:{spec['format']}"))
    return terms


@dataclass
class FunctionReward:
    """Weighted reward terms as a task reward: `scores(texts, examples)` calls every term once per batch."""

    terms: list[Term]
    unscored: int = 0  # completions every term returned None for (scored 0)
    calls: int = 0
    fingerprint: str = field(init=False)

    def __post_init__(self):
        self.fingerprint = hashlib.sha256("\n".join(f"{t.name}|{t.weight}|{t.source}" for t in self.terms)
                                          .encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return " + ".join(t.name if t.weight == 1 else f"{t.weight:g} x {t.name}" for t in self.terms)

    def __call__(self, text: str, example) -> float:
        return self.scores([text], [example])[0]

    def scores(self, texts: list[str], examples: list) -> list[float]:
        prompts = [getattr(ex, "prompt_value", None) or ex.prompt for ex in examples]
        completions = [[{"role": "assistant", "content": t}] if getattr(ex, "conversational", False) else t
                       for t, ex in zip(texts, examples)]
        keys = dict.fromkeys(k for ex in examples for k in getattr(ex, "columns", {}))
        columns = {k: [getattr(ex, "columns", {}).get(k) for ex in examples] for k in keys}
        total = [0.0] * len(texts)
        seen = [False] * len(texts)
        for term in self.terms:
            values = self._call(term, prompts, completions, columns)
            for i, v in enumerate(values):
                if v is not None:
                    total[i] += term.weight * v
                    seen[i] = True
        self.calls += 1
        self.unscored += seen.count(False)
        return total

    @staticmethod
    def _call(term: Term, prompts, completions, columns) -> list:
        n = len(completions)
        try:
            out = term.fn(prompts=prompts, completions=completions, completion_ids=None, **columns)
        except Exception as e:
            raise RewardFunctionError(f"reward function {term.name} raised {type(e).__name__}: {e} (on a batch of "
                                      f"{n} completions; first prompt {str(prompts[0])[:80]!r}); fix it and rerun") \
                from e
        try:
            out = list(out)
        except TypeError:
            raise RewardFunctionError(f"reward function {term.name} returned {type(out).__name__}; it must return a "
                                      f"list with one number (or None) per completion") from None
        if len(out) != n:
            raise RewardFunctionError(f"reward function {term.name} returned {len(out)} values for {n} completions; "
                                      f"return one number (or None) per completion")
        for i, v in enumerate(out):
            if v is None:
                continue
            if not isinstance(v, numbers.Real):
                raise RewardFunctionError(f"reward function {term.name} returned {v!r} ({type(v).__name__}) for "
                                          f"completion {i}; return a number or None")
            if not math.isfinite(float(v)):
                raise RewardFunctionError(f"reward function {term.name} returned {float(v)} for completion {i} "
                                          f"(prompt {str(prompts[i])[:80]!r}); return a finite number, or None "
                                          f"where it does not apply")
        return [None if v is None else float(v) for v in out]
