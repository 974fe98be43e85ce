"""Offline GSM8K stand-in: seeded, deterministic arithmetic word problems with GSM8K-style worked solutions.

A problem follows one person's pile of one kind of item through 1-3 operations among + - * and exact division,
with small integers (every operand, intermediate value and the answer is an integer in [2, max_value], so every
count is plural):

    Question: Tom likes to collect shells. Tom has 12 shells. He gives 5 shells to Ann. Then he ends up with 3
    times as many shells as before. How many shells does Tom have now?
    Answer: Tom has 12 shells.
    He gives 5 to Ann, so he has 12 - 5 = 7 shells.
    He ends up with 7 * 3 = 21 shells.
    #### 21

The vocabulary is small and regular (a few names, items and sentence frames) so that a ~1M-parameter model with a
locally trained BPE tokenizer can learn it. The difficulty knob is `mix`: how often a problem has 1, 2 or 3
operations. A problem is also a row of the hub's openai/gsm8k "main" schema ({"question", "answer"}; see
`Problem.row`), so the stand-in and the real data go through the same loader (harness.tasks.gsm8k).

An Example carries the problem three ways: `text` ("Question: ...\nAnswer:", for tokenizers without a
chat template, such as the tiny model's), `messages` (one user turn: the question and INSTRUCTION, for a chat
model's template) and `answer` (the integer the checker, harness.tasks.verifier.Checker, compares with).
`ArithData` also keeps the problems aligned index by index with the TaskData splits.

The task is registered as `arith` (source "synthetic"; `auto` means the same: it is generated offline).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from harness.core.errors import UserError
from harness.core.examples import Example, TaskData
from harness.tasks import Task, register
from harness.tasks.verifier import Checker, ProblemExample

VERSION = 1  # bump when generated data change
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
INSTRUCTION = "Solve it step by step and give the final answer on a last line as '#### <number>'."
OPS = ("+", "-", "*", "/")
DEFAULT_MIX = {1: 1.0, 2: 1.0, 3: 1.0}  # relative weights of 1, 2 and 3 operations
DEFAULT_MAX_VALUE = 100
# Insertion order fixes each split's generator seed offset (0, 1, 2): append new splits, never reorder.
SIZES = {"sft_train": 20000, "sft_eval": 500, "sft_test": 1000}

NAMES = {"Tom": "he", "Sam": "he", "Ben": "he", "Max": "he", "Ann": "she", "Mia": "she", "Lily": "she", "Eva": "she"}
POSSESSIVE = {"he": "his", "she": "her"}
ITEMS = ("apples", "pens", "books", "cards", "eggs", "coins", "shells", "stickers")
CONTAINERS = ("bags", "boxes", "jars")
CONTEXT = ("{N} likes to collect {items}.", "{N} and {F} are friends.", "{N} is at the park with {F}.",
           "{N} keeps {poss} {items} at home.")


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, its worked solution (ending in "#### answer") and the integer answer."""

    id: str
    question: str
    solution: str
    answer: int
    ops: tuple[str, ...] = ()  # the operations in order ("+", "-", "*", "/"); empty for real GSM8K rows

    @property
    def n_ops(self) -> int:
        return len(self.ops)

    @property
    def row(self) -> dict:
        """The problem in the hub's openai/gsm8k "main" schema."""
        return {"question": self.question, "answer": self.solution}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _normalise_mix(mix) -> list[tuple[int, float]]:
    """`mix` as [(n_ops, weight)]: an int (every problem has that many operations) or {n_ops: weight}."""
    if isinstance(mix, int) and not isinstance(mix, bool):
        mix = {mix: 1.0}
    if not isinstance(mix, dict) or not mix:
        raise UserError(f"the arithmetic task's mix must be 1, 2, 3 or a mapping {{n_ops: weight}}, got {mix!r}")
    out = []
    for k, w in sorted(mix.items()):
        k = int(k)
        if k not in (1, 2, 3) or not isinstance(w, (int, float)) or w < 0:
            raise UserError(f"the arithmetic task's mix maps 1, 2 or 3 operations to a weight >= 0, got {mix!r}")
        if w > 0:
            out.append((k, float(w)))
    if not out:
        raise UserError(f"the arithmetic task's mix has no positive weight: {mix!r}")
    return out


