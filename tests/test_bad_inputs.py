"""The bad-input catalogue (docs/robustness.md): each bad input gives one clear line (a UserError, which the CLI prints
as `error: ...` with exit code 2) or a recorded skip, and nothing already written is lost.

Only the gaps are tested here; the entries that older tests already check are listed in docs/robustness.md.
"""
from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.app.config import resolve
from harness.core.errors import UserError
from harness.tasks.tldr import example_from_row, load_task
from harness.tasks.tldr_prompt import TldrExample
from tests.helpers import BigramLM, ConstantRewardModel
from tests.openai_stub import OpenAIStub
from tests.test_tldr_task import WordTokenizer

JUDGE_ENV = ("HARNESS_JUDGE_MODEL", "HARNESS_JUDGE_BASE_URL", "HARNESS_JUDGE_API_KEY", "OPENAI_BASE_URL",
             "OPENAI_API_KEY")
KEY = "sk-catalogue-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def no_judge_env(monkeypatch):
    """No judge key or endpoint leaks in from the machine running the tests."""
    for var in JUDGE_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def private_cache(tmp_path, tiny_test_models, harness_cache) -> Path:
    """A cache of this test's own that shares the session's built tiny preset (symlinked), so that what a run caches
    (SFT baselines, judge answers) never leaks into other tests."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for built in Path(harness_cache).glob("tiny-*"):
        (cache / built.name).symlink_to(built)
    return cache


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of `harness ARGV`, in this process."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    return done.value.code or 0, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(code: int, lines: list[str], *needles: str) -> None:
    assert code == 2 and lines and lines[-1].startswith("error: "), lines
    assert sum(line.startswith("error") for line in lines) == 1 and not any("Traceback" in ln for ln in lines)
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def closed_port_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


# ---------------------------------------------------------------------------------------------------------------
# 1. unknown algorithm / task / preset (messages: tests/test_config.py; unknown algorithm on the CLI: tests/test_run.py)

@pytest.mark.parametrize("flag, message, choice", [
    ("--preset", "unknown preset 'nope'; valid presets: ", "tiny"),
    ("--task", "unknown task 'nope'; valid tasks: ", "tldr"),
])
def test_cli_rejects_unknown_preset_and_task_in_one_line(capsys, flag, message, choice):
    code, lines = cli(capsys, "run", flag, "nope")
    assert_one_line_error(code, lines, message, choice)


# ---------------------------------------------------------------------------------------------------------------
# 2. malformed or empty rows in a local data directory (missing file, non-JSON line: tests/test_tldr_task.py)

def row(**fields) -> dict:
    base = {"subreddit": "tifu", "title": "a title", "post": "my roommate ate my lunch.", "summary": " roommate ate it",
            "chosen": " roommate ate my lunch", "rejected": " lunch"}
    return {k: v for k, v in {**base, **fields}.items() if v is not ...}  # `...`: leave the field out


def write_data(path: Path, **lines: list[str]) -> Path:
    """A local data directory with two good rows per split; `lines` replaces a file's lines (name without .jsonl)."""
    path.mkdir(exist_ok=True)
    for name in ("sft_train", "sft_validation", "preference_train", "preference_validation"):
        content = lines.get(name, [json.dumps(row()), json.dumps(row(title="another"))])
        (path / f"{name}.jsonl").write_text("".join(line + "\n" for line in content), encoding="utf-8")
    return path


@pytest.mark.parametrize("file, bad, message", [
    ("sft_train", row(post=""), "'post' is empty"),
    ("sft_train", row(post="   \n "), "'post' is empty"),
    ("sft_train", row(summary=""), "'summary' is empty"),
    ("sft_validation", row(summary=...), "row lacks field 'summary'"),
    ("preference_train", row(chosen=""), "'chosen' is empty"),
    ("preference_validation", row(rejected=" "), "'rejected' is empty"),
    ("preference_train", row(chosen=..., rejected=...), "row lacks field 'chosen' (also 'rejected')"),
    ("sft_train", row(post=None), "row lacks field 'post'"),  # was read as the post "None"
    ("sft_train", row(post=["a", "list"]), "'post' must be a string, got list"),
    ("sft_train", {}, "row lacks field 'subreddit' (also 'title', 'post', 'summary')"),
    ("sft_train", [], "a row must be a JSON object, got list"),
    ("sft_train", "just text", "a row must be a JSON object, got str"),
    ("sft_train", None, "a row must be a JSON object, got NoneType"),
    ("sft_train", row(facts={"who": "x"}), "'facts' must be an object with keys"),
])
def test_bad_rows_name_file_line_and_what_to_do(tmp_path, file, bad, message):
    data = write_data(tmp_path, **{file: [json.dumps(row()), json.dumps(bad)]})
    with pytest.raises(UserError) as err:
        load_task(str(data))
    text = str(err.value)
    assert f"{file}.jsonl:2: {message}" in text and "\n" not in text
    assert text.endswith("fix or delete that row")
    kind = "an SFT row needs" if file.startswith("sft") else "a preference row needs"
    assert kind in text  # says which fields a row of this file needs


