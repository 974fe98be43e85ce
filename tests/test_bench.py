"""`harness bench` end to end on a very small setting: every optimizer and TRL's RLOO, GRPO and DPO trainers (activation
checkpointing off and on), one process, bench.json in the keys the report's plot reads, the ratios to TRL with both
contenders' work settings, efficiency per phase, a PNG and a printed table without profiler noise."""
import json

import pytest

from algorithms.base import names
from harness.app.efficiency import PeakRss
from harness.cli import main

KEYS = {"generation_s", "scoring_s", "update_s", "total_s", "peak_memory_mb"}


def test_bench_writes_times_memory_and_trl_ratios(tiny_test_models, harness_cache, tmp_path, capfd):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as done:
        main(["bench", "--preset", "tiny-test", "--iterations", "1", "--warmup", "1", "--prompts", "4", "--rounds", "1",
              "--checkpointing", "both", "--out", str(out), "--set", f"model.cache_dir={harness_cache}",
              "--set", "generation.max_new_tokens=8"])
    assert done.value.code in (0, None)
    result = json.loads((out / "bench.json").read_text())
    assert set(result) == {"optimizers", "trl", "ratios", "setup", "machine"}
    assert set(result["optimizers"]) == set(names())
    for entry in [*result["optimizers"].values(), *result["trl"].values()]:
        assert KEYS <= set(entry) and entry["total_s"] > 0 and entry["peak_memory_mb"] >= 0
        assert entry["total_s"] >= entry["generation_s"] + entry["scoring_s"] - 1e-6
    opt = result["optimizers"]
    assert opt["dpo"]["generation_s"] == 0 and opt["rloo_k4"]["responses_per_prompt"] == 4
    assert opt["rebel"]["optimizer_steps_per_iteration"] == 4
    assert set(result["trl"]) == {f"{n}{c}" for n in ("rloo", "grpo", "dpo") for c in ("", "+checkpointing")}
    assert result["trl"]["rloo"]["generation_s"] > 0 and result["trl"]["grpo"]["generation_s"] > 0
    for name, ratio in result["ratios"].items():
        assert ratio["time"] > 0 and ratio["memory"] > 0 and len(ratio["time_by_round"]) == 1
        assert abs(ratio["time"] - ratio["ours"]["total_s"] / result["trl"][name]["total_s"]) < 0.01
        # identical work, as each contender reports it: float32 without autocast, the same checkpointing/threads
        ours, theirs = ratio["ours"]["work_settings"], result["trl"][name]["work_settings"]
        for key in ("compute_dtype", "autocast", "activation_checkpointing", "padding_free", "torch_threads"):
            assert ours[key] == theirs[key], (name, key)
        assert ours["compute_dtype"] == "float32" and not theirs["autocast"] and not theirs["bf16"]
        assert ours["activation_checkpointing"] == name.endswith("+checkpointing") == ratio["activation_checkpointing"]
    assert result["ratios"]["rloo"]["ours"]["settings"] == {"epochs": 1}  # TRL's RLOO: one update per batch
    grpo = result["ratios"]["grpo"]["ours"]
    assert grpo["algorithm"] == "grpo" and grpo["responses_per_prompt"] == 4
    m = result["machine"]
    assert m["matmul_gflops"]["float32"] > 0 and m["memory_bandwidth_gbs"] > 0
    eff = opt["rebel"]["efficiency"]
    assert 0 < eff["update"]["mfu"] < 1 and eff["generation"]["fraction_of_bandwidth_bound"] > 0
    assert result["trl"]["rloo"]["efficiency"]["update"]["tokens_per_s"] > 0
    s = result["setup"]
    assert s["preset"] == "tiny-test" and s["prompts_per_iteration"] == 4 and s["max_new_tokens"] == 8
    assert "torch.profiler" in s["memory_method"] and all("peak_rss_mb" in v for v in opt.values())
    assert (out / "bench.png").stat().st_size > 1000
    captured = capfd.readouterr()  # fd level: kineto writes to fd 2 itself
    assert "TRL rloo" in captured.out and "vs TRL time" in captured.out and "update MFU" in captured.out
    assert "USDT" not in captured.err + captured.out


def test_peak_rss_sees_a_large_allocation():
    import torch

    with PeakRss() as rss:
        rss.rebase()
        x = torch.ones(64, 2**20)  # 256 MB
        x += 1
        peak = rss.peak_mb()
        del x
    assert peak > 200


def _toy(cls, **kw):
    from transformers import GPTNeoXConfig

    cfg = GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, rotary_pct=0.25, use_parallel_residual=True, pad_token_id=0,
                        eos_token_id=1, **kw)
    return cls(cfg).eval()


