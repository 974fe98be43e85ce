"""The hub data sets' real row layout (tests/fixtures/hub_tldr, hand-written): parsing, response tokens, splits and
the authors' prompt truncation."""
import json
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.core.examples import TaskData
from harness.tasks.tldr_prompt import PROMPT_TEMPLATE, TldrExample
from harness.tasks.tldr import HUB_PREFERENCE, HUB_SFT, HUB_SPLITS, _hub, hub_examples

FIXTURES = Path(__file__).parent / "fixtures" / "hub_tldr"
EOS = "<|endoftext|>"
SFT_COLUMNS = ["id", "subreddit", "title", "post", "summary", "query_token", "query", "reference_response",
               "reference_response_token", "reference_response_token_len", "query_reference_response",
               "query_reference_response_token", "query_reference_response_token_response_label",
               "query_reference_response_token_len"]
PREF_COLUMNS = ["info", "summaries", "choice", "worker", "batch", "split", "extra", "query_token", "query", "chosen",
                "chosen_token", "chosen_token_len", "rejected", "rejected_token", "rejected_token_len",
                "chosen_policy", "rejected_policy", "policies", "query_chosen", "query_chosen_token",
                "query_chosen_token_len", "query_rejected", "query_rejected_token", "query_rejected_token_len",
                "query_token_len", "query_chosen_token_response_label", "query_rejected_token_response_label"]


def load_fixture(name: str, split: str):
    """What datasets.load_dataset(name, split=split) returns on the hub, from the fixture file."""
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(FIXTURES / name.replace("/", "__") / f"{split}.jsonl"),
                                 split="train")


@pytest.fixture(scope="module")
def hub():
    requested = []

    def load(name, split):
        requested.append((name, split))
        return load_fixture(name, split)

    return _hub(load), requested


@pytest.fixture(scope="module")
def tok(hub):
    """A small byte-level BPE with "<|endoftext|>" as its EOS, as Pythia's (built the way the tiny preset's is)."""
    from harness.tasks.tiny import train_tokenizer

    splits, _ = hub
    return train_tokenizer(TaskData(source="hub", **splits), vocab_size=400)


def test_fixtures_follow_the_authors_layout():
    for split in ("train", "validation", "test"):
        for row in load_fixture(HUB_SFT, split):
            assert list(row) == SFT_COLUMNS
            assert not row["summary"].startswith(" ")
            assert row["reference_response"] == " " + row["summary"] + EOS
            assert row["query_reference_response"] == row["query"].strip() + row["reference_response"]
            assert row["query"] == PROMPT_TEMPLATE.format(**row)  # fixture posts fit in 512 tokens: not truncated
    for split in ("train", "validation", "validation_cnndm"):
        for row in load_fixture(HUB_PREFERENCE, split):
            assert list(row) == PREF_COLUMNS
            assert set(row["info"]) == {"id", "post", "title", "subreddit", "site", "article"}
            c = row["choice"]
            assert row["chosen"] == row["summaries"][c]["text"] + EOS
            assert row["rejected"] == row["summaries"][1 - c]["text"] + EOS
            assert row["policies"] == "--".join(sorted(s["policy"] for s in row["summaries"]))
            assert (row["batch"] in ("batch0_cnndm", "cnndm0", "cnndm2")) == (split == "validation_cnndm")
            if split != "validation_cnndm":
                assert row["chosen"].startswith(" ") and row["rejected"].startswith(" ")


def test_hub_reads_train_validation_test_and_never_cnndm(hub):
    splits, requested = hub
    assert sorted(requested) == sorted(HUB_SPLITS.values())
    assert (HUB_PREFERENCE, "validation_cnndm") not in requested
    assert {k: len(v) for k, v in splits.items()} == {"sft_train": 3, "sft_eval": 2, "sft_test": 3,
                                                      "pref_train": 3, "pref_eval": 2}
    with pytest.raises(UserError, match="CNN/DM news comparisons, not TL;DR"):
        hub_examples(load_fixture(HUB_PREFERENCE, "validation_cnndm"), HUB_PREFERENCE, "validation_cnndm")
    # a CNN/DM row that turns up in a TL;DR split is left out, not read as a post-less TL;DR row
    cnndm = load_fixture(HUB_PREFERENCE, "validation_cnndm")[0]
    rows = list(load_fixture(HUB_PREFERENCE, "validation")) + [cnndm]
    assert len(hub_examples(rows, HUB_PREFERENCE, "validation")) == 2


