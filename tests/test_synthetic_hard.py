"""The stand-in's hard profile (harness/tasks/synthetic.py): five key facts, more distractors, its gold reward, the
`synthetic-hard` source, the tiny recipe's `posts` (cache keys of standard recipes unchanged) and the tiny-hard
preset. Kept fast: small generated splits, and one test-size build in a temporary cache."""
import pytest

from harness.core.settings import TinyRecipe
from harness.app.config import preset_names, resolve
from harness.core.errors import UserError
from harness.core.store import config_hash
from harness.tasks import synthetic, tldr
from harness.tasks.synthetic import Facts, gold_reward

STANDARD_KEYS = {"who", "event", "ask", "distractor_who", "distractor_event"}
SMALL_SPLITS = {"sft_train": 512, "sft_eval": 32, "pref_train": 512, "pref_eval": 32, "sft_test": 32}

HARD = Facts("my boss", "lied to me", "what should i do", "my mom", "moved out", when="last month", where="at work",
             distractor_who2="my dad", distractor_event2="quit college", distractor_when="yesterday",
             distractor_where="at the gym")


def test_hard_posts_hold_all_five_key_facts_and_every_distractor():
    for row in synthetic.generate(300, seed=3, profile="hard"):
        post, f = row["post"].lower(), synthetic.facts_of(row)
        assert len(f.key()) == 5 and f.profile == "hard"
        for fact in (*f.key(), f.distractor_who, f.distractor_event, f.distractor_who2, f.distractor_event2,
                     f.distractor_when, f.distractor_where):
            assert fact in post, (fact, post)
        assert len({f.who, f.distractor_who, f.distractor_who2}) == 3 and f.when != f.distractor_when


def test_no_fact_value_hides_inside_another_text():
    """The gold reward finds facts by substring: a value inside another value or a filler sentence would count as
    a fact the summary never named."""
    values = synthetic.WHO + synthetic.EVENT + synthetic.WHEN + synthetic.WHERE + synthetic.ASK
    texts = values + synthetic.HARD_FILLER + synthetic.REMARK + synthetic.RAMBLE
    for value in synthetic.WHEN + synthetic.WHERE:
        assert [t for t in texts if value in t] == [value], value
    for value in synthetic.WHO + synthetic.EVENT:  # and no added filler sentence names a person or an event
        assert not [t for t in synthetic.HARD_FILLER if value in t], value


def test_gold_reward_of_hard_summaries_by_hand():
    ideal = " my boss lied to me at work last month. what should i do?"  # 13 words
    assert synthetic.ideal_summary(HARD) == ideal and gold_reward(ideal, HARD) == 1.0
    assert gold_reward(" my boss lied to me last month. what should i do?", HARD) == pytest.approx(4 / 5)  # no place
    # the distractor time instead of the key one: 4 of 5 facts, one wrong fact
    assert gold_reward(" my boss lied to me at work yesterday. what should i do?", HARD) == pytest.approx(0.8 - 0.5)
    # a distractor person and event: all facts, two wrong ones, 17 words = 3 over the ideal's 13 (+1 free)
    with_distractor = " my boss lied to me at work last month, my dad quit college. what should i do?"
    assert gold_reward(with_distractor, HARD) == pytest.approx(1 - 0.5 * 2 - 0.04 * 3)
    assert gold_reward(ideal, HARD) > gold_reward(with_distractor, HARD)
    assert gold_reward(ideal, HARD, terminated=False) == -1.0
    # a standard example's gold ignores times and places: only the verbosity of the extra words counts
    standard = Facts("my boss", "lied to me", "what should i do", "my mom", "moved out")
    assert gold_reward(" my boss lied to me at work. what should i do?", standard) == pytest.approx(1 - 0.04)
    assert synthetic.labeller_utility(ideal, HARD) == pytest.approx(1 + synthetic.LABELLER_LENGTH_BIAS * 13)


