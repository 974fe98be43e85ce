"""Data parallel and FSDP2 sharding with 2 CPU processes (gloo) through `accelerate launch` and the shipped
config files (configs/accelerate/ddp.yaml, fsdp.yaml)."""
import json

import pytest
import torch

from harness.core.distributed import Runtime, _buckets, derived_seed
from harness.core.errors import UserError
from harness.core.fsdp import FsdpSettings
from harness.core.store import read_json, read_jsonl
from tests.distributed.launch import launch
from tests.distributed.worker import dpo_step

SETUPS = ["ddp", "fsdp"]
SAME = ("loss", "score", "kl", "reward", "ppo/value_loss", "ppo/policy_loss", "prompts", "optimizer_steps", "lr")


@pytest.fixture(scope="module")
def one_process(tiny_test_models, harness_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    dpo_step(harness_cache, out, Runtime.single(), tiny_test_models[2])
    return out


@pytest.mark.parametrize("setup", SETUPS)
def test_two_processes_step_like_one_and_resume_exactly(setup, one_process, tiny_test_models, harness_cache,
                                                         tmp_path):
    """DPO reads fixed pairs, so the 2-process step must equal the 1-process step on the same 16 pairs: disjoint
    halves of the batch, one loss (the mean of the halves'), identical weights on both ranks, and the single
    process's weights. Then a PPO checkpoint written by both ranks brings fresh models back to the same numbers."""
    done = launch(setup, "-m", "tests.distributed.worker", harness_cache, str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((one_process / "dpo-0.json").read_text())
    ranks = [json.loads((tmp_path / f"dpo-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["prompts"]) == len(ranks[1]["prompts"]) == 8
    assert ranks[0]["prompts"] + ranks[1]["prompts"] == one["prompts"]  # shards of the same global batch
    for r in ranks:
        assert r["line"]["prompts"] == one["line"]["prompts"] == 16  # counters summed over ranks
        assert r["line"]["loss"] == pytest.approx(one["line"]["loss"], abs=1e-6)  # statistics averaged
    w1 = torch.load(one_process / "weights-0.pt")
    before = tiny_test_models[1].policy.state_dict()
    assert any(not torch.equal(w1[n], before[n]) for n in w1)  # the step moved the weights
    w2 = torch.load(tmp_path / "weights-0.pt")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=2e-6, rtol=1e-5)
    if setup == "ddp":  # replicated: both ranks hold the very same weights
        w2b = torch.load(tmp_path / "weights-1.pt")
        assert all(torch.equal(w2[n], w2b[n]) for n in w2)
    for r in (0, 1):
        trip = json.loads((tmp_path / f"round-trip-{r}.json").read_text())
        assert trip["start"] == 1
        assert {k: trip["resumed"][k] for k in SAME} == {k: trip["straight"][k] for k in SAME}


@pytest.mark.parametrize("setup", SETUPS)
def test_harness_run_under_accelerate_launch_writes_one_run(setup, tiny_test_models, harness_cache, tmp_path):
    done = launch(setup, "-m", "harness", "run", "--algo", "rebel", "--preset", "tiny-test", "--iterations", "2",
                  "-o", str(tmp_path), "--run-id", "dp", "--set", f"model.cache_dir={harness_cache}",
                  "--set", "eval.every=1", "--set", "eval.prompts=30", "--set", "train.checkpoint_every=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["dp"]  # rank 0 alone writes
    summary = read_json(tmp_path / "dp" / "summary.json")
    assert summary["processes"] == 2 and summary["status"] == "completed"
    budget = summary["budget"]
    assert budget["prompts"] == 2 * 16 and budget["responses"] == 2 * 2 * 16  # the configured global batch
    assert budget["optimizer_steps"] == 2 * 4
    assert summary["eval"]["n"] == 30  # evaluation sharded over the ranks (15 + 15) and gathered
    assert summary["eval"]["rm_score"] != summary["sft"]["rm_score"]  # the evaluated policy is the trained one
    samples, _ = read_jsonl(tmp_path / "dp" / "samples.jsonl")
    assert len(samples) == 30 and len({s["prompt"] for s in samples}) == 30
    lines, problems = read_jsonl(tmp_path / "dp" / "metrics.jsonl")
    assert not problems and [r["iteration"] for r in lines if not r.get("final")] == [1, 2]
    assert "eval/rm_score" in lines[0]
    assert (tmp_path / "dp" / "checkpoints" / "final" / "model.safetensors").exists()
    kind = "FSDP2-sharded" if setup == "fsdp" else "data-parallel"
    assert f"2 {kind} processes (gloo)" in done.stderr


def test_fsdp_settings_come_from_accelerate_and_deepspeed_is_refused(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert FsdpSettings.from_environment() is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(UserError, match="fsdp_version: 2"):
        FsdpSettings.from_environment()
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_SHARDING_STRATEGY", "SHARD_GRAD_OP")
    assert FsdpSettings.from_environment() == FsdpSettings(reshard_after_forward=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UserError, match="DeepSpeed is not wired"):
        FsdpSettings.from_environment()


def test_batch_that_does_not_split_evenly_is_refused():
    runtime = Runtime(rank=1, world_size=3)
    assert runtime.shard(list(range(6))) == [2, 3]
    assert runtime.split(list(range(7))) == [2, 3]  # evaluation: uneven parts are fine
    with pytest.raises(UserError, match="16 prompts cannot be split evenly over 3 processes"):
        runtime.shard(list(range(16)))


def test_gradient_buckets_cover_every_parameter_once_and_keep_one_dtype():
    params = [torch.nn.Parameter(torch.zeros(n, dtype=d)) for n, d in
              [(5, torch.float32), (7, torch.float32), (3, torch.bfloat16), (20, torch.float32)]]
    for p in params:
        p.grad = torch.zeros_like(p)
    buckets = list(_buckets(params, size=10))
    assert [len(b) for b in buckets] == [2, 1, 1]
    assert all(len({p.grad.dtype for p in b}) == 1 for b in buckets)


def test_seed_streams_differ_by_stream_and_rank_and_are_stable():
    # stable: the first 7 bytes of sha256("0/sampling/0"), the same in every process, run and version
    assert derived_seed(0, "sampling", 0) == 1244218713883711
    assert derived_seed(3, "minibatches", 1) == 60753831816269863
    assert len({derived_seed(0, "sampling", 0), derived_seed(0, "sampling", 1), derived_seed(0, "data-order", 0),
                derived_seed(1, "sampling", 0)}) == 4