def test_empty_split_file_says_what_to_write(tmp_path):
    data = write_data(tmp_path, preference_validation=["", "   "])
    with pytest.raises(UserError, match=r"preference_validation.jsonl has no rows; write one JSON object per line"):
        load_task(str(data))


def test_file_that_is_not_utf8_is_a_one_line_error(tmp_path):
    data = write_data(tmp_path)
    (data / "sft_train.jsonl").write_bytes(json.dumps(row()).encode() + b"\n\xff\xfe garbage\n")
    with pytest.raises(UserError, match=r"sft_train.jsonl is not UTF-8 text \(byte \d+\); save it as UTF-8"):
        load_task(str(data))


def test_editor_byte_order_mark_and_unicode_line_separators_are_read(tmp_path):
    """Valid files that a naive reader rejects: a UTF-8 BOM, and U+2028 left unescaped inside a JSON string (a line
    break for str.splitlines, not for JSONL)."""
    post = "first line\u2028second line\u2029third"
    lines = ["\ufeff" + json.dumps(row()), json.dumps(row(post=post), ensure_ascii=False)]
    data = write_data(tmp_path, sft_train=lines)
    task = load_task(str(data))
    assert [ex.post for ex in task.sft_train] == [row()["post"], post]


def test_bad_hub_rows_name_the_data_set_split_and_row(monkeypatch):
    import sys
    from types import SimpleNamespace

    from harness.tasks.tldr import HUB_PREFERENCE, HUB_SFT, _hub

    def load_dataset(name, split):
        if name == HUB_SFT:
            return [row(), row()]
        pair = {"info": {"subreddit": "s", "title": "t", "post": "p"},
                "summaries": [{"text": " a"}, {"text": ""}], "choice": 0}
        return [pair] * 3 if split == "validation" else [dict(pair, summaries=[{"text": " a"}, {"text": " b"}])]

    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(UserError) as err:
        _hub()
    assert str(err.value).startswith(f"{HUB_PREFERENCE}[validation] row 0: 'rejected' is empty; a preference row needs")


@pytest.mark.parametrize("pair", [
    {"summaries": [{"text": " only one"}], "choice": 0},
    {"summaries": [{"text": " a"}, {"text": " b"}], "choice": 2},
    {"summaries": "not a list", "choice": 0},
])
def test_malformed_hub_comparison_rows_are_user_errors(pair):
    bad = {"info": {"subreddit": "s", "title": "t", "post": "p"}, **pair}
    with pytest.raises(UserError, match=r"^hub\[validation\] row 3: 'summaries' must hold two"):
        example_from_row(bad, "hub[validation] row 3", "preference")


# ---------------------------------------------------------------------------------------------------------------
# 3. prompts over the limit (the end of a long post is dropped: tests/test_tldr_task.py)

def test_title_longer_than_the_limit_is_cut_and_keeps_tldr(tiny_test_models):
    ex = TldrExample(subreddit="tifu", title=" ".join(f"t{i}" for i in range(50)), post="a post that cannot fit")
    # words: "SUBREDDIT:", "r/tifu", "TITLE:", title..., "POST:", "TL;DR:" -> 5 + title words; the post goes first
    assert len(ex.encode_prompt(WordTokenizer(), max_tokens=12)) == 12  # 7 title words kept
    _, models, data = tiny_test_models
    tok = models.tokenizer
    for ex in data.sft_eval[:8]:
        long = TldrExample(subreddit=ex.subreddit, title=" ".join([ex.title] * 40), post=ex.post)
        for limit in (24, 40, 64):
            ids = long.encode_prompt(tok, limit)
            text = tok.decode(ids)
            assert len(ids) <= limit and text.endswith("\n\nPOST: \n\nTL;DR:"), (limit, text)
            assert text.startswith(f"SUBREDDIT: r/{ex.subreddit}\n\nTITLE: {ex.title[:3]}")


