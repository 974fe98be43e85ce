import json

import pytest

from harness.core.errors import UserError
from harness.tasks import synthetic
from harness.tasks.tldr import export_synthetic, load_task, resolve_source
from harness.tasks.tldr_prompt import TldrExample
from harness.core.examples import TaskData


class WordTokenizer:
    """One token per whitespace-separated word: makes truncation lengths easy to check by hand."""

    def encode(self, text, add_special_tokens=False):
        return list(range(len(text.split())))


def test_prompt_format():
    ex = TldrExample(subreddit="tifu", title="A title", post="Some post.")
    assert ex.prompt == "SUBREDDIT: r/tifu\n\nTITLE: A title\n\nPOST: Some post.\n\nTL;DR:"


def test_truncation_drops_the_end_of_the_post_and_keeps_tldr():
    ex = TldrExample(subreddit="tifu", title="t", post=" ".join(f"w{i}" for i in range(50)))
    # template words: "SUBREDDIT:", "r/tifu", "TITLE:", "t", "POST:", post..., "TL;DR:" -> 6 + post words
    ids = ex.encode_prompt(WordTokenizer(), max_tokens=20)
    assert len(ids) == 20  # 14 post words kept
    with pytest.raises(UserError, match="cannot hold even an empty post"):  # 5 words without the title
        ex.encode_prompt(WordTokenizer(), max_tokens=4)


def test_truncation_with_a_real_tokenizer_keeps_the_tldr_marker(tiny_test_models):
    _, models, data = tiny_test_models
    tok = models.tokenizer
    ex = data.sft_train[0]
    ids = ex.encode_prompt(tok, 40)
    assert len(ids) <= 40 and tok.decode(ids).endswith("\n\nTL;DR:")


def test_local_directory_round_trip(tmp_path):
    export_synthetic(tmp_path)
    data = load_task(resolve_source(str(tmp_path)))
    synth = load_task("synthetic")
    assert data.gold is not None and len(data.sft_train) == len(synth.sft_train)
    assert data.sft_eval[3].prompt == synth.sft_eval[3].prompt and data.pref_train[2].chosen == synth.pref_train[2].chosen


def test_malformed_rows_fail_with_file_and_line(tmp_path):
    export_synthetic(tmp_path)
    f = tmp_path / "sft_train.jsonl"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], json.dumps({"title": "no post"})]) + "\n")
    with pytest.raises(UserError, match=r"sft_train.jsonl:2: row lacks field 'subreddit'"):
        load_task(str(tmp_path))
    f.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(UserError, match=r"sft_train.jsonl:2 is not valid JSON"):
        load_task(str(tmp_path))
    f.write_text("\n".join(lines) + "\n")
    (tmp_path / "preference_train.jsonl").unlink()
    with pytest.raises(UserError, match="lacks preference_train.jsonl"):
        load_task(str(tmp_path))


def test_hub_preference_rows_in_nested_schema_are_understood():
    from harness.tasks.tldr import example_from_row

    row = {"info": {"subreddit": "s", "title": "t", "post": "p"}, "summaries": [{"text": " a"}, {"text": " b"}],
           "choice": 1}
    ex = example_from_row(row, "hub")
    assert (ex.chosen, ex.rejected) == (" b", " a")


