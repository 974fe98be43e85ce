"""The verifiable-reward task end to end: `harness run --task arith` on a test-size build of its tiny model, the
checker in place of the reward model, checker-labelled offline pairs, and the math suite in summary.json."""
import json

import pytest

from harness.cli import main
from harness.app.config import resolve
from harness.core.store import read_jsonl

# A test-only recipe: small enough to build in seconds, so it solves (almost) nothing; the numbers are not the
# point here, the wiring is (tests/test_arith_task.py holds the pure parts).
TEST_RECIPE = {"hidden_size": 32, "layers": 1, "heads": 2, "sft_steps": 40, "length_buckets": 8}
MATH_KEYS = {"pass@1", "pass@4", "pass@8", "greedy_pass@1", "kl", "response_length", "no_answer_frac", "eos_rate"}


def _sets(cache: str) -> list[str]:
    sets = [f"model.tiny.{k}={v}" for k, v in TEST_RECIPE.items()]
    sets += [f"model.cache_dir={cache}", "train.prompts_per_iteration=8", "eval.prompts=8", "eval.every=2",
             "train.lr=1e-3"]
    return [x for s in sets for x in ("--set", s)]


@pytest.fixture(scope="session")
def arith_run(harness_cache, tmp_path_factory):
    """A 2-iteration REBEL run through the command line, as a user starts it (no --preset: the task's own)."""
    out = tmp_path_factory.mktemp("arith-runs")
    with pytest.raises(SystemExit) as done:
        main(["run", "--algo", "rebel", "--task", "arith", "--iterations", "2", "-o", str(out), "--run-id", "r",
              *_sets(harness_cache)])
    assert done.value.code in (0, None)
    return out / "r"