def test_post_without_spaces_is_cut_by_characters_not_dropped(tiny_test_models):
    _, models, _ = tiny_test_models
    tok = models.tokenizer
    ex = TldrExample(subreddit="tifu", title="t", post="https://example.com/" + "x7" * 2000)  # one 4000-character word
    ids = ex.encode_prompt(tok, 40)
    text = tok.decode(ids)
    assert len(ids) <= 40 and text.endswith("\n\nTL;DR:")
    assert "POST: https://example.com/x7" in text  # the start of the post survives


def test_limit_smaller_than_the_template_is_a_clear_error(tiny_test_models):
    ex = TldrExample(subreddit="tifu", title="a title", post="a post")
    with pytest.raises(UserError) as err:  # the template alone is 5 words: SUBREDDIT: r/tifu TITLE: POST: TL;DR:
        ex.encode_prompt(WordTokenizer(), max_tokens=4)
    assert str(err.value) == ("max_prompt_tokens=4 cannot hold even an empty post and title (the prompt template with "
                              "subreddit 'tifu' needs 5 tokens); raise task.max_prompt_tokens to at least 5")
    _, models, _ = tiny_test_models
    need = len(models.tokenizer.encode("SUBREDDIT: r/tifu\n\nTITLE: \n\nPOST: \n\nTL;DR:", add_special_tokens=False))
    with pytest.raises(UserError, match=f"needs {need} tokens"):  # below the suffix "TL;DR:" itself too
        ex.encode_prompt(models.tokenizer, 2)
    assert len(ex.encode_prompt(models.tokenizer, need)) == need  # exactly the template: title and post dropped


# ---------------------------------------------------------------------------------------------------------------
# 4. responses that are all padding or end at once (EOS first: tests/test_scoring.py)

EOS, PAD = 1, 0


def test_scoring_all_pad_and_length_one_responses_is_finite_and_applies_the_eos_rule():
    from harness.core.rollout import truncate_after_eos
    from harness.core.scoring import MISSING_EOS_SCORE, reward_scores, sequence_logprobs, token_rewards

    raw = torch.tensor([[PAD, PAD, PAD], [EOS, 4, 4], [EOS, EOS, EOS]])
    response, mask = truncate_after_eos(raw, EOS, PAD)
    assert mask.tolist() == [[True] * 3, [True, False, False], [True, False, False]]  # pads sampled = no EOS
    query = torch.tensor([[PAD, 3, 4]] * 3)
    logp = sequence_logprobs(BigramLM(torch.randn(6, 6)), query, response, mask, PAD, 0.7)
    score = reward_scores(ConstantRewardModel(EOS, bias=0.5), query, response, mask, PAD)
    assert torch.isfinite(logp.tokens).all() and torch.isfinite(score).all()
    assert score.tolist() == [MISSING_EOS_SCORE, 3 - 0.5, 3 - 0.5]  # read at the EOS: 2 query + 1 response tokens
    for m in (mask, torch.zeros_like(mask)):  # and a row with no counted token at all
        rewards = token_rewards(score, logp.tokens * m, torch.zeros_like(logp.tokens), m, beta=0.05)
        assert torch.isfinite(rewards).all()
        assert torch.allclose(rewards.sum(-1), score - 0.05 * (logp.tokens * m).sum(-1))


def force_token(monkeypatch, model, token_id: int) -> None:
    """`model` puts (almost) all probability on `token_id` at every position; logits stay finite, as a real model's."""
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        bias = torch.zeros(out.logits.shape[-1], dtype=out.logits.dtype, device=out.logits.device)
        bias[token_id] = 1e4
        out.logits = out.logits + bias
        return out

    monkeypatch.setattr(model, "forward", forward)


