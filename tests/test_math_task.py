"""The math task: math-verify's verdicts on hand-checked answers, MATH's boxed answers, every row layout and source
(hub through a stand-in loader, local files, the hand-written fixture), its bad inputs, and a run end to end."""
import json
import math
import threading

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.core.store import read_jsonl
from harness.tasks import math_answers, math_problems
from harness.tasks.math_answers import MathVerifier, verify_answer
from harness.tasks.math_problems import FIXTURE_DIR, MathExample, last_boxed, load_math
from tests.test_arith_run import MATH_KEYS, _sets

FIXTURE_ROWS = [json.loads(line) for line in (FIXTURE_DIR / "train.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("response,gold,correct", [
    (r"so $x = \boxed{0.5}$", r"\frac{1}{2}", 1.0),  # a decimal against a fraction
    (r"The answer is $\boxed{\frac{1}{2}}$.", "0.5", 1.0),  # a plain gold parses too (it is boxed first)
    ("The answer is 1/2", r"\frac{1}{2}", 1.0),  # no LaTeX at all: the last plain expression
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),  # equal after simplification
    (r"the interval is $[1, 3)$", "[1,3)", 1.0),
    (r"\boxed{(1,3)}", "[1,3)", 0.0),  # an open end is not a closed one
    (r"\boxed{(-1,5]}", "[-1, 5]", 0.0),
    (r"\boxed{3, 2}", "2, 3", 1.0),  # "enter the solutions separated by commas": a set
    (r"\boxed{\left( 4, \frac{3\pi}{2} \right)}", r"\left( 4, \frac{3 \pi}{2} \right)", 1.0),
    (r"\boxed{(4, \pi)}", r"\left( 4, \frac{3 \pi}{2} \right)", 0.0),
    (r"\boxed{(x+2)(x+5)}", "x^2 + 7x + 10", 1.0),
    (r"\boxed{\text{Alice}}", r"\text{Alice}", 1.0),
    (r"\boxed{\text{Bob}}", r"\text{Alice}", 0.0),
    (r"\boxed{7}", "-7", 0.0),  # a wrong answer
    (r"\boxed{0.50001}", "0.5", 0.0),
    (r"First \boxed{3}, no: \boxed{4}", "4", 0.0),  # every boxed answer is read, together: {3, 4} is not 4
])
def test_math_verify_verdicts_on_hand_checked_answers(response, gold, correct):
    v = verify_answer(response, gold)
    assert v.correct == correct and not v.no_answer and v.extracted


def test_no_answer_and_what_was_extracted():
    for text in ("I do not know.", "", "   "):
        assert verify_answer(text, "8") == math_answers.MathVerdict(correct=0.0, no_answer=True, extracted=None)
    assert verify_answer(r"so $\boxed{7}$", "8").extracted == "7"
    with pytest.raises(UserError, match="cannot read the gold answer"):  # a gold that parses to nothing
        verify_answer("7", r"\boxed{}")


def test_the_timeout_is_used_in_the_main_thread_only():
    """math-verify's signal-based timeout raises in any other thread; the wrapper turns it off there."""
    import math_verify

    out, errors = {}, []

    def work():
        out["timeout"] = math_answers._timeout(5)
        out["verdict"] = verify_answer(r"we get \boxed{\frac{6}{4}}", "1.5")  # not cached by another test
        try:
            math_verify.parse(r"\boxed{2}", parsing_timeout=5)
        except ValueError as e:  # what the wrapper avoids
            errors.append(str(e))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert out["timeout"] is None and out["verdict"].correct == 1.0
    assert errors and "thread" in errors[0]
    assert math_answers._timeout(5) == 5 and math_answers._timeout(None) is None