def test_hub_responses_become_space_text_plus_one_eos(hub, tok):
    """Each reference/chosen/rejected is tokenized exactly as the authors' own string (" " + text + EOS, with the
    literal "<|endoftext|>" read as the EOS token): one leading-space token run, one EOS."""
    from harness.core.tokens import encode_responses

    splits, _ = hub
    cases = [(splits["sft_train"], "reference", load_fixture(HUB_SFT, "train"), "reference_response"),
             (splits["sft_test"], "reference", load_fixture(HUB_SFT, "test"), "reference_response"),
             (splits["pref_train"], "chosen", load_fixture(HUB_PREFERENCE, "train"), "chosen"),
             (splits["pref_eval"], "rejected", load_fixture(HUB_PREFERENCE, "validation"), "rejected")]
    eos = tok.eos_token_id
    for examples, field, rows, column in cases:
        ids, mask = encode_responses([getattr(ex, field) for ex in examples], tok, 256, eos, tok.pad_token_id)
        for seq, m, row, ex in zip(ids, mask, rows, examples):
            got = seq[m].tolist()
            assert got == tok(row[column], add_special_tokens=False)["input_ids"]
            assert got.count(eos) == 1 and got[-1] == eos
            assert tok.decode(got[:1]).startswith(" ") and not getattr(ex, field).endswith(EOS)


def test_encode_responses_never_doubles_an_eos_already_in_the_text(tok):
    from harness.core.tokens import encode_responses

    ids, mask = encode_responses([" a summary" + tok.eos_token, " a summary"], tok, 32, tok.eos_token_id,
                                 tok.pad_token_id)
    assert ids[0][mask[0]].tolist() == ids[1][mask[1]].tolist()
    assert ids[0][mask[0]].tolist().count(tok.eos_token_id) == 1


def authors_prompt_ids(tok, subreddit: str, title: str, post: str, length: int) -> list[int]:
    """The authors' process_query loop, literally: cut at the post's last newline, or one character when there is
    none, re-encoding each time, until the prompt fits."""
    while True:
        ids = tok.encode(PROMPT_TEMPLATE.format(subreddit=subreddit, title=title, post=post), add_special_tokens=False)
        if len(ids) <= length:
            return ids
        if not post:
            raise ValueError("Could not truncate enough!")
        i = post.rfind("\n")
        post = post[:i]  # i == -1: drop one character


def test_truncation_at_the_last_newline_reproduces_the_authors_rule(hub, tok):
    ex = hub[0]["sft_train"][0]
    assert ex.post.count("\n") >= 5
    full = len(tok.encode(ex.prompt, add_special_tokens=False))
    empty = len(tok.encode(TldrExample(subreddit=ex.subreddit, title=ex.title).prompt, add_special_tokens=False))
    differs = 0
    for length in (full - 1, full - 40, (full + empty) // 2, empty + 30, empty + 3, empty):
        got = ex.encode_prompt(tok, length)
        assert got == authors_prompt_ids(tok, ex.subreddit, ex.title, ex.post, length)
        assert len(got) <= length and tok.decode(got).endswith("\n\nTL;DR:")
        differs += got != ex.encode_prompt(tok, length, rule="words")
    assert differs >= 3  # the word-wise rule would have kept other text


def test_truncation_without_newlines_drops_characters_like_the_authors(hub, tok):
    ex = hub[0]["sft_train"][2]
    assert "\n" not in ex.post
    full = len(tok.encode(ex.prompt, add_special_tokens=False))
    for length in (full - 1, full - 17, full - 60):
        assert ex.encode_prompt(tok, length) == authors_prompt_ids(tok, ex.subreddit, ex.title, ex.post, length)
    with pytest.raises(UserError, match="unknown prompt truncation rule"):
        ex.encode_prompt(tok, full - 1, rule="tokens")


def test_local_directory_in_hub_layout_is_read_like_the_hub(tmp_path):
    """A local directory may hold hub-layout rows (e.g. exported from the hub): same normalisation."""
    from harness.tasks.tldr import LOCAL_FILES, load_task

    for split, (name, hub_split) in HUB_SPLITS.items():
        if split in LOCAL_FILES:
            rows = [json.dumps(r) for r in load_fixture(name, hub_split)]
            (tmp_path / LOCAL_FILES[split]).write_text("\n".join(rows) + "\n")
    data = load_task(str(tmp_path))
    assert data.sft_train[0].reference == " " + load_fixture(HUB_SFT, "train")[0]["summary"]
    assert data.pref_train[0].chosen == load_fixture(HUB_PREFERENCE, "train")[0]["chosen"][: -len(EOS)]
    assert not data.sft_test and "no sft_test.jsonl" in data.test_note


class MergingTokenizer:
    """One token per character, but "abc" is a single token: adding a "c" can make a prompt SHORTER, the kind of
    dip a BPE merge makes, which a plain bisection over characters would miss."""

    def encode(self, text, add_special_tokens=False):
        import re

        return [1000 if p == "abc" else ord(p) for p in re.findall(r"abc|.", text, flags=re.S)]


def test_character_truncation_matches_the_authors_loop_where_token_counts_dip():
    tok = MergingTokenizer()
    ex = TldrExample(subreddit="s", title="t", post="xy abc " * 6 + "abcabcabc zz abc")
    full = len(tok.encode(ex.prompt))
    empty = len(tok.encode(TldrExample(subreddit="s", title="t").prompt))
    for length in range(empty, full):
        assert ex.encode_prompt(tok, length) == authors_prompt_ids(tok, "s", "t", ex.post, length), length