@pytest.mark.parametrize("emit", ["pad", "eos"])
@pytest.mark.parametrize("append_reference, count_post_eos", [(False, False), (True, True)])
def test_collect_online_with_a_policy_that_emits_only_pad_or_eos(tiny_test_models, monkeypatch, emit,
                                                                 append_reference, count_post_eos):
    from harness.core.experience import Budget, collect_online
    from harness.core.scoring import MISSING_EOS_SCORE, reward_scores

    cfg, models, data = tiny_test_models
    token = models.pad_id if emit == "pad" else models.eos_id
    force_token(monkeypatch, models.policy, token)
    examples = data.sft_train[:4]
    batch = collect_online(models, examples, 2, cfg.task.max_prompt_tokens, cfg.generation.max_new_tokens,
                           cfg.generation.temperature, cfg.train.kl_coef, 64, Budget(),
                           torch.Generator().manual_seed(0), append_reference=append_reference,
                           count_post_eos=count_post_eos, preferences=True)
    for name in ("logp_old", "logp_ref", "score", "kl", "reward", "token_reward", "preference"):
        assert torch.isfinite(getattr(batch, name)).all(), name
    assert torch.allclose(batch.token_reward.sum(-1), batch.reward, rtol=1e-4, atol=1e-2)
    sampled_mask, sampled_score = batch.mask[:, :2], batch.score[:, :2]
    if emit == "pad":  # never ends: every sampled token counts and the score is replaced
        assert sampled_mask.all() and (sampled_score == MISSING_EOS_SCORE).all()
    else:  # ends at once: one token, scored at that EOS like any finished response
        assert (sampled_mask.sum(-1) == 1).all()
        one = batch.response[:, 0, :1]
        expected = reward_scores(models.reward_model, batch.query, one, torch.ones_like(one, dtype=torch.bool),
                                 models.pad_id)
        assert torch.allclose(sampled_score, expected[:, None].expand(-1, 2), atol=1e-4)
        assert (sampled_score != MISSING_EOS_SCORE).all()


@pytest.mark.parametrize("algo", ["rebel", "ppo", "reinforce"])
@pytest.mark.parametrize("emit", ["pad", "eos"])
def test_training_on_degenerate_responses_stays_finite(tiny_test_models, harness_cache, monkeypatch, algo, emit):
    from algorithms.base import make
    from harness.core.experience import Budget
    from harness.core.models import load_models
    from harness.tasks import resolve_paths
    from harness.core.train import Trainer

    _, _, data = tiny_test_models
    cfg = resolve("tiny-test", {"algo": algo, "model": {"cache_dir": harness_cache},
                                "train": {"prompts_per_iteration": 4}})
    algorithm = make(algo)
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=algorithm.needs_critic)  # trained here
    force_token(monkeypatch, models.policy, models.pad_id if emit == "pad" else models.eos_id)
    line = Trainer(cfg, algorithm, models, data.sft_train, Budget()).iteration(1)
    assert all(math.isfinite(v) for v in line.values() if isinstance(v, float)), line
    assert line["eos_rate"] == (0.0 if emit == "pad" else 1.0)
    assert line["response_length"] == (cfg.generation.max_new_tokens if emit == "pad" else 1.0)
    assert all(torch.isfinite(p).all() for p in models.policy.parameters())


# ---------------------------------------------------------------------------------------------------------------
# 5. a reward model that returns NaN (or inf)

def poison_reward_head(monkeypatch, reward_model, value: float, when=lambda: True) -> None:
    """The reward model's score head returns `value` whenever `when()` holds (both the classifier's forward and the
    shared-prompt scoring path go through this head)."""
    head = reward_model.score
    original = head.forward
    monkeypatch.setattr(head, "forward", lambda hidden: torch.full_like(original(hidden), value) if when()
                        else original(hidden))


@pytest.mark.parametrize("algo", ["rebel", "reinforce"])  # multi-epoch and single-pass updates check differently
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_reward_stops_training_before_any_step(tiny_test_models, harness_cache, monkeypatch, algo, value):
    from algorithms.base import make
    from harness.core.experience import Budget
    from harness.core.models import load_models
    from harness.tasks import resolve_paths
    from harness.core.train import Trainer, TrainingDiverged

    _, _, data = tiny_test_models
    cfg = resolve("tiny-test", {"algo": algo, "model": {"cache_dir": harness_cache},
                                "train": {"prompts_per_iteration": 4}})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    trainer = Trainer(cfg, make(algo), models, data.sft_train, Budget())
    trainer.iteration(1)
    poison_reward_head(monkeypatch, models.reward_model, value)
    before = {n: p.detach().clone() for n, p in models.policy.named_parameters()}
    steps = trainer.budget.optimizer_steps
    with pytest.raises(TrainingDiverged) as err:
        trainer.iteration(2)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert str(err.value).startswith("non-finite rewards at iteration 2: check the reward model's outputs")
    assert trainer.budget.optimizer_steps == steps  # no step was taken on the poisoned batch...
    assert all(torch.equal(p, before[n]) for n, p in models.policy.named_parameters())  # ...the weights are intact


