"""Bring your own task, end to end on the tiny model, from files in a folder outside the repository (issue 28's
"done means"): a prompt-only jsonl and a reward function train GRPO and REBEL and `harness report` tables them; a
preference jsonl in TRL's format trains DPO and iterative DPO; a reward function that raises mid-run stops the run
with its checkpoint kept, and the rerun resumes."""
from __future__ import annotations

import json

import pytest

from harness import tasks
from harness.cli import main
from harness.core.store import read_jsonl

REWARD_PY = '''\
def copies_the_post(prompts, completions, **kwargs):
    """The share of the summary's words that appear in the post (None for an empty summary)."""
    out = []
    for prompt, completion in zip(prompts, completions):
        words = completion.lower().split()
        out.append(sum(w in prompt.lower() for w in words) / len(words) if words else None)
    return out
'''


@pytest.fixture(autouse=True)
def _forget_task_files():
    tasks.names()
    before = dict(tasks.REGISTRY)
    yield
    tasks.REGISTRY.clear()
    tasks.REGISTRY.update(before)


@pytest.fixture(scope="module")
def posts():
    """TL;DR-style posts the tiny model can summarise (the stand-in's), with their references and pairs."""
    from harness.tasks.tldr import load_task

    return load_task("synthetic")


def cli(*args):
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return done.value.code or 0


def run(task, algo, out, seed, cache, *extra):
    return cli("run", "--algo", algo, "--task", task, "--preset", "tiny-test", "--iterations", "2", "--seed", seed,
               "-o", out, "--set", f"model.cache_dir={cache}", "--set", "train.prompts_per_iteration=8",
               "--set", "eval.prompts=8", *extra)


def test_prompts_and_a_reward_function_train_grpo_and_rebel_and_report(posts, tiny_test_models, harness_cache,
                                                                      tmp_path):
    folder = tmp_path / "my_task"
    folder.mkdir()
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": ex.prompt}) + "\n"
                                                  for ex in posts.sft_train[:200]))
    (folder / "rewards.py").write_text(REWARD_PY)
    (folder / "task.yaml").write_text("name: copy-the-post\ndataset:\n  path: prompts.jsonl\nreward:\n"
                                      "  - function: rewards.py:copies_the_post\n")
    out = tmp_path / "runs"
    for algo in ("grpo", "rebel"):
        for seed in (0, 1):
            assert run(folder / "task.yaml", algo, out, seed, harness_cache) == 0
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))]
    assert len(summaries) == 4 and {s["task"] for s in summaries} == {"copy-the-post"}
    assert {s["suite"] for s in summaries} == {"reward"}
    assert all(s["reward"] == "rewards.py:copies_the_post" for s in summaries)
    first = sorted(out.glob("grpo-*s0*"))[0]
    samples, _ = read_jsonl(first / "samples.jsonl")
    sampled = [s for s in samples if s["sample"] != "greedy"]
    assert len(sampled) == 8 * 4  # eval.prompts x the reward suite's 4 samples
    for s in sampled:  # the suite's rewards are the function's, recounted here
        words = s["response"].lower().split()
        want = sum(w in s["prompt"].lower() for w in words) / len(words) if words else 0.0
        assert s["reward"] == pytest.approx(want)
    summary = json.loads((first / "summary.json").read_text())
    assert summary["eval"]["reward"] == pytest.approx(sum(s["reward"] for s in sampled) / len(sampled))
    assert 0 < summary["sft"]["reward"] < 1  # the tiny model copies some of the post's words, not all
    assert summary["budget"]["rm_queries"] == 2 * 8 * 4  # the reward-calls counter: iterations x prompts x samples

    # `harness eval RUN --suite reward` re-evaluates the saved policy on the task file's own prompts and reward
    assert cli("eval", first, "--suite", "reward", "--out", tmp_path / "again") == 0
    again = json.loads((tmp_path / "again" / "reward.json").read_text())
    assert again["reward"] == pytest.approx(summary["eval"]["reward"]) and again["task"] == "copy-the-post"

    assert cli("report", out, "--out", tmp_path / "report", "--no-plots") == 0
    table = (tmp_path / "report" / "tables" / "reward.csv").read_text()
    assert "reward" in table.splitlines()[0] and "grpo" in table and "rebel" in table and "SFT" in table
    verdicts = next((tmp_path / "report" / "tables").glob("verdicts*.csv")).read_text()
    assert "grpo" in verdicts and "rebel" in verdicts


def test_a_preference_file_trains_dpo_and_iterative_dpo(posts, tiny_test_models, harness_cache, tmp_path):
    rows = [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected} for ex in posts.pref_train[:64]]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text("name: my-pairs\ndataset: {path: pairs.jsonl, eval_size: 8}\n"
                                        "reward: {model: builtin}\n")
    out = tmp_path / "runs"
    for algo in ("dpo", "iterative_dpo"):
        assert run(tmp_path / "task.yaml", algo, out, 0, harness_cache) == 0
    summaries = {s["algorithm"]: s for s in (json.loads(p.read_text()) for p in out.glob("*/summary.json"))}
    assert set(summaries) == {"dpo", "iterative_dpo"} and {s["suite"] for s in summaries.values()} == {"tldr"}
    assert "offline_pairs" not in summaries["dpo"]  # the file's own pairs, no checker-made ones
    assert summaries["dpo"]["budget"]["responses"] == 0  # offline: nothing sampled
    assert summaries["iterative_dpo"]["budget"]["responses"] > 0
    assert all(s["reward"].startswith("reward model ") for s in summaries.values())
    assert all(isinstance(s["eval"]["rm_score"], float) for s in summaries.values())


def test_a_reward_function_that_raises_keeps_the_checkpoint_and_the_rerun_resumes(posts, tiny_test_models,
                                                                                 harness_cache, tmp_path, capsys):
    flag = tmp_path / "server_down"
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": ex.prompt}) + "\n"
                                                    for ex in posts.sft_train[:64]))
    # a reward that calls a server: down from its 4th batch on (2 for the SFT baseline, then iteration 1, 2)
    (tmp_path / "rewards.py").write_text(
        "from pathlib import Path\nCALLS = []\n\n"
        "def remote(prompts, completions, **kwargs):\n"
        "    CALLS.append(1)\n"
        f"    if len(CALLS) > 3 and Path({str(flag)!r}).exists():\n"
        "        raise ConnectionError('reward server unreachable')\n"
        "    return [float(len(c)) for c in completions]\n")
    (tmp_path / "task.yaml").write_text("name: flaky\ndataset: {path: prompts.jsonl}\n"
                                        "reward: [{function: 'rewards.py:remote'}]\n")
    flag.touch()
    out = tmp_path / "runs"
    args = ("--set", "train.checkpoint_every=1", "--run-id", "flaky")
    assert run(tmp_path / "task.yaml", "rloo", out, 0, harness_cache, *args) != 0
    err = capsys.readouterr().err
    assert "reward function rewards.py:remote raised ConnectionError: reward server unreachable" in err
    assert "the last good checkpoint (iteration 1) is kept" in err and "Traceback" not in err
    assert json.loads((out / "flaky" / "failed.json").read_text())["iteration"] == 2
    flag.unlink()
    assert run(tmp_path / "task.yaml", "rloo", out, 0, harness_cache, *args) == 0
    assert json.loads((out / "flaky" / "summary.json").read_text())["resumed_from"] == 1