def test_facts_dicts_tell_the_profile_and_standard_rows_gain_no_keys():
    standard, hard = synthetic.generate(50, seed=0), synthetic.generate(50, seed=0, profile="hard")
    assert all(set(r["facts"]) == STANDARD_KEYS for r in standard)
    assert all(set(r["facts"]) == tldr.FACT_FIELDS for r in hard)
    assert {synthetic.facts_of(r).profile for r in standard} == {"standard"}
    assert all(len(synthetic.facts_of(r).key()) == 3 for r in standard)
    assert standard[0]["id"] == "synthetic-0-0" and hard[0]["id"] == "synthetic-hard-0-0"
    for row in (standard[0], hard[0]):  # rows of either profile pass the loader's facts check
        assert tldr.example_from_row(row, "test", "sft").facts == row["facts"]
    with pytest.raises(UserError, match="'facts' must be an object with keys"):
        tldr.example_from_row({**hard[0], "facts": {**hard[0]["facts"], "mood": "sad"}}, "test", "sft")


def test_hard_references_leave_more_headroom_than_standard_ones():
    def stats(profile):
        rows = synthetic.generate(600, seed=11, profile=profile)
        facts = [synthetic.facts_of(r) for r in rows]
        gold = [gold_reward(r["summary"], f) for r, f in zip(rows, facts)]
        agree = [gold_reward(r["chosen"], f) >= gold_reward(r["rejected"], f) for r, f in zip(rows, facts)]
        return sum(gold) / len(gold), sum(agree) / len(agree)

    (standard_gold, _), (hard_gold, hard_agree) = stats("standard"), stats("hard")
    assert 0.1 < hard_gold < standard_gold - 0.05  # the ideal summary scores 1 on both
    assert 0.75 < hard_agree < 0.95  # labels follow the gold reward, with Bradley-Terry noise


def test_load_task_synthetic_hard_carries_a_working_gold(monkeypatch):
    monkeypatch.setattr(tldr, "SYNTHETIC_SIZES", SMALL_SPLITS)
    assert tldr.resolve_source("synthetic-hard") == "synthetic-hard"
    data = tldr.load_task("synthetic-hard")
    assert data.source == "synthetic-hard" and data.gold is not None and len(data.sft_test) == 32
    ex = data.sft_test[0]
    facts = Facts(**ex.facts)
    assert facts.profile == "hard" and data.gold(synthetic.ideal_summary(facts), ex) == 1.0
    assert data.gold(ex.reference, ex) == gold_reward(ex.reference, facts)
    assert not {e.post for e in data.sft_train} & {e.post for e in tldr.load_task("synthetic").sft_train}


def test_hard_candidates_name_wrong_facts_and_references_never_do():
    """A preference candidate may name a wrong time (the post's distractor time, or one the post never mentions);
    a reference never does. Without such pairs the reward model never learns that a wrong fact costs reward."""
    rows = synthetic.generate(400, seed=5, profile="hard")
    facts = [synthetic.facts_of(r) for r in rows]

    def share(field, wrong_times):
        return sum(any(t in r[field] for t in wrong_times(f)) for r, f in zip(rows, facts)) / len(rows)

    post_time = lambda f: [f.distractor_when]  # noqa: E731
    other_time = lambda f: [t for t in synthetic.WHEN if t not in (f.when, f.distractor_when)]  # noqa: E731
    assert share("summary", post_time) == share("summary", other_time) == 0.0
    for field in ("chosen", "rejected"):
        assert 0.02 < share(field, post_time) < 0.3 and 0.02 < share(field, other_time) < 0.3
    gold = lambda field: sum(gold_reward(r[field], f) for r, f in zip(rows, facts)) / len(rows)  # noqa: E731
    assert gold("chosen") > gold("rejected") + 0.2  # the labels follow the gold reward, wrong facts included
    assert synthetic.data_version("standard") == synthetic.VERSION != synthetic.data_version("hard")


