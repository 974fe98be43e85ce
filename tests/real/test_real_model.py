"""The chat preset's loading and training path on a real pretrained chat model (SmolLM2-135M-Instruct, Llama
architecture), not on a model the project built: its tokenizer, chat template and special tokens are someone else's."""
from __future__ import annotations

import json
import math

import pytest
import torch

from harness.app.config import resolve
from harness.core.store import read_json, read_jsonl

PROMPTS = ["Name one fruit that is yellow.", "What is two plus two?", "Say hello to a friend.",
           "Which animal barks?"]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    """The chat task's local-directory source: a handful of prompts, one of them as a chat transcript."""
    out = tmp_path_factory.mktemp("chat-data")
    rows = [{"prompt": p} for p in PROMPTS[:3]] + [{"messages": [{"role": "user", "content": PROMPTS[3]}]}]
    for name in ("prompts_train.jsonl", "prompts_eval.jsonl"):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def chat_config(smollm2_dir, chat_data, tmp_path, **model):
    """The Table 2 chat preset with the real small model in place of Llama-3-8B and small numbers everywhere."""
    return resolve("chat-llama3-8b-ultrafeedback", {
        "task": {"source": str(chat_data), "max_prompt_tokens": 96},
        "model": {"policy": str(smollm2_dir), "reward_model": str(smollm2_dir), "frozen_dtype": "float32",
                  "trainable_layers": 2, **model},
        "algo_args": {"epochs": 1},  # the preset's 4 inner epochs cost 4 backward passes and test nothing more
        "generation": {"max_new_tokens": 8},
        "train": {"iterations": 2, "prompts_per_iteration": 2, "micro_batch_prompts": 2, "lr": 1e-5,
                  "checkpoint_every": 0},
        "eval": {"prompts": 1, "judge": "none"},
        "output_dir": str(tmp_path / "runs"), "run_id": "real"})


def test_chat_preset_loads_the_real_model_with_its_own_tokens(smollm2_dir, chat_data, tmp_path):
    from harness.core.models import load_models
    from harness.tasks import resolve_paths
    from harness.tasks import load

    cfg = chat_config(smollm2_dir, chat_data, tmp_path)
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    assert type(models.policy).__name__ == "LlamaForCausalLM" and models.policy.config.num_hidden_layers == 30
    # last-2-layers training: blocks 28 and 29 train, the 28 blocks below them do not
    trainable = {n for n, p in models.policy.named_parameters() if p.requires_grad}
    blocks = {int(n.split(".")[2]) for n in trainable if n.startswith("model.layers.")}
    assert blocks == {28, 29}
    assert all(not p.requires_grad for p in models.reference.parameters())  # the frozen reference
    assert models.reference is not models.policy
    # a scalar reward head on the same backbone: a Llama sequence classifier with one output, frozen
    rm = models.reward_model
    assert type(rm).__name__ == "LlamaForSequenceClassification" and rm.score.out_features == 1
    assert not any(p.requires_grad for p in rm.parameters())
    # SmolLM2's own pad is its EOS (<|im_end|>), which also closes every chat turn: the harness gives it a pad of
    # its own, or the turns of every prompt would be masked out as padding
    tok = models.tokenizer
    assert tok.pad_token_id != tok.eos_token_id and tok.eos_token == "<|im_end|>"
    _, data = load("chat", str(chat_data), None)
    ids = data.sft_train[0].encode_prompt(tok, 96)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith(f"{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n")
    assert tok.pad_token_id not in ids and ids.count(tok.eos_token_id) == 2  # system and user turns end in EOS


def test_lora_on_the_real_model_keeps_a_frozen_reference(smollm2_dir, chat_data, tmp_path):
    from harness.core.models import load_models
    from harness.tasks import resolve_paths

    cfg = chat_config(smollm2_dir, chat_data, tmp_path, trainable_layers=None,
                      lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    trainable = [n for n, p in models.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)
    assert len(trainable) == 2 * 2 * 30  # A and B of q and v in each of the 30 blocks
    assert models.reference is not None and not any(p.requires_grad for p in models.reference.parameters())
    x = torch.tensor([[1, 4093, 198, 26843, 665]])
    with torch.no_grad():  # LoRA's B starts at zero: policy == reference before any step
        assert torch.allclose(models.policy(x).logits, models.reference(x).logits, atol=1e-5)


def test_two_rebel_iterations_on_the_real_model(smollm2_dir, chat_data, tmp_path):
    from harness.app.runner import run

    path = run(chat_config(smollm2_dir, chat_data, tmp_path))
    lines, problems = read_jsonl(path / "metrics.jsonl")
    train = [line for line in lines if "loss" in line]
    assert not problems and len(train) == 2
    assert all(math.isfinite(line["loss"]) for line in train)
    summary = read_json(path / "summary.json")
    assert summary["status"] == "completed" and summary["task"] == "chat" and summary["algorithm"] == "rebel"
    assert all(math.isfinite(summary["eval"][k]) for k in ("rm_score", "kl"))
    from safetensors.torch import load_file

    weights = load_file(next((path / "checkpoints" / "final").glob("*.safetensors")))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    samples, _ = read_jsonl(path / "samples.jsonl")
    assert len(samples) == 1 and all(isinstance(s["response"], str) for s in samples)