def test_non_finite_loss_stops_with_what_to_do(tiny_test_models, harness_cache):
    from algorithms.base import make
    from harness.core.experience import Budget
    from harness.core.models import load_models
    from harness.tasks import resolve_paths
    from harness.core.train import Trainer, TrainingDiverged

    _, _, data = tiny_test_models
    cfg = resolve("tiny-test", {"model": {"cache_dir": harness_cache}, "train": {"prompts_per_iteration": 4}})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    algo = make("rebel")
    real = algo.loss
    algo.loss = lambda batch, new: (real(batch, new)[0] * float("nan"), {})
    before = {n: p.detach().clone() for n, p in models.policy.named_parameters()}
    with pytest.raises(TrainingDiverged) as err:
        Trainer(cfg, algo, models, data.sft_train, Budget()).iteration(1)
    assert str(err.value).startswith("the rebel loss became nan at iteration 1, epoch 0; lower train.lr (now ")
    assert all(torch.equal(p, before[n]) for n, p in models.policy.named_parameters())


def test_nan_reward_through_the_cli_keeps_what_was_written(private_cache, tmp_path, capsys, monkeypatch):
    """Iteration 1 trains normally, then the reward model turns NaN: one line, exit 2, and the run directory keeps its
    config, the first metrics line and a failure record (no summary: the run did not complete)."""
    from harness.core.models import load_reward_model
    from harness.core.train import Trainer

    collects = {"n": 0}
    original_collect = Trainer.collect

    def counting_collect(self, examples):
        collects["n"] += 1
        return original_collect(self, examples)

    def poisoned_load(*args, **kwargs):  # NaN from the second rollout on: the SFT baseline and iteration 1 are sane
        rm = load_reward_model(*args, **kwargs)
        poison_reward_head(monkeypatch, rm, float("nan"), when=lambda: collects["n"] >= 2)
        return rm

    monkeypatch.setattr(Trainer, "collect", counting_collect)
    monkeypatch.setattr("harness.core.models.load_reward_model", poisoned_load)
    out = tmp_path / "runs"
    code, lines = cli(capsys, "run", "--preset", "tiny-test", "--iterations", "3", "-o", out, "--run-id", "nan",
                      "--set", f"model.cache_dir={private_cache}", "--set", "eval.every=0", "--set", "eval.prompts=8",
                      "--set", "train.prompts_per_iteration=4")
    assert_one_line_error(code, lines, "error: non-finite rewards at iteration 2")
    run = out / "nan"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1] and math.isfinite(metrics[0]["score"])
    failed = json.loads((run / "failed.json").read_text())
    assert failed["iteration"] == 2 and failed["error"].startswith("TrainingDiverged: non-finite rewards")
    assert json.loads((run / "config.json").read_text())["config_hash"] and not (run / "summary.json").exists()