def test_verifier_is_a_task_reward():
    ex = MathExample(text="Question: q\nAnswer:", question="q", answer=r"\frac{2}{3}")
    verifier = MathVerifier()
    assert verifier(r" so \boxed{\frac{4}{6}}", ex) == 1.0 and verifier(r" so \boxed{\frac{3}{4}}", ex) == 0.0
    assert verifier.details(r"\boxed{0.75}", ex) == {"no_answer": False, "extracted": "0.75"}
    assert verifier.details("no idea", ex) == {"no_answer": True, "extracted": None}
    assert ex.record() == {"answer": r"\frac{2}{3}"} and ex.problem == "q"
    with pytest.raises(ValueError, match="Example.answer"):
        verifier("1", MathExample(question="q"))


def test_a_missing_library_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "math_verify", None)  # `import math_verify` then raises ImportError
    with pytest.raises(UserError, match=r'pip install "math-verify\[antlr4_13_2\]"'):
        math_answers._math_verify()
    from harness.app.config import resolve

    with pytest.raises(UserError, match="needs the math-verify library"):  # before any model loads
        resolve("arith", {"task": {"name": "math", "source": "fixture"}})


def test_last_boxed_answer_with_nested_braces():
    assert last_boxed(r"so $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert last_boxed(r"a \boxed{x^{2}+1} b \boxed{\left( 3, \frac{\pi}{2} \right)} c") == \
        r"\left( 3, \frac{\pi}{2} \right)"
    assert last_boxed(r"\boxed{1} then \fbox{\{1,2\}}") == r"\{1,2\}"  # \fbox too; escaped braces pair up
    assert last_boxed(r"the answer is $\boxed 5$.") == "5"  # MATH's brace-less form
    assert last_boxed(r"\boxed{\frac{1}{2}") is None and last_boxed("no box") is None


def test_the_fixture_rows_are_in_the_real_layouts_and_their_references_verify():
    data = load_math("fixture")
    assert (len(data.sft_train), len(data.sft_eval), len(data.sft_test)) == (20, 2, 10)  # 22 rows: 2 held out
    assert set(FIXTURE_ROWS[0]) == {"problem", "solution", "answer", "subject", "level", "unique_id"}  # MATH-500
    for row in FIXTURE_ROWS:
        assert last_boxed(row["solution"]) == row["answer"]  # the answer column is the solution's boxed answer
    for ex in data.sft_train + data.sft_eval + data.sft_test:
        assert data.reward(ex.reference, ex) == 1.0
        assert ex.text == f"Question: {ex.question}\nAnswer:" and "\\boxed{}" in ex.messages[0]["content"]
    # every reference is right for its own problem only
    answers = {ex.answer for ex in data.sft_test}
    assert len(answers) == len(data.sft_test)
    assert all(data.reward(a.reference, b) == 0.0 for a in data.sft_test for b in data.sft_test if a is not b)
    deepscaler = json.loads((FIXTURE_DIR / "deepscaler" / "deepscaler.json").read_text())
    assert all(set(r) == {"problem", "answer", "solution"} for r in deepscaler)


def _write(path, rows, kind):
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "csv"])
def test_local_files_of_each_format(tmp_path, kind):
    data = load_math(str(_write(tmp_path / f"rows.{kind}", FIXTURE_ROWS[:10], kind)))
    assert [ex.answer for ex in data.sft_train + data.sft_eval] == [r["answer"] for r in FIXTURE_ROWS[:10]]
    assert len(data.sft_eval) == 1 and data.sft_test == [] and data.test_note  # one split: no test split