def test_build_keys_are_the_recipe_the_data_and_the_code(monkeypatch):
    """A standard recipe dumps as it did before `posts` existed; the key is that dump, the data version and the
    code that builds (issue 34: a changed build function is another build, never a stale cached one)."""
    from harness.core.store import code_fingerprint
    from harness.tasks import arith_tiny, tiny as tiny_build
    from harness.tasks.tiny import BUILD_CODE, BUILD_VERSION, recipe_key

    old_dump = {"vocab_size": 1024, "hidden_size": 128, "layers": 4, "heads": 4, "max_prompt_tokens": 128,
                "max_response_tokens": 32, "sft_steps": 600, "sft_batch": 32, "sft_lr": 2e-3, "rm_steps": 400,
                "rm_batch": 32, "rm_lr": 5e-4, "schedule": "linear", "length_buckets": 0, "seed": 0}
    tiny = resolve("tiny").model.tiny
    assert tiny.model_dump() == old_dump
    assert recipe_key(tiny) == config_hash({"recipe": old_dump, "build_version": BUILD_VERSION,
                                            "data": synthetic.VERSION, "code": code_fingerprint(*BUILD_CODE)})
    assert "posts" not in resolve("tiny").model_dump()["model"]["tiny"]  # run config hashes unchanged
    hard = TinyRecipe(**{**old_dump, "posts": "hard"})
    assert hard.model_dump()["posts"] == "hard" and recipe_key(hard) != recipe_key(tiny)
    assert TinyRecipe.model_validate(hard.model_dump()) == hard
    before, arith_before = recipe_key(tiny), arith_tiny.recipe_key(resolve("arith").model.tiny)
    monkeypatch.setattr(tiny_build, "train_steps", lambda *args: None)  # another training loop
    assert recipe_key(tiny) != before and arith_tiny.recipe_key(resolve("arith").model.tiny) != arith_before


@pytest.mark.parametrize("preset, source", [("tiny", "synthetic-hard"), ("tiny-hard", "synthetic"),
                                            ("tiny-hard", "auto")])
def test_posts_and_source_that_disagree_fail_with_one_line(preset, source):
    with pytest.raises(UserError, match=r"model.tiny.posts is (standard|hard): the tiny model must be built on the "
                                        r"posts it trains and evaluates on") as err:
        resolve(preset, {"task": {"source": source}})
    assert "\n" not in str(err.value)


def test_tiny_hard_preset_is_the_tiny_preset_on_hard_posts():
    assert "tiny-hard" in preset_names()
    for name in preset_names():  # every preset still resolves (the posts check included)
        resolve(name)
    tiny, hard = resolve("tiny").model_dump(), resolve("tiny-hard").model_dump()
    assert hard["task"]["source"] == "synthetic-hard" and hard["model"]["tiny"]["posts"] == "hard"
    assert hard["task"]["max_prompt_tokens"] == hard["model"]["tiny"]["max_prompt_tokens"] == 192
    assert hard["model"]["tiny"]["max_response_tokens"] == hard["generation"]["max_new_tokens"] == 48
    for key in ("max_prompt_tokens", "max_response_tokens", "posts"):
        hard["model"]["tiny"].pop(key), tiny["model"]["tiny"].pop(key, None)
    for section in ("train", "eval", "algo_args"):
        assert hard[section] == tiny[section], section
    assert hard["model"] == tiny["model"]  # the same model size and build schedule
    resolve("tiny-hard", {"task": {"source": "hub"}})  # real data is the user's choice, as with the tiny build


def test_dry_run_counts_synthetic_hard_as_offline_data():
    from harness.app.plan import dry_run

    plan = dry_run(resolve("tiny-hard"))
    assert not plan.problems and any("tldr from synthetic-hard" in line for line in plan.lines)


def test_a_test_size_hard_build_trains_one_iteration(monkeypatch, tmp_path):
    """Small splits and a tiny recipe in a temporary cache (never the session's: its key does not name the sizes)."""
    import json

    from rich.console import Console

    from harness.app.runner import run

    monkeypatch.setattr(tldr, "SYNTHETIC_SIZES", SMALL_SPLITS)
    recipe = {"hidden_size": 32, "layers": 1, "heads": 2, "sft_steps": 10, "rm_steps": 5, "sft_batch": 8,
              "rm_batch": 8}
    cfg = resolve("tiny-hard", {"model": {"cache_dir": str(tmp_path), "tiny": recipe},
                                "train": {"iterations": 1, "prompts_per_iteration": 4},
                                "generation": {"max_new_tokens": 16}, "eval": {"prompts": 4, "every": 0, "at": []},
                                "output_dir": str(tmp_path / "runs"), "run_id": "r"})
    summary = json.loads((run(cfg, console=Console(quiet=True)) / "summary.json").read_text())
    assert summary["data_source"] == "synthetic-hard" and summary["budget"]["prompts"] == 4
    assert summary["eval"]["win_rate_judge"] == "gold" and isinstance(summary["eval"]["gold_reward"], float)
    (build,) = tmp_path.glob("tiny-*/build_info.json")
    assert json.loads(build.read_text())["recipe"]["posts"] == "hard"