def test_arith_run_scores_with_the_checker_and_reports_pass_at_k(arith_run):
    summary = json.loads((arith_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == "arith" and summary["preset"] == "arith"
    assert summary["data_source"] == "synthetic-arith"
    for block in ("eval", "sft"):
        m = summary[block]
        assert MATH_KEYS <= set(m), (block, MATH_KEYS - set(m))
        assert all(0.0 <= m[k] <= 1.0 for k in ("pass@1", "pass@4", "pass@8", "greedy_pass@1", "no_answer_frac"))
        assert m["pass@1"] <= m["pass@4"] <= m["pass@8"] and m["samples_per_problem"] == 8 and m["n"] == 8
        assert m["temperature"] == 1.0 and m["win_rate_judge"] is None
    assert abs(summary["sft"]["kl"]) < 1e-5  # the SFT policy is the reference
    assert summary["budget"]["rm_queries"] == 2 * 8 * 2  # checker calls: 2 iterations x 8 prompts x 2 samples
    assert json.loads((arith_run / "evals" / "arith.json").read_text()) == summary["eval"]
    config = json.loads((arith_run / "config.json").read_text())
    assert config["model_origin"]["reward_model"] is None and config["model"]["policy"] == "builtin:arith"
    records, problems = read_jsonl(arith_run / "metrics.jsonl")
    assert not problems
    lines = [r for r in records if not r.get("final")]
    assert [r["iteration"] for r in lines] == [1, 2] and records[-1]["final"]
    assert records[-1]["eval/pass@8"] == summary["eval"]["pass@8"] and "eval/greedy_pass@1" in records[-1]
    assert all(-1.0 <= r["score"] <= 1.0 and 0.0 <= r["tie_frac"] <= 1.0 for r in lines)  # mean checker scores
    samples, _ = read_jsonl(arith_run / "samples.jsonl")
    assert len(samples) == 8 * 8 + 8  # 8 samples and one greedy response per problem
    assert {"prompt", "answer", "response", "correct", "no_answer", "extracted", "eos"} <= set(samples[0])
    assert samples[0]["prompt"].startswith("Question: ") and samples[0]["prompt"].endswith("\nAnswer:")


def test_pass_at_k_of_the_run_is_the_hand_count_of_its_samples(arith_run):
    """summary.json's math block recounted from samples.jsonl (issue 34): per problem, c of its 8 sampled
    responses are correct; pass@k = mean of 1 - C(8 - c, k) / C(8, k), greedy pass@1 the share of correct greedy
    responses, the no-answer share over the sampled responses."""
    import math

    summary = json.loads((arith_run / "summary.json").read_text())["eval"]
    samples, _ = read_jsonl(arith_run / "samples.jsonl")
    sampled, greedy = [s for s in samples if s["sample"] != "greedy"], [s for s in samples if s["sample"] == "greedy"]
    problems = [sampled[i:i + 8] for i in range(0, len(sampled), 8)]
    assert len(problems) == len(greedy) == 8
    for block, g in zip(problems, greedy):
        assert [s["sample"] for s in block] == list(range(8)) and {s["prompt"] for s in block} == {g["prompt"]}
        assert all(s["correct"] in (0.0, 1.0) for s in block + [g])
    correct = [sum(s["correct"] for s in block) for block in problems]
    for k in (1, 4, 8):
        by_hand = sum(1 - math.comb(8 - int(c), k) / math.comb(8, k) for c in correct) / len(correct)
        assert summary[f"pass@{k}"] == pytest.approx(by_hand, abs=1e-12), k
    assert summary["greedy_pass@1"] == pytest.approx(sum(g["correct"] for g in greedy) / len(greedy))
    assert summary["no_answer_frac"] == pytest.approx(sum(s["no_answer"] for s in sampled) / len(sampled))
    assert summary["eos_rate"] == pytest.approx(sum(s["eos"] for s in sampled) / len(sampled))
    # a response that never ended is never correct, whatever it says
    assert all(s["correct"] == 0.0 for s in sampled if not s["eos"])


def test_arith_build_is_cached_by_recipe_and_has_no_reward_model(arith_run, harness_cache):
    from harness.tasks import resolve_paths

    cfg = resolve("arith", {"model": {"cache_dir": harness_cache, "tiny": TEST_RECIPE}})
    paths = resolve_paths(cfg.model, log=pytest.fail, needs_reward_model=False)  # built by the run: no rebuild
    assert paths["reward_model"] is None
    info = json.loads(open(paths["build_info"]).read())
    assert info["recipe"]["hidden_size"] == 32 and info["references_cut"] == 0 and "rm_steps" not in info["recipe"]
    other = resolve("arith", {"model": {"cache_dir": harness_cache, "tiny": {**TEST_RECIPE, "sft_steps": 41}}})
    from harness.tasks.arith_tiny import recipe_key

    assert recipe_key(other.model.tiny) != recipe_key(cfg.model.tiny)  # a changed recipe is another build
    assert recipe_key(cfg.model.tiny.model_copy(update={"rm_steps": 7})) == recipe_key(cfg.model.tiny)


def test_checker_scores_replace_the_reward_model(arith_run, harness_cache):
    """collect_online with the task's checker: scores are the checker's (missing EOS -> the run's score), the
    reward model is never called (there is none), and rm_queries counts checker calls."""
    from algorithms.base import make
    from harness.core.experience import Budget
    from harness.core.models import load_models
    from harness.tasks import load
    from harness.tasks import resolve_paths
    from harness.core.train import Trainer

    cfg = resolve("arith", {"model": {"cache_dir": harness_cache, "tiny": TEST_RECIPE},
                            "train": {"prompts_per_iteration": 4}})
    _, data = load("arith", "synthetic")
    models = load_models(cfg.model, resolve_paths(cfg.model, needs_reward_model=False))
    assert models.reward_model is None
    budget = Budget()
    trainer = Trainer(cfg, make("rebel"), models, data.sft_train, budget, reward=data.reward)
    examples = trainer.next_prompts()
    batch = trainer.collect(examples)
    from harness.core.scoring import has_eos
    from harness.core.tokens import decode_responses

    texts = decode_responses(batch.flat("response"), batch.flat("mask"), models.tokenizer)
    ended = has_eos(batch.flat("response"), batch.flat("mask"), models.eos_id).tolist()
    expected = [data.reward(t, examples[i // 2]) if e else cfg.train.missing_eos_score
                for i, (t, e) in enumerate(zip(texts, ended))]
    assert batch.score.flatten().tolist() == expected and budget.rm_queries == 8


class EvenLength:
    """A stand-in checker that the untrained test model passes about half the time: 'right' iff the response's
    text has an even number of characters, so both ties and pairs occur."""

    name = "parity checker"

    def __call__(self, text, example):
        return float(len(text) % 2 == 0)


def test_offline_pairs_are_checker_labelled_cached_and_count_ties(arith_run, harness_cache, tmp_path):
    from harness.core.models import load_models
    from harness.core.scoring import ScoreRule
    from harness.tasks import arith
    from harness.tasks.checked_pairs import cached_pairs
    from harness.tasks import resolve_paths

    cfg = resolve("arith", {"model": {"cache_dir": harness_cache, "tiny": TEST_RECIPE}})
    models = load_models(cfg.model, resolve_paths(cfg.model, needs_reward_model=False))
    data = arith.load_arith({"sft_train": 24, "sft_eval": 2})
    data.task.reward = EvenLength()
    kwargs = dict(n_prompts=24, max_prompt_tokens=80, max_new_tokens=16, temperature=1.0,
                  rule=ScoreRule(missing_eos_score=None), cache_dir=str(tmp_path))
    counts = cached_pairs(data.task, models, **kwargs, log=lambda *a: None)
    assert counts["pairs"] + counts["ties_correct"] + counts["ties_wrong"] == 24 and counts["pairs"] > 0
    pairs = data.task.pref_train
    assert len(pairs) == counts["pairs"]
    assert all(EvenLength()(p.chosen, p) == 1.0 and EvenLength()(p.rejected, p) == 0.0 for p in pairs)
    again = arith.load_arith({"sft_train": 24, "sft_eval": 2}).task
    again.reward = EvenLength()
    assert cached_pairs(again, models, **kwargs, log=pytest.fail) == counts  # read from the cache: nothing sampled
    assert [(p.question, p.chosen, p.rejected, p.answer) for p in again.pref_train] == \
        [(p.question, p.chosen, p.rejected, p.answer) for p in pairs]


def test_gsm8k_runs_on_local_rows_in_the_hub_schema(arith_run, harness_cache, tmp_path):
    from tests.test_arith_task import GSM8K_ROWS

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS * 8))
    (tmp_path / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    with pytest.raises(SystemExit) as done:
        main(["run", "--algo", "rebel", "--task", "gsm8k", "--source", str(tmp_path / "data"), "--iterations", "1",
              "-o", str(tmp_path / "runs"), "--run-id", "g", *_sets(harness_cache)])
    assert done.value.code in (0, None)
    summary = json.loads((tmp_path / "runs" / "g" / "summary.json").read_text())
    assert summary["task"] == "gsm8k" and summary["data_source"] == str((tmp_path / "data").resolve())
    assert summary["eval"]["n"] == 3 and MATH_KEYS <= set(summary["eval"])  # the 3 test rows (eval.prompts=8)
    samples, _ = read_jsonl(tmp_path / "runs" / "g" / "samples.jsonl")
    assert sorted({s["answer"] for s in samples}) == [10, 72, 2400]