def test_non_finite_evaluation_is_never_cached_or_summarised(private_cache, tmp_path, capsys, monkeypatch):
    """A reward model that is NaN from the start: the SFT baseline's evaluation stops the run in one line, and
    nothing NaN reaches the SFT-baseline cache (which later runs would read) or a summary."""
    from harness.core.models import load_reward_model

    def poisoned_load(*args, **kwargs):
        rm = load_reward_model(*args, **kwargs)
        poison_reward_head(monkeypatch, rm, float("nan"))
        return rm

    monkeypatch.setattr("harness.core.models.load_reward_model", poisoned_load)
    out = tmp_path / "runs"
    code, lines = cli(capsys, "run", "--preset", "tiny-test", "--iterations", "1", "-o", out, "--run-id", "nan-eval",
                      "--set", f"model.cache_dir={private_cache}", "--set", "eval.prompts=8")
    assert_one_line_error(code, lines, "error: evaluation gave non-finite rm_score", "reward model")
    assert not list(private_cache.glob("sft_baselines/*.json"))
    assert not (out / "nan-eval" / "summary.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# 6. judge without a key, or unreachable (judge level: tests/evals/test_judge.py; `harness eval`: test_eval_cli.py)

def test_run_without_a_judge_key_fails_before_training(private_cache, tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("harness.app.runner.Trainer", no_training)
    out = tmp_path / "runs"
    code, lines = cli(capsys, "run", "--preset", "tiny-test", "-o", out, "--set", "eval.judge=openai",
                      "--set", f"model.cache_dir={private_cache}")
    assert_one_line_error(code, lines, "no API key for the judge", "HARNESS_JUDGE_API_KEY", "OPENAI_API_KEY")
    assert not out.exists()  # refused before a run directory was made


def test_unreachable_judge_message_says_what_to_check(tmp_path):
    from evals.judge import CompletionClient, Endpoint

    url = closed_port_url()
    with pytest.raises(UserError) as err:
        CompletionClient(Endpoint("m", url, KEY), cache_dir=tmp_path).preflight()
    assert str(err.value).startswith(f"judge: could not reach {url}") and "\n" not in str(err.value)
    assert "check the base URL (HARNESS_JUDGE_BASE_URL" in str(err.value) and KEY not in str(err.value)


def test_run_checks_the_judge_endpoint_before_any_work(tiny_test_models, private_cache, monkeypatch):
    from harness.app.runner import make_judge

    _, _, data = tiny_test_models
    cfg = resolve("tiny-test", {"model": {"cache_dir": str(private_cache)}, "eval": {"judge": "openai"}})
    monkeypatch.setenv("HARNESS_JUDGE_API_KEY", KEY)
    monkeypatch.setenv("HARNESS_JUDGE_BASE_URL", closed_port_url())
    with pytest.raises(UserError, match="could not reach"):
        make_judge(cfg, data)


# ---------------------------------------------------------------------------------------------------------------
# 7. run directories with truncated or damaged JSONL (tests/test_store.py, tests/report/test_runs.py)

def test_metrics_that_are_not_utf8_skip_the_run_with_a_reason(tmp_path):
    from evals.runs import load_runs
    from tests.report.conftest import write_run

    write_run(tmp_path, "ok")
    damaged = write_run(tmp_path, "damaged", seed=1)
    with open(damaged / "metrics.jsonl", "ab") as f:
        f.write(b'{"iteration": 7, "lo\xff\xfe\x00')
    runs, skipped = load_runs([tmp_path])
    assert [r.run_id for r in runs] == ["ok"]
    assert len(skipped) == 1 and skipped[0].reason.startswith("unreadable metrics.jsonl (UnicodeDecodeError")


def test_a_record_appended_after_a_truncated_line_is_kept(tmp_path):
    from harness.core.store import append_jsonl, read_jsonl

    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"iteration": 1})
    with open(path, "a") as f:
        f.write('{"iteration": 2, "lo')  # killed mid-write
    append_jsonl(path, {"iteration": 2})  # the resumed run logs iteration 2 again
    records, problems = read_jsonl(path)
    assert [r["iteration"] for r in records] == [1, 2]
    assert problems == ["metrics.jsonl:2 is not valid JSON (truncated write?)"]


# ---------------------------------------------------------------------------------------------------------------
# 8. secrets and pickles (judge cache and errors: tests/evals/test_judge.py; ScalarModel pickles:
#    tests/test_scale_presets.py)

def test_the_judge_key_appears_in_no_file_log_or_report(private_cache, tmp_path, capsys, caplog, monkeypatch):
    def judge(body):
        return "Comparison: fine.\nPreferred: A"

    with OpenAIStub(judge) as stub:
        monkeypatch.setenv("HARNESS_JUDGE_API_KEY", KEY)
        monkeypatch.setenv("HARNESS_JUDGE_BASE_URL", stub.base_url)
        stub.fail_next(429, 500)  # retries log warnings: they must not carry the key either
        out = tmp_path / "runs"
        code, _ = cli(capsys, "run", "--preset", "tiny-test", "--iterations", "1", "-o", out, "--run-id", "secret",
                      "--set", f"model.cache_dir={private_cache}", "--set", "eval.judge=openai",
                      "--set", "eval.judge_model=stub-judge", "--set", "eval.every=0", "--set", "eval.prompts=4",
                      "--set", "train.prompts_per_iteration=4")
        assert stub.requests and stub.requests[-1].headers["authorization"] == f"Bearer {KEY}"  # it was used
    assert code == 0
    summary = json.loads((out / "secret" / "summary.json").read_text())
    assert summary["eval"]["win_rate_judge"] == "stub-judge"
    report = tmp_path / "report"
    code_report, _ = cli(capsys, "report", out, "--out", report)
    assert code_report == 0
    written = [p for root in (out, private_cache, report) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "judge_cache.sqlite" for p in written) and any(p.name == "report.md" for p in written)
    leaks = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert leaks == []
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err and KEY not in caplog.text
    assert "retry" in caplog.text  # the retry warnings were logged (and checked)


