"""The arithmetic task's pure parts: the GSM8K stand-in generator, the answer checker, GSM8K rows, pass@k."""
import itertools
import json
import math
import random

import pytest

from evals.pass_at_k import mean_pass_at_k, pass_at_k, summary
from harness.core.errors import UserError
from harness.tasks import arith, gsm8k
from harness.core.examples import Example, TaskData
from harness.tasks.verifier import Checker, check, extract_answer, no_answer, verify

# Rows written by hand in the exact openai/gsm8k "main" schema: the hub's train rows 0 and 1, and a made-up one
# with a thousands separator in the question and a 4-digit answer.
GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How "
                 "much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
    {"question": "A farm has 1,200 hens and each lays 2 eggs a day. How many eggs are laid in a day?",
     "answer": "The hens lay 1,200 * 2 = <<1200*2=2400>>2400 eggs a day.\n#### 2400"},
]


def test_generator_is_deterministic_and_seeds_differ():
    a, b = arith.generate(200, seed=3), arith.generate(200, seed=3)
    assert a == b
    assert [p.question for p in a] != [p.question for p in arith.generate(200, seed=4)]
    assert len({p.question for p in a}) == 200  # no repeats


def test_generated_solutions_verify_and_follow_the_rules():
    probs = arith.generate(600, seed=0, mix={1: 1, 2: 1, 3: 1})
    assert all(check(p.solution, p.answer) == 1.0 for p in probs)
    assert {p.n_ops for p in probs} == {1, 2, 3} and {o for p in probs for o in p.ops} == set(arith.OPS)
    for p in probs:
        assert isinstance(p.answer, int) and 2 <= p.answer <= arith.DEFAULT_MAX_VALUE
        assert p.solution.endswith(f"\n#### {p.answer}")
        assert sum("=" in line for line in p.solution.split("\n")) == p.n_ops  # one worked line per operation
        assert gsm8k.parse_gold(p.solution) == p.answer and 15 <= len(p.question.split()) <= 70
        # every step's arithmetic is right: "x op y = z"
        for x, op, y, z in ((int(a), o, int(b), int(c)) for a, o, b, c in
                            (s.split("= ")[0].split()[-3:] + [s.split("= ")[1].split()[0]]
                             for s in p.solution.split("\n") if "=" in s)):
            assert {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op] == z
    assert all(p.n_ops == 1 for p in arith.generate(50, seed=1, mix=1))
    assert all(p.n_ops == 3 and set(p.ops) <= {"+", "-"} for p in arith.generate(50, seed=1, mix={3: 1},
                                                                                 ops=("+", "-")))
    with pytest.raises(UserError, match="mix"):
        arith.generate(5, seed=0, mix={4: 1})


def test_splits_are_disjoint_examples_carry_prompt_and_answer():
    data = arith.load_arith({"sft_train": 300, "sft_eval": 50, "sft_test": 80}, seed=0)
    task = data.task
    assert isinstance(task, TaskData) and (len(task.sft_train), len(task.sft_eval), len(task.sft_test)) == (300, 50, 80)
    train_q = {ex.question for ex in task.sft_train}
    assert not train_q & {ex.question for ex in task.sft_test + task.sft_eval}
    ex, prob = task.sft_test[0], data.problems["sft_test"][0]
    assert isinstance(ex, Example) and ex.reference == " " + prob.solution
    assert ex.text == ex.prompt == f"Question: {prob.question}\nAnswer:"
    assert ex.messages == [{"role": "user", "content": f"{prob.question}\n{arith.INSTRUCTION}"}]
    assert ex.answer == data.answer_of(ex) == prob.answer and data.answers("sft_test")[0] == prob.answer
    assert all(check(e.reference, data.answer_of(e)) == 1.0 for e in task.sft_eval)
    assert isinstance(task.reward, Checker) and task.reward(ex.reference, ex) == 1.0
    assert task.reward(" #### 100000", ex) == 0.0 and task.gold is None and task.pref_train == []