def test_auto_source_falls_back_to_the_stand_in_loudly(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source("auto") == "synthetic"
    assert "SYNTHETIC" in capsys.readouterr().err
    with pytest.raises(UserError, match="auto, hub, synthetic or an existing directory"):
        resolve_source("/no/such/dir")


def test_stand_in_leaves_room_to_optimise():
    rows = synthetic.generate(2000, seed=7)
    facts = [synthetic.facts_of(r) for r in rows]
    ideal = [f" {f.who} {f.event}. {f.ask}?" for f in facts]
    wins = [synthetic.gold_reward(i, f) > synthetic.gold_reward(r["summary"], f) for i, f, r in zip(ideal, facts, rows)]
    assert sum(wins) / len(wins) > 0.8  # a perfect summary beats most references
    refs = [synthetic.gold_reward(r["summary"], f) for r, f in zip(rows, facts)]
    assert 0.2 < sum(refs) / len(refs) < 0.7  # references vary in quality
    agree = [synthetic.gold_reward(r["chosen"], f) >= synthetic.gold_reward(r["rejected"], f) for r, f in zip(rows, facts)]
    assert 0.7 < sum(agree) / len(agree) < 0.95  # labels follow the gold reward, with Bradley-Terry noise


def test_gold_reward_terms():
    f = synthetic.Facts("my boss", "lied to me", "what should i do", "my mom", "moved out")
    assert synthetic.gold_reward(" my boss lied to me. what should i do?", f) == 1.0
    assert synthetic.gold_reward(" my boss lied to me.", f) == pytest.approx(2 / 3)
    assert synthetic.gold_reward(" my boss lied to me, my mom moved out. what should i do?", f) == pytest.approx(
        1 - 0.5 * 2 - 0.04 * 3)  # two wrong facts; 4 words over the ideal length (one is free)
    assert synthetic.gold_reward(" my boss lied to me. what should i do?", f, terminated=False) == -1.0


# sha256 of the stand-in's rows and of its loaded Examples, per split, before the test split was added:
# committed results (results/tiny, results/bench) were produced on exactly these.
STAND_IN_DIGESTS = {
    "sft_train": ("af421e4cfcb2446fb773545670a1ed50da9da4bd968569327511c0881e422193",
                  "9b3e8cbc7e23205a69445c5b7df9bb67b17516c939f84cb307b560dff5776edb"),
    "sft_eval": ("dc78ad9f858b4d1f77f5a92b565be76cba4b896c15748f92c36551dbc077afef",
                 "2a32f4d1400f4ff8c915f28c4157f15557dd3c343a333645f062d34a5826a7a0"),
    "pref_train": ("36c69e8b3b05055d5f7ada26ba46d1acb28de2e8181c729024b16be55aece9ce",
                   "768fc4c069ba4ba5a6604a3bba79dc6b7214a4d600d43853fa7089120abd38dd"),
    "pref_eval": ("36b0b7da040cad1acbdcca3c9188abee6c7c9bf59a604880ff6cc95bb221aea8",
                  "901a6b6a00c5bb4e04e760f936f46d085308f7a6cefe6e07937615f314e76060"),
}


def test_stand_in_splits_are_unchanged_and_the_test_split_is_its_own():
    import dataclasses
    import hashlib

    from harness.tasks.tldr import _synthetic_rows

    def digest(obj):
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()

    rows, data = _synthetic_rows(), load_task("synthetic")
    for split, (row_digest, example_digest) in STAND_IN_DIGESTS.items():
        assert digest(rows[split]) == row_digest, split
        examples = [dataclasses.asdict(ex) for ex in getattr(data, split)]
        # the generic Example's plain `text` came later: unset on TL;DR rows (their template renders), out of the digest
        assert all(ex.pop("text") is None for ex in examples), split
        assert digest(examples) == example_digest, split
    assert len(data.sft_test) == 1000 and data.test_note is None and data.gold is not None
    assert {r["id"].rsplit("-", 1)[0] for r in rows["sft_test"]} == {"synthetic-4"}  # its own generator seed
    assert not {ex.post for ex in data.sft_test} & {ex.post for ex in data.sft_eval}


def toy_data(test: int = 50, validation: int = 50) -> TaskData:
    def examples(tag, n):
        return [TldrExample(subreddit="s", title=f"{tag} {i}", post="p", reference=" r") for i in range(n)]

    return TaskData(source="toy", sft_train=[], sft_eval=examples("validation", validation), pref_train=[],
                    pref_eval=[], sft_test=examples("test", test))


def test_eval_prompts_are_a_seeded_random_subset_of_the_test_split():
    from harness.core.examples import eval_examples, eval_indices

    data = toy_data()
    a, b, c = (eval_examples(data, 10, seed=s) for s in (0, 0, 1))
    assert a == b and a != c
    assert all(any(ex is t for t in data.sft_test) for ex in a + c)  # from the test split, not validation
    titles = [int(ex.title.split()[1]) for ex in a]
    assert titles == sorted(titles) and titles != list(range(10))  # split order, but not the first ten
    assert eval_indices(10, 3, 0) == [1, 7, 8]  # pinned: random.Random(0).shuffle(range(10)) starts 7, 8, 1
    assert set(eval_indices(1000, 300, 5)) <= set(eval_indices(1000, 600, 5))  # more prompts keep the fewer
    assert eval_examples(data, 10, selection="first") == data.sft_test[:10]
    assert eval_examples(data, 10, split="validation", selection="first") == data.sft_eval[:10]
    assert len(eval_examples(data, 500)) == 50  # capped at the split's size
    with pytest.raises(UserError, match="selection one of random, first"):
        eval_examples(data, 10, selection="best")
    with pytest.raises(UserError, match="at least 1"):
        eval_examples(data, 0)


def test_eval_selection_is_the_same_in_another_process():
    import os
    import subprocess
    import sys

    from harness.core.examples import eval_indices

    code = "from harness.core.examples import eval_indices; print(eval_indices(6553, 600, 3))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(out) == eval_indices(6553, 600, 3)


def test_without_a_test_split_evaluation_falls_back_to_validation_and_says_so(tmp_path):
    from harness.core.examples import eval_examples

    data = toy_data(test=0)
    assert eval_examples(data, 5, seed=2) == eval_examples(data, 5, split="validation", seed=2)
    assert "no test split" in data.test_note and "validation" in data.test_note
    export_synthetic(tmp_path)
    assert len(load_task(str(tmp_path)).sft_test) == 1000
    (tmp_path / "sft_test.jsonl").unlink()
    local = load_task(str(tmp_path))
    assert not local.sft_test and "no sft_test.jsonl" in local.test_note