@pytest.mark.parametrize("role", ["policy", "reward_model"])
def test_pickled_only_model_directory_is_refused_without_unpickling(tiny_test_models, harness_cache, tmp_path, role):
    import shutil

    from harness.core.models import load_models

    from harness.tasks import resolve_paths

    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):  # unpickling this creates the marker file
            return (open, (str(marker), "w"))

    tiny = next(Path(harness_cache).glob("tiny-*"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny / "sft" / "config.json", pickled / "config.json")
    torch.save({"gpt_neox.embed_in.weight": Payload()}, pickled / "pytorch_model.bin")
    models = {"policy": str(tiny / "sft"), "reward_model": str(tiny / "reward"), "tokenizer": str(tiny / "sft")}
    cfg = resolve("tiny-test", {"model": {**models, role: str(pickled)}})
    with pytest.raises(UserError) as err:
        load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    what = "policy" if role == "policy" else "reward model"
    assert str(err.value).startswith(f"{what} '{pickled}' holds only pickled weights (pytorch_model.bin)")
    assert "convert them to safetensors" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()  # never unpickled


def test_missing_model_directory_is_a_one_line_error(tiny_test_models, harness_cache):
    from harness.core.models import load_models
    from harness.tasks import resolve_paths

    tiny = next(Path(harness_cache).glob("tiny-*"))
    cfg = resolve("tiny-test", {"model": {"policy": "/no/such/policy", "reward_model": str(tiny / "reward")}})
    with pytest.raises(UserError) as err:
        load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    assert str(err.value).startswith("cannot load tokenizer '/no/such/policy' (model.tokenizer, default model.policy")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("line", ['"just a string"', "[1, 2]", "null", '{"messages": ["hi"]}', '{"prompt": ""}'])
def test_bad_chat_rows_are_one_line_errors_with_file_and_line(tmp_path, line):
    from harness.tasks.chat import load_chat

    (tmp_path / "prompts_train.jsonl").write_text('{"prompt": "hello"}\n' + line + "\n")
    (tmp_path / "prompts_eval.jsonl").write_text('{"prompt": "hi"}\n')
    with pytest.raises(UserError) as err:
        load_chat(str(tmp_path), None)
    assert str(err.value).startswith(f"{tmp_path / 'prompts_train.jsonl'}:2: ") and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# architecture step: a sweep file with a YAML syntax error, a cache that cannot be created, a REBEL eta that
# would train toward lower reward

def test_sweep_file_with_a_yaml_syntax_error_is_one_line(capsys, tmp_path):
    bad = tmp_path / "sweep.yaml"
    bad.write_text("algorithms: [rebel, ppo\nseeds: [0]\n")
    code, lines = cli(capsys, "sweep", str(bad), "--dry-run")
    assert_one_line_error(code, lines, f"sweep file {bad} is not valid YAML", "line ")


def test_a_cache_that_cannot_be_created_fails_before_the_run_directory(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache directory should be: mkdir cannot create it
    monkeypatch.setenv("HARNESS_CACHE", str(blocker / "cache"))
    code, lines = cli(capsys, "run", "--algo", "rebel", "-o", str(tmp_path / "runs"), "-n", "1")
    assert_one_line_error(code, lines, f"the cache directory {blocker / 'cache'} cannot be created", "HARNESS_CACHE")
    assert not (tmp_path / "runs").exists()


def test_rebel_eta_that_is_not_positive_is_refused(capsys, tmp_path):
    code, lines = cli(capsys, "run", "--algo", "rebel", "--set", "algo.eta=-1", "-o", str(tmp_path))
    assert_one_line_error(code, lines, "invalid settings for 'rebel'", "eta must be > 0")