@pytest.mark.parametrize("text, expected", [
    ("He buys 4 more, so he has 3 + 4 = 7 apples.\n#### 7", 7),
    ("#### 7\nThen 12 more and 13.", 7),  # the marker wins over a later number
    ("#### 7 and then #### 9", 7),  # the first marker
    ("So 3 + 4 = 7, and she has 9 left", 9),  # no marker: the last number
    ("The total is 1,234 apples.", 1234),
    ("#### 1,000", 1000),
    ("She earned $5.", 5),
    ("It costs 5 dollars", 5),
    ("5.00", 5),
    ("about 2.5 hours", 2.5),
    ("x = -3", -3),
    ("-$5 is the change", -5),
    ("#### -12", -12),
    ("10-3", 3),  # a minus after a digit is subtraction, not a sign
    ("15 - 3", 3),
    ("#### none, but 8", 8),  # a marker without a number: the last-number rule
    ("I do not know.", None),
    ("", None),
])
def test_extraction_rule(text, expected):
    got = extract_answer(text)
    assert got == expected and type(got) is type(expected)
    assert no_answer(text) is (expected is None)


def test_check_scores_exactly():
    assert check("#### 7", 7) == 1.0 and check("#### 7.0", 7) == 1.0 and check("$1,234.00", 1234) == 1.0
    assert check("#### 8", 7) == 0.0 and check("6.999", 7) == 0.0 and check("nothing", 7) == 0.0
    v = verify("no idea", 3)
    assert (v.correct, v.no_answer, v.extracted) == (0.0, True, None)
    assert verify("so 3 + 4 = 7", 7).correct == 1.0


def test_gsm8k_rows_parse():
    probs = gsm8k.hub_problems(GSM8K_ROWS, "train")
    assert [p.answer for p in probs] == [72, 10, 2400]
    assert probs[0].solution == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in "
                                 "April and May.\n#### 72")
    assert probs[1].solution.startswith("Weng earns 12/60 = $0.2 per minute.")
    assert all("<<" not in p.solution and check(p.solution, p.answer) == 1.0 for p in probs)
    assert gsm8k.parse_gold("A.\n#### 1,000\n") == 1000
    for bad in ({"question": "q"}, {"question": "q", "answer": "no final line"}, {"question": "", "answer": "#### 1"},
                {"question": "q", "answer": "#### 2.5"}, ["not", "a", "dict"]):
        with pytest.raises(UserError):
            gsm8k.problem_from_row(bad, "row")


def test_gsm8k_local_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = GSM8K_ROWS * 2
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(json.dumps(GSM8K_ROWS[0]) + "\n", encoding="utf-8")
    data = gsm8k.load_gsm8k(str(tmp_path), n_eval=2)
    assert (len(data.task.sft_train), len(data.task.sft_eval), len(data.task.sft_test)) == (4, 2, 1)
    assert data.answer_of(data.task.sft_test[0]) == 72 and data.task.sft_test[0].reference.startswith(" Natalia")
    hub = tmp_path / "hub"
    (hub / "main").mkdir(parents=True)  # the hub repository's own layout
    for split, part in (("train", rows), ("test", GSM8K_ROWS[1:])):
        pq.write_table(pa.Table.from_pylist(part), hub / "main" / f"{split}-00000-of-00001.parquet")
    data = gsm8k.load_gsm8k(str(hub), n_eval=1)
    assert data.answers("sft_test") == [10, 2400] and len(data.task.sft_train) == 5
    assert gsm8k.load_gsm8k("hub", n_eval=1, load=lambda name, config, split: rows).answers("sft_eval") == [2400]
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "#### 3"}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match="bad.jsonl:2"):
        gsm8k.load_gsm8k(str(tmp_path / "bad.jsonl"), n_eval=1)


class PlainTokenizer:
    """One token per character, no chat template: prompts are the plain format, verbatim."""
    chat_template = None

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))


class ChatTokenizer(PlainTokenizer):
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert not tokenize and add_generation_prompt
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + "<|assistant|>"


def test_prompt_formats_follow_the_tokenizer():
    ex = gsm8k.load_gsm8k("hub", n_eval=1, load=lambda name, config, split: GSM8K_ROWS).task.sft_train[0]
    q = GSM8K_ROWS[0]["question"]
    plain, chat = PlainTokenizer(), ChatTokenizer()
    assert plain.decode(ex.encode_prompt(plain, 1000)) == f"Question: {q}\nAnswer:"
    assert chat.decode(ex.encode_prompt(chat, 1000)) == f"<|user|>{q}\n{arith.INSTRUCTION}\n<|assistant|>"
    assert plain.decode(ex.encode_prompt(plain, 20)) == f"Question: {q}\nAnswer:"[-20:]  # keeps the answer cue