def test_phase_counter_flops_and_mfu_by_hand():
    import torch
    from transformers import GPTNeoXForCausalLM

    from harness.app.efficiency import PhaseCounter, efficiency

    model = _toy(GPTNeoXForCausalLM)
    n = sum(p.numel() for p in model.gpt_neox.layers.parameters()) + sum(
        p.numel() for p in model.gpt_neox.final_layer_norm.parameters())  # body minus embed_in (and the LM head)
    counter = PhaseCounter().watch(model, model)  # the same model twice is counted once
    ids = torch.randint(2, 50, (3, 7))
    with counter.during("update"):
        model(input_ids=ids).logits.sum().backward()
    with counter.during("generation"), torch.no_grad():
        model(input_ids=ids[:, :1])
    counter.close()
    assert counter.counts["update"] == {"calls": 1, "tokens": 21, "flops": 6 * n * 21}
    assert counter.counts["generation"]["flops"] == 2 * n * 3
    peaks = {"matmul_gflops": {"float32": 2.0}, "memory_bandwidth_gbs": 1.0}
    e = efficiency(counter.counts, {"update_s": 0.5, "generation_s": 0.25}, peaks, "float32", 10**6, iterations=2)
    assert e["update"]["model_gflops"] == round(6 * n * 21 / 1.0 / 1e9, 3)
    assert e["update"]["mfu"] == round(6 * n * 21 / 1e9 / 2.0, 4) and e["update"]["tokens_per_s"] == 21.0
    assert e["generation"]["bandwidth_bound_calls_per_s"] == 1000.0  # 1 GB/s over 1 MB of weights
    assert e["generation"]["fraction_of_bandwidth_bound"] == round(1 / 0.5 / 1000, 4)


def test_build_batches_without_padding_columns_give_the_same_losses():
    """The tiny build's speed-ups change no number: trimmed batches and the RM pair's shared prompt forward equal
    full-width cross-entropy and a Bradley-Terry loss from two separate [prompt | response] forwards."""
    import torch
    from transformers import GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    import torch.nn.functional as F

    from harness.core.scoring import cross_entropy_on_response, forward_inputs, pairwise_reward_loss
    from harness.tasks.tiny import _trim

    def two_forwards(rm, q, c, cm, r, rmask, pad):  # the classifier's own pooling, each response with its prompt
        score = lambda resp: rm(**forward_inputs(q, resp, pad)).logits.float().squeeze(-1)
        r_c, r_r = score(c), score(r)
        return -F.logsigmoid(r_c - r_r).mean(), (r_c > r_r).float().mean()

    torch.manual_seed(0)
    lm, rm = _toy(GPTNeoXForCausalLM), _toy(GPTNeoXForSequenceClassification, num_labels=1)
    q, c, r = torch.randint(2, 50, (6, 10)), torch.randint(2, 50, (6, 7)), torch.randint(2, 50, (6, 7))
    cm, rmask = torch.zeros(6, 7, dtype=torch.bool), torch.zeros(6, 7, dtype=torch.bool)
    for i in range(6):
        q[i, :i] = 0
        cm[i, : 1 + i % 4], rmask[i, : 2 + i % 3] = True, True
    c[~cm], r[~rmask] = 0, 0
    idx = torch.tensor([3, 4, 5])
    trimmed = _trim(idx, q, c, cm, r, rmask, pad=0)
    assert trimmed[0].shape == (3, 7) and trimmed[1].shape == (3, 4)  # 3 prompt and 3 response pad columns gone
    full = two_forwards(rm, q[idx], c[idx], cm[idx], r[idx], rmask[idx], 0)
    for a, b in zip(full, pairwise_reward_loss(rm, *trimmed, 0)):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(cross_entropy_on_response(lm, q[idx], c[idx], cm[idx], 0),
                          cross_entropy_on_response(lm, *_trim(idx, q, c, cm, pad=0), 0), atol=1e-6)


def test_bench_times_what_staleness_and_each_correction_cost(tiny_test_models, harness_cache, tmp_path):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as done:
        main(["bench", "--preset", "tiny-test", "--iterations", "1", "--warmup", "1", "--prompts", "4", "--rounds", "1",
              "--algo", "rebel", "--no-trl", "--off-policy", "--out", str(out), "--set",
              f"model.cache_dir={harness_cache}", "--set", "generation.max_new_tokens=8"])
    assert done.value.code in (0, None)
    result = json.loads((out / "bench.json").read_text())
    rows = result["off_policy"]
    assert set(rows) == {"on-policy", "staleness 2", "staleness 2 + token_truncate", "staleness 2 + sequence_mask"}
    assert rows["on-policy"]["time_ratio"] == 1.0 and rows["staleness 2"]["settings"] == {"staleness": 2}
    for v in rows.values():
        assert v["total_s"] > 0 and abs(v["time_ratio"] - v["total_s"] / rows["on-policy"]["total_s"]) < 0.01