def test_directories_and_the_layouts(tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    _write(both / "train.jsonl", FIXTURE_ROWS, "jsonl")
    _write(both / "test.parquet", FIXTURE_ROWS[:3], "parquet")
    data = load_math(str(both))
    assert (len(data.sft_train), len(data.sft_eval), len(data.sft_test)) == (20, 2, 3)
    only_test = tmp_path / "math500"  # MATH-500's repository: test.jsonl alone is the one split
    only_test.mkdir()
    _write(only_test / "test.jsonl", FIXTURE_ROWS, "jsonl")
    data = load_math(str(only_test), n_eval=4)
    assert (len(data.sft_train), len(data.sft_eval), data.sft_test) == (18, 4, [])
    # DeepScaleR's repository: one deepscaler.json; its answer column wins, a solution without a box gets one
    data = load_math(str(FIXTURE_DIR / "deepscaler"), n_eval=1)
    rows = json.loads((FIXTURE_DIR / "deepscaler" / "deepscaler.json").read_text())
    examples = data.sft_train + data.sft_eval
    assert [ex.answer for ex in examples] == [r["answer"] for r in rows]
    assert "\\boxed" not in rows[0]["solution"]
    assert examples[0].reference == f" {rows[0]['solution']} The answer is $\\boxed{{25}}$."
    assert examples[1].reference == " " + rows[1]["solution"]
    assert all(data.reward(ex.reference, ex) == 1.0 for ex in examples)
    answer_only = _write(tmp_path / "answers.jsonl", [{"problem": f"What is {i} + {i}?", "answer": 2 * i}
                                                      for i in range(4)], "jsonl")
    ex = load_math(str(answer_only)).sft_train[1]
    assert ex.answer == "2" and ex.reference == r" The answer is $\boxed{2}$."  # numbers read as strings


def test_hub_splits_and_assets():
    asked = []

    def load(name, split):
        asked.append((name, split))
        return FIXTURE_ROWS[:5] if split == "test" else FIXTURE_ROWS

    data = load_math("hub", load=load)
    assert asked == [("HuggingFaceH4/MATH-500", "test")] and len(data.sft_train) == 4 and not data.sft_test
    asked.clear()
    data = load_math("hub", "org/math-like", load=load)
    assert asked == [("org/math-like", "train"), ("org/math-like", "test")] and len(data.sft_test) == 5
    asked.clear()
    load_math("hub", "agentica-org/DeepScaleR-Preview-Dataset", load=load)
    load_math("hub", "org/math-like:validation", load=load)
    assert asked == [("agentica-org/DeepScaleR-Preview-Dataset", "train"), ("org/math-like", "validation")]
    assets = math_problems.hub_assets("org/math-like:train,test")
    assert [(a.kind, a.name, a.splits) for a in assets] == [("dataset", "org/math-like", ("train", "test"))]
    with pytest.raises(UserError, match="NAME:TRAIN_SPLIT,test"):
        math_problems.parse_dataset("org/x:a,b")
    bad = [{"problem": "p", "solution": "no box"}]
    with pytest.raises(UserError, match=r"org/x\[train\] row 0: the solution has no \\boxed"):
        load_math("hub", "org/x:train", load=lambda name, split: bad)


@pytest.mark.parametrize("row,message", [
    ({"question": "What is 1 + 1?", "answer": "2"}, r"a math row needs a non-empty 'problem' string \(columns "
                                                    r"found: answer, question\)"),
    ({"problem": "p", "solution": "It is 2."}, r"the solution has no \\boxed\{\.\.\.\} answer and the row no 'answer'"),
    ({"problem": "p", "solution": r"so \boxed{2"}, r"the solution has no \\boxed"),  # never closed
    ({"problem": "p"}, r"a math row needs an 'answer' or a 'solution'"),
    ({"problem": "p", "answer": "  "}, r"a math row needs an 'answer' or a 'solution'"),
    (["p", "2"], r"a math row must be an object"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    path = _write(tmp_path / "rows.jsonl", FIXTURE_ROWS[:3] + [row], "jsonl")
    with pytest.raises(UserError, match=r"rows\.jsonl:4: " + message):  # after three good rows
        load_math(str(path))


def test_empty_and_too_small_files(tmp_path):
    with pytest.raises(UserError, match=r"rows\.jsonl has no rows"):
        load_math(str(_write(tmp_path / "rows.jsonl", [], "jsonl")))
    with pytest.raises(UserError, match=r"need 0 < n_eval < 1 \(the training rows\)"):  # nothing left to train on
        load_math(str(_write(tmp_path / "one.jsonl", FIXTURE_ROWS[:1], "jsonl")))


def test_bad_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "b.json").write_text("[]", encoding="utf-8")
    with pytest.raises(UserError, match="has no math train/test files.*found a.jsonl, b.json"):
        load_math(str(tmp_path))
    with pytest.raises(UserError, match="got 'nowhere'"):
        load_math("nowhere")
    (tmp_path / "rows.txt").write_text("problem,answer\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"\.jsonl, \.json, \.parquet or \.csv"):
        load_math(str(tmp_path / "rows.txt"))


def test_the_task_is_registered_and_listed(capsys):
    from harness import tasks

    task = tasks.get("math")
    assert task.checker and task.suite == "math" and task.preset == "arith" and not task.offline_fallback
    assert task.present("fixture") and "fixture" in task.offline_sources
    source, data = tasks.load("math", "fixture")
    assert source == "fixture" and isinstance(data.reward, MathVerifier) and data.gold is None
    with pytest.raises(UserError, match="--task arith"):
        tasks.load("math", "synthetic")  # the arith preset's source, when --source is not given
    settings = type("S", (), {"source": "auto", "dataset": None})
    assert [a.name for a in task.hub_data(settings)] == ["HuggingFaceH4/MATH-500"]
    settings.source = "fixture"
    assert task.hub_data(settings) == []
    with pytest.raises(SystemExit):
        main(["list"])
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert any(words[:1] == ["math"] and "math-verify" in " ".join(words) for words in listed)


@pytest.fixture(scope="module")
def math_run(harness_cache, tmp_path_factory):
    """A 1-iteration GRPO run on the fixture through the command line (the arith preset, its test-size model; few
    prompts: the CPU time goes to sampling)."""
    out = tmp_path_factory.mktemp("math-runs")
    with pytest.raises(SystemExit) as done:
        main(["run", "--algo", "grpo", "--task", "math", "--source", "fixture", "--iterations", "1", "-o", str(out),
              "--run-id", "m", *_sets(harness_cache), "--set", "train.prompts_per_iteration=4"])
    assert done.value.code in (0, None)
    return out / "m"


def test_a_run_on_the_fixture_reports_pass_at_k_recounted_from_its_samples(math_run):
    summary = json.loads((math_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == "math" and summary["data_source"] == "fixture"
    evaluation = json.loads((math_run / "evals" / "math.json").read_text())
    assert evaluation == summary["eval"] and MATH_KEYS <= set(evaluation)
    assert evaluation["n"] == 8 and evaluation["samples_per_problem"] == 8
    samples, problems = read_jsonl(math_run / "samples.jsonl")
    assert not problems
    test_answers = {r["answer"] for r in map(json.loads, (FIXTURE_DIR / "test.jsonl").read_text().splitlines())}
    assert {s["answer"] for s in samples} <= test_answers  # evaluated on the fixture's test split
    sampled, greedy = [s for s in samples if s["sample"] != "greedy"], [s for s in samples if s["sample"] == "greedy"]
    assert len(sampled) == 64 and len(greedy) == 8
    # each recorded verdict is math-verify's on the recorded response (a response that never ended is wrong)
    for s in samples:
        v = verify_answer(s["response"], s["answer"])
        assert s["correct"] == (v.correct if s["eos"] else 0.0) and s["extracted"] == v.extracted
        if s["sample"] != "greedy":
            assert s["no_answer"] == v.no_answer
    correct = [sum(s["correct"] for s in sampled[i:i + 8]) for i in range(0, 64, 8)]
    for k in (1, 4, 8):
        by_hand = sum(1 - math.comb(8 - int(c), k) / math.comb(8, k) for c in correct) / len(correct)
        assert 0.0 <= evaluation[f"pass@{k}"] <= 1.0 and evaluation[f"pass@{k}"] == pytest.approx(by_hand, abs=1e-12)
    assert evaluation["greedy_pass@1"] == pytest.approx(sum(g["correct"] for g in greedy) / 8)
    assert evaluation["no_answer_frac"] == pytest.approx(sum(s["no_answer"] for s in sampled) / 64)
    assert 0.0 <= summary["sft"]["pass@1"] <= 1.0
    assert summary["budget"]["rm_queries"] == 4 * 4  # checker calls: 4 prompts x GRPO's 4 samples
