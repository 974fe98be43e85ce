"""benchmarks/gpu_check.py --cpu-dry-run: the GPU check's own code at toy size on the CPU (the GPU run is one device
command; this keeps the script from rotting between the sessions that are lent a GPU)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_checks_every_optimizer_and_the_paper_comparison(tiny_test_models, harness_cache, tmp_path):
    from algorithms.base import names

    gpu_check = load_script()
    code = gpu_check.main(["--cpu-dry-run", "--cache", harness_cache, "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    md = (tmp_path / "gpu_check.md").read_text()
    assert code == 0, md
    tests = result["tests"]
    assert tests["ok"] and tests["collect_only"] and "tests/test_engines.py" in tests["command"]
    assert all(name in tests["output_tail"] for name in ("test_precision", "test_engines"))  # the selection exists
    tiny = result["tiny"]
    assert set(tiny["optimizers"]) == set(names()) and not tiny["skipped_for_time"]
    for name, row in tiny["optimizers"].items():
        # CPU against CPU in fp32: the same update on a copied batch gives the same loss, bit for bit
        assert row["float32"]["relative_difference"] == 0.0, name
        assert row["float32"]["finite"] and row["bfloat16"]["finite"] and len(row["bfloat16"]["losses"]) == 2
        assert row["bfloat16"]["compute_dtype"] == "bfloat16" and row["bfloat16"]["trained_dtype"] == "torch.float32"
    scale = result["scale"]
    assert scale["engine"] == "hf" and set(scale["sizes"]) == {"pythia-2.8b"}  # at toy size, one stands for both
    for size in scale["sizes"].values():
        assert set(size["contenders"]) == {"rebel", "ppo", "rloo_k4", "grpo", "dpo", "TRL rloo", "TRL grpo", "TRL dpo"}
        for key, row in size["contenders"].items():
            assert row["ok"] and row["total_s"] > 0 and row["peak_memory_mb"] > 0, (key, row)
        assert size["lora"]["r"] == 1024 and size["contenders"]["TRL grpo"]["generation_s"] > 0
    assert "## (c) runtime and peak memory at real size" in md and "| TRL grpo |" in md


def test_the_real_run_stops_without_a_gpu(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script().main(["--out", "/nonexistent"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["pythia-1.4b", "pythia-2.8b"])
def test_the_pythia_shapes_give_their_published_sizes(size):
    """Parameter counts of the hard-coded configurations against the sizes EleutherAI publishes (1.41B, 2.78B)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    gpu_check = load_script()
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**gpu_check.PYTHIA_COMMON, **gpu_check.PYTHIA[size]))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - {"pythia-1.4b": 1_414_647_808, "pythia-2.8b": 2_775_208_960}[size]) < 1e6, n
