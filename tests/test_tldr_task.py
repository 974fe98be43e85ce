import json

import pytest

from harness.errors import UserError
from harness.tasks import synthetic
from harness.tasks.tldr import Example, export_synthetic, load_task, resolve_source, truncate_prompt


class WordTokenizer:
    """One token per whitespace-separated word: makes truncation lengths easy to check by hand."""

    def encode(self, text, add_special_tokens=False):
        return list(range(len(text.split())))


def test_prompt_format():
    ex = Example(subreddit="tifu", title="A title", post="Some post.")
    assert ex.prompt == "SUBREDDIT: r/tifu\n\nTITLE: A title\n\nPOST: Some post.\n\nTL;DR:"


def test_truncation_drops_the_end_of_the_post_and_keeps_tldr():
    ex = Example(subreddit="tifu", title="t", post=" ".join(f"w{i}" for i in range(50)))
    # template words: "SUBREDDIT:", "r/tifu", "TITLE:", "t", "POST:", post..., "TL;DR:" -> 6 + post words
    ids = truncate_prompt(ex, WordTokenizer(), max_tokens=20)
    assert len(ids) == 20  # 14 post words kept
    with pytest.raises(UserError, match="cannot hold even an empty post"):  # 5 words without the title
        truncate_prompt(ex, WordTokenizer(), max_tokens=4)


def test_truncation_with_a_real_tokenizer_keeps_the_tldr_marker(tiny_test_models):
    _, models, data = tiny_test_models
    tok = models.tokenizer
    ex = data.sft_train[0]
    ids = truncate_prompt(ex, tok, 40)
    assert len(ids) <= 40 and tok.decode(ids).endswith("\n\nTL;DR:")


def test_local_directory_round_trip(tmp_path):
    export_synthetic(tmp_path)
    data = load_task(resolve_source(str(tmp_path)))
    synth = load_task("synthetic")
    assert data.has_gold and len(data.sft_train) == len(synth.sft_train)
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