def _step(rng: random.Random, op: str, v: int, p: str, friend: str, items: str, max_value: int, last: bool):
    """(question sentence, solution line, new value) of one operation on the running value v, or None when the
    operation cannot keep every value an integer in [2, max_value] (no "1 apples": every count is plural)."""
    P, poss = _cap(p), POSSESSIVE[p]
    if op == "+":
        if v > max_value - 2:
            return None
        b = rng.randint(2, min(20, max_value - v))
        verb = rng.choice(("buys", "finds"))
        return (f"{P} {verb} {b} more {items}.", f"{P} {verb} {b} more, so {p} has {v} + {b} = {v + b} {items}.",
                v + b)
    if op == "-":
        if v < 4:
            return None
        b = rng.randint(2, v - 2)
        if rng.random() < 0.5:
            return f"{P} gives {b} {items} to {friend}.", f"{P} gives {b} to {friend}, so {p} has {v} - {b} = " \
                   f"{v - b} {items}.", v - b
        verb = rng.choice(("sells", "loses"))
        return f"{P} {verb} {b} {items}.", f"{P} {verb} {b}, so {p} has {v} - {b} = {v - b} {items}.", v - b
    if op == "*":
        ks = [k for k in (2, 3, 4) if v * k <= max_value]
        if not ks:
            return None
        k = rng.choice(ks)
        return (f"Then {p} ends up with {k} times as many {items} as before.",
                f"{P} ends up with {v} * {k} = {v * k} {items}.", v * k)
    ks = [k for k in (2, 3, 4, 5) if v % k == 0 and v // k >= 2]
    if not ks:
        return None
    k = rng.choice(ks)
    if last and rng.random() < 0.5:  # the question then asks for one share, not for what is left
        return (f"Then {p} shares {poss} {items} equally among {k} friends.",
                f"Each friend gets {v} / {k} = {v // k} {items}.", v // k)
    return (f"Then {p} puts {poss} {items} into {k} equal groups and keeps one group.",
            f"{P} keeps {v} / {k} = {v // k} {items}.", v // k)


def make_problem(rng: random.Random, n_ops: int, ops: tuple[str, ...] = OPS, max_value: int = DEFAULT_MAX_VALUE,
                 id: str = "") -> Problem:
    """One problem with exactly `n_ops` operations drawn from `ops` (each one feasible for the running value)."""
    for _ in range(10000):
        problem = _attempt(rng, n_ops, ops, max_value, id)
        if problem is not None:
            return problem
    raise UserError(f"no arithmetic problem with {n_ops} operations among {' '.join(ops)} keeps its values in "
                    f"[2, {max_value}]; allow more operations or raise max_value")


def _attempt(rng: random.Random, n_ops: int, ops: tuple[str, ...], max_value: int, id: str) -> Problem | None:
    """A problem, or None when the running value reaches one that no allowed operation fits (then draw again)."""
    name = rng.choice(sorted(NAMES))
    p = NAMES[name]
    friend = rng.choice([n for n in sorted(NAMES) if n != name])
    items = rng.choice(ITEMS)
    question = [rng.choice(CONTEXT).format(N=name, F=friend, items=items, poss=POSSESSIVE[p])]
    solution, used = [], []
    if "*" in ops and rng.random() < 0.3:  # the first operation can be in the opening: bags of items
        a, b = rng.randint(2, 6), rng.randint(2, 9)
        box = rng.choice(CONTAINERS)
        question.append(f"{name} has {a} {box} with {b} {items} in each.")
        solution.append(f"{name} has {a} * {b} = {a * b} {items}.")
        v, used = a * b, ["*"]
    else:
        v = rng.randint(2, 20)
        question.append(f"{name} has {v} {items}.")
        solution.append(f"{name} has {v} {items}.")
    share = False
    while len(used) < n_ops:
        last = len(used) == n_ops - 1
        choices = list(ops)
        rng.shuffle(choices)
        for op in choices:
            step = _step(rng, op, v, p, friend, items, max_value, last)
            if step is not None:
                break
        else:  # no operation fits (cannot happen with "+" and "-" allowed)
            return None
        q, s, v = step
        question.append(q)
        solution.append(s)
        used.append(op)
        share = s.startswith("Each friend")
    question.append(f"How many {items} does each friend get?" if share else f"How many {items} does {name} have now?")
    solution.append(f"#### {v}")
    return Problem(id=id, question=" ".join(question), solution="\n".join(solution), answer=v, ops=tuple(used))


def generate(n: int, seed: int, mix=None, ops: tuple[str, ...] = OPS, max_value: int = DEFAULT_MAX_VALUE,
             exclude: set[str] | frozenset = frozenset()) -> list[Problem]:
    """n distinct problems (no question repeats, none in `exclude`), the same for the same arguments."""
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise UserError(f"the arithmetic task's operations are a non-empty subset of {' '.join(OPS)}, got {ops!r}")
    if max_value < 22:
        raise UserError(f"the arithmetic task's max_value must be at least 22 (starting piles go up to 20), got "
                        f"{max_value}")
    counts, weights = zip(*_normalise_mix(DEFAULT_MIX if mix is None else mix))
    rng = random.Random(seed)
    out, seen, tries = [], set(exclude), 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise UserError(f"could not generate {n} distinct arithmetic problems with mix={mix!r}, ops={ops!r}; "
                            f"ask for fewer or allow more operations")
        k = rng.choices(counts, weights)[0]
        prob = make_problem(rng, k, tuple(ops), max_value, id=f"arith-{seed}-{len(out)}")
        if prob.question not in seen:
            seen.add(prob.question)
            out.append(prob)
    return out


def format_prompt(question: str) -> str:
    """The plain-text prompt: "Question: ...\\nAnswer:" (the reference solution then follows after a space)."""
    return PROMPT_TEMPLATE.format(question=question)


def to_example(problem: Problem) -> Example:
    """An Example of the harness: the plain prompt, the chat turn (question + INSTRUCTION; the tokenizer's chat
    template renders it when it has one, Example.encode_prompt), the integer answer, the question, and the solution
    as the reference (" " + text, no EOS, as every harness response is held)."""
    turn = {"role": "user", "content": f"{problem.question}\n{INSTRUCTION}"}
    return ProblemExample(text=format_prompt(problem.question), messages=[turn], reference=" " + problem.solution,
                          question=problem.question, answer=problem.answer)


@dataclass
class ArithData:
    """A TaskData plus its problems: `problems[split][i]` is the Problem of `getattr(task, split)[i]`."""

    task: TaskData
    problems: dict[str, list[Problem]]
    _by_question: dict[str, int] | None = field(default=None, repr=False)

    def answer_of(self, example: Example) -> int:
        """The ground-truth integer of an Example of any split (looked up by its question text)."""
        if self._by_question is None:
            table: dict[str, int] = {}
            for probs in self.problems.values():
                for p in probs:
                    if table.setdefault(p.question, p.answer) != p.answer:
                        raise UserError(f"the question {p.question[:60]!r}... appears twice with different answers")
            self._by_question = table
        if example.answer is not None:
            return example.answer
        question = example.question
        try:
            return self._by_question[question]
        except KeyError:
            raise KeyError(f"no problem with the question {question[:60]!r}...") from None

    def answers(self, split: str) -> list[int]:
        """The ground-truth integers of one split, aligned with its examples."""
        return [p.answer for p in self.problems[split]]


def task_from_problems(source: str, problems: dict[str, list[Problem]]) -> ArithData:
    """ArithData of per-split problems ("sft_train", "sft_eval", optional "sft_test"), scored by the exact-match
    checker. No preference pairs: offline DPO's come from SFT samples labelled by the checker (tasks/checked_pairs)."""
    splits = {k: [to_example(p) for p in v] for k, v in problems.items()}
    task = TaskData(source=source, sft_train=splits["sft_train"], sft_eval=splits["sft_eval"], pref_train=[],
                    pref_eval=[], sft_test=splits.get("sft_test", []), reward=Checker())
    return ArithData(task=task, problems=problems)


def splits(sizes: dict[str, int] | None = None, seed: int = 0, mix=None, ops: tuple[str, ...] = OPS,
           max_value: int = DEFAULT_MAX_VALUE) -> dict[str, list[Problem]]:
    """Problems of each split (default SIZES); split i is generated with seed + i (SIZES order) and never repeats
    a question of an earlier split, so the test set is disjoint from the training set."""
    sizes = dict(SIZES) if sizes is None else sizes
    order = [s for s in SIZES if s in sizes] + [s for s in sizes if s not in SIZES]
    out, seen = {}, set()
    for i, split in enumerate(order):
        out[split] = generate(sizes[split], seed + i, mix, ops, max_value, exclude=frozenset(seen))
        seen.update(p.question for p in out[split])
    return out


def load_arith(sizes: dict[str, int] | None = None, seed: int = 0, mix=None, ops: tuple[str, ...] = OPS,
               max_value: int = DEFAULT_MAX_VALUE) -> ArithData:
    """The stand-in as ArithData: train / eval / test Examples with their answers (see `splits`)."""
    return task_from_problems(SOURCE, splits(sizes, seed, mix, ops, max_value))


SOURCE = "synthetic-arith"
_CACHE: dict[str, ArithData] = {}  # the default stand-in, generated once per process (runs, builds, evaluations)


def standard() -> ArithData:
    """The task's data: the default SIZES, seed 0, DEFAULT_MIX, every operation (what the tiny arith model is built
    on and every `--task arith` run trains and evaluates on)."""
    if "default" not in _CACHE:
        _CACHE["default"] = load_arith()
    return _CACHE["default"]


def _load(source: str, dataset: str | None = None, preference_dataset: str | None = None) -> tuple[str, TaskData]:
    if source not in ("synthetic", "auto", SOURCE):
        raise UserError(f"the arith task is generated offline: task.source must be synthetic, got {source!r} (real "
                        f"GSM8K rows: --task gsm8k --source hub|DIR)")
    return SOURCE, replace(standard().task)  # a copy: a run may set its pref_train (checked_pairs)


register(Task("arith", "GSM8K-style arithmetic word problems generated offline, scored by an exact-match checker",
              _load, preset="arith", checker=True, suite="math", offline_sources=("synthetic", "auto", SOURCE)))