def _brute_pass_at_k(outcomes, k):
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_over_all_subsets():
    rng = random.Random(0)
    for n in range(1, 9):
        for c in range(n + 1):
            outcomes = [1] * c + [0] * (n - c)
            rng.shuffle(outcomes)
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(outcomes, k), abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_pass_at_1_is_the_mean_and_summary():
    rng = random.Random(1)
    results = [[float(rng.random() < p) for _ in range(8)] for p in (0.0, 0.1, 0.5, 0.9, 1.0)]
    assert mean_pass_at_k(results, 1) == pytest.approx(sum(map(sum, results)) / 40)
    brute = sum(_brute_pass_at_k(r, 4) for r in results) / len(results)
    verdicts = [[verify(t, 7) for t in ("#### 7", "#### 8", "none", "7")] for _ in range(3)]
    s = summary(results, no_answer=[[False] * 8] * 5)
    assert s["pass@4"] == pytest.approx(brute) and s["pass@1"] == pytest.approx(s["accuracy"])
    assert s["pass@8"] == pytest.approx(sum(any(r) for r in results) / 5) and s["no_answer_frac"] == 0.0
    v = summary(verdicts)
    assert (v["pass@1"], v["pass@4"], v["pass@8"], v["no_answer_frac"]) == (0.5, 1.0, None, 0.25)
    assert summary([[1.0, 0.0]])["no_answer_frac"] is None and summary([[1.0, 0.0]])["min_samples"] == 2


def test_registered_tasks_carry_the_checker(tmp_path):
    from harness import tasks

    assert {"arith", "gsm8k"} <= set(tasks.names())
    assert tasks.get("arith").checker and tasks.get("gsm8k").checker and not tasks.get("tldr").checker
    assert tasks.get("arith").preset == tasks.get("gsm8k").preset == "arith"
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS * 4), encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(json.dumps(GSM8K_ROWS[2]) + "\n", encoding="utf-8")
    source, data = tasks.load("gsm8k", str(tmp_path))
    assert source == str(tmp_path.resolve()) and isinstance(data.reward, Checker) and data.gold is None
    assert len(data.sft_eval) == 1 and len(data.sft_train) == 11 and data.sft_test[0].answer == 2400
    ex = data.sft_test[0]
    assert data.reward(ex.reference, ex) == 1.0 and data.reward(" 1,200 * 2 = 2400\n#### 2401", ex) == 0.0
    with pytest.raises(UserError, match="--task arith"):
        tasks.load("gsm8k", "synthetic")
    with pytest.raises(UserError, match="generated offline"):
        tasks.load("arith", str(tmp_path))
    (tmp_path / "train.jsonl").write_text(json.dumps(GSM8K_ROWS[0]) + "\n" + '{"question": "q", "answer": "7"}\n',
                                          encoding="utf-8")
    with pytest.raises(UserError, match=r"train\.jsonl:2: the solution does not end in a '#### <number>' line"):
        tasks.load("gsm8k", str(tmp_path))


def test_checked_pairs_key_follows_the_code_and_the_eos_test(monkeypatch):
    """Cached offline pairs are keyed by the code that made them and by the EOS test (issue 34): a changed sampler,
    checker or rule never reads old pairs."""
    from harness.core.scoring import ScoreRule
    from harness.tasks import checked_pairs
    from harness.tasks.verifier import Checker

    args = ({"policy": "p", "tokenizer": "t"}, "synthetic", 10, 64, 16, 0.7)
    base = checked_pairs.pairs_key(*args, ScoreRule(), checker=(Checker,))
    assert checked_pairs.pairs_key(*args, ScoreRule(), checker=(Checker,)) == base  # deterministic
    pad_rule = ScoreRule(missing_eos_test="pad", max_new_tokens=16)
    assert checked_pairs.pairs_key(*args, pad_rule, checker=(Checker,)) != base

    class OtherChecker(Checker):
        def __call__(self, text, example):
            return 1.0

    assert checked_pairs.pairs_key(*args, ScoreRule(), checker=(OtherChecker,)) != base
    monkeypatch.setattr(checked_pairs, "make_pairs", lambda *a, **k: ([], {}))
    assert checked_pairs.pairs_key(*args, ScoreRule(), checker=(Checker,)) != base
