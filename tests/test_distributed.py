"""Data parallel with 2 CPU processes (gloo) through `accelerate launch` and the shipped DDP config file."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.distributed import Runtime, _buckets, derived_seed
from harness.errors import UserError
from harness.store import read_json, read_jsonl
from tests.distributed.dpo_step import dpo_step

ROOT = Path(__file__).resolve().parent.parent
DDP_CONFIG = ROOT / "configs" / "accelerate" / "ddp.yaml"


def launch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
                           "--num_processes", "2", "--main_process_port", str(port), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_two_processes_take_the_same_step_as_one_on_the_global_batch(tiny_test_models, harness_cache, tmp_path):
    """DPO reads fixed pairs, so the data-parallel step must equal the single-process step on the same 16 pairs:
    disjoint halves of the batch, one loss (the mean of the halves'), identical weights on both ranks, and the
    single process's weights."""
    dpo_step(harness_cache, tmp_path / "one", Runtime.single())
    done = launch("-m", "tests.distributed.dpo_step", harness_cache, str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "rank-0.json").read_text())
    ranks = [json.loads((tmp_path / "two" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["prompts"]) == len(ranks[1]["prompts"]) == 8
    assert ranks[0]["prompts"] + ranks[1]["prompts"] == one["prompts"]  # shards of the same global batch
    for r in ranks:
        assert r["line"]["prompts"] == one["line"]["prompts"] == 16  # counters summed over ranks
        assert r["line"]["loss"] == pytest.approx(one["line"]["loss"], abs=1e-6)  # statistics averaged
    w1 = torch.load(tmp_path / "one" / "weights-0.pt")
    w2 = [torch.load(tmp_path / "two" / f"weights-{r}.pt") for r in (0, 1)]
    before = tiny_test_models[1].policy.state_dict()
    assert any(not torch.equal(w1[n], before[n]) for n in w1)  # the step moved the weights
    for name in w1:
        assert torch.equal(w2[0][name], w2[1][name]), name  # gradients averaged: ranks stay identical
        torch.testing.assert_close(w2[0][name], w1[name], atol=2e-6, rtol=1e-5)


def test_harness_run_under_accelerate_launch_writes_one_run(tiny_test_models, harness_cache, tmp_path):
    done = launch("-m", "harness", "run", "--algo", "rebel", "--preset", "tiny-test", "--iterations", "2",
                  "-o", str(tmp_path), "--run-id", "dp", "--set", f"model.cache_dir={harness_cache}",
                  "--set", "eval.every=0", "--set", "eval.prompts=30")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["dp"]  # rank 0 alone writes
    summary = read_json(tmp_path / "dp" / "summary.json")
    assert summary["processes"] == 2 and summary["status"] == "completed"
    budget = summary["budget"]
    assert budget["prompts"] == 2 * 16 and budget["responses"] == 2 * 2 * 16  # the configured global batch
    assert budget["optimizer_steps"] == 2 * 4
    assert summary["eval"]["n"] == 30  # evaluation sharded over the ranks (15 + 15) and gathered
    samples, _ = read_jsonl(tmp_path / "dp" / "samples.jsonl")
    assert len(samples) == 30 and len({s["prompt"] for s in samples}) == 30
    lines, problems = read_jsonl(tmp_path / "dp" / "metrics.jsonl")
    assert not problems and [r["iteration"] for r in lines if not r.get("final")] == [1, 2]
    assert "2 data-parallel processes (gloo)" in done.stderr


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
    assert derived_seed(0, "sampling", 0) == derived_seed(0, "sampling", 0)
    assert len({derived_seed(0, "sampling", 0), derived_seed(0, "sampling", 1), derived_seed(0, "data-order", 0),
                derived_seed(1, "sampling", 0)}) == 4
