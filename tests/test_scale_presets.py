"""Paper-scale presets resolve and dry-run offline; their loading code runs on tiny stand-ins saved locally with the
same architectures (GPT-NeoX, Llama, Mistral) and reward-head conventions (sequence classifier, ScalarModel)."""
import json
import subprocess
import sys

import pytest
import torch

from algorithms.base import make
from harness.app.config import preset_names, resolve
from harness.core.errors import UserError
from harness.core.experience import Budget
from harness.core.models import load_models
from harness.tasks import resolve_paths
from harness.app.plan import dry_run
from harness.tasks.tldr import load_task
from harness.core.train import Trainer

PAPER_PRESETS = ["tldr-pythia-1.4b", "tldr-pythia-2.8b", "tldr-pythia-6.9b", "chat-llama3-8b-ultrafeedback",
                 "chat-openchat-3.5-nectar"]


def test_every_preset_resolves_with_the_papers_settings():
    assert set(PAPER_PRESETS) <= set(preset_names())
    for name in PAPER_PRESETS:
        cfg = resolve(name)
        assert cfg.model.reward_model and cfg.eval.prompts > 0
    small, big = resolve("tldr-pythia-2.8b"), resolve("tldr-pythia-6.9b")
    # LoRA at every size, as the authors' scripts (docs/fidelity.md); the paper text's 6.9B full fine-tuning is
    # an override
    assert (small.model.lora.r, small.model.lora.alpha) == (1024, 2048) and big.model.lora == small.model.lora
    assert small.train.prompts_per_iteration == 512 and small.train.lr == 3e-6 and small.train.kl_coef == 0.05
    assert small.generation.max_new_tokens == 53
    chat = resolve("chat-openchat-3.5-nectar")
    assert chat.task.name == "chat" and chat.model.trainable_layers == 4 and chat.train.lr == 1e-7
    assert chat.train.prompts_per_iteration == 32 and chat.task.max_prompt_tokens == 1024
    assert chat.generation.max_new_tokens == 1024


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_dry_run_offline_names_what_is_missing(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--preset", name, "--dry-run"],
                          capture_output=True, text=True, timeout=120, env={**__import__("os").environ})
    assert proc.returncode == 1, proc.stderr
    assert "not ready" in proc.stdout and "NOT reachable" in proc.stdout
    assert "memory" in proc.stdout and "plan" in proc.stdout


def _save_stand_ins(tmp_path, tokenizer, arch: str):
    """A tiny causal LM and a reward model of architecture `arch`, saved like hub checkpoints."""
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, GPTNeoXConfig, LlamaConfig,
                              MistralConfig)

    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    config = {"gpt_neox": lambda: GPTNeoXConfig(**common), "llama": lambda: LlamaConfig(num_key_value_heads=2, **common),
              "mistral": lambda: MistralConfig(num_key_value_heads=1, sliding_window=None, **common)}[arch]()
    torch.manual_seed(0)
    policy_dir, rm_dir = tmp_path / f"{arch}-policy", tmp_path / f"{arch}-rm"
    AutoModelForCausalLM.from_config(config).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(rm_dir)
    return policy_dir, rm_dir, config


def _one_iteration(cfg):
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    trainer = Trainer(cfg, make(cfg.algo), models, load_task("synthetic").sft_train, Budget())
    line = trainer.iteration(1)
    return models, line


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "mistral"])
def test_loading_code_runs_on_local_stand_ins(arch, tmp_path, tiny_test_models):
    _, tiny, _ = tiny_test_models
    policy_dir, rm_dir, _ = _save_stand_ins(tmp_path, tiny.tokenizer, arch)
    cfg = resolve("tiny-test", {"model": {"policy": str(policy_dir), "reward_model": str(rm_dir),
                                          "lora": {"r": 4, "alpha": 8}, "reference": "adapter_disabled"},
                                "train": {"prompts_per_iteration": 4}})
    models, line = _one_iteration(cfg)
    assert models.reference is None  # LoRA: the reference is the adapter-disabled policy
    assert abs(line["kl"]) < 1e-5 and line["optimizer_steps"] == 4 and torch.isfinite(torch.tensor(line["loss"]))
    trainable = [n for n, p in models.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    plan = dry_run(cfg)
    assert any(line.startswith("parameters") and "trainable" in line for line in plan.lines)


def test_scalar_model_reward_head_convention(tmp_path, tiny_test_models):
    """The TL;DR ScalarModel layout: config with base_config and bias, weights lm_backbone.* + scalar_head.*"""
    from safetensors.torch import save_file
    from transformers import AutoModel

    from harness.core.models import load_reward_model
    from harness.core.scoring import reward_scores

    _, tiny, data = tiny_test_models
    tok = tiny.tokenizer
    policy_dir, _, config = _save_stand_ins(tmp_path, tok, "gpt_neox")
    backbone = AutoModel.from_config(config)
    head = torch.nn.Linear(config.hidden_size, 1)
    state = {f"lm_backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({"scalar_head.weight": head.weight.detach(), "scalar_head.bias": head.bias.detach()})
    rm_dir = tmp_path / "scalar-rm"
    rm_dir.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, rm_dir / "model.safetensors")
    (rm_dir / "config.json").write_text(json.dumps({"base_config": config.to_dict(), "hidden_size": 32, "bias": 0.25,
                                                    "base_model": "local"}))
    rm = load_reward_model(str(rm_dir), tok)
    query = torch.tensor([[tok.pad_token_id, 5, 6]])
    response = torch.tensor([[7, tok.eos_token_id, tok.pad_token_id]])
    mask = torch.tensor([[True, True, False]])
    hidden = backbone(input_ids=torch.tensor([[0, 5, 6, 7, tok.eos_token_id]]),
                      attention_mask=torch.tensor([[0, 1, 1, 1, 1]]),
                      position_ids=torch.tensor([[0, 0, 1, 2, 3]])).last_hidden_state
    expected = head(hidden[0, -1]).item() - 0.25  # read at EOS, bias subtracted
    assert reward_scores(rm, query, response, mask, tok.pad_token_id).item() == pytest.approx(expected, abs=1e-5)
    (rm_dir / "model.safetensors").rename(rm_dir / "pytorch_model.bin")
    with pytest.raises(UserError, match="no safetensors weights; pickled weights are never loaded"):
        load_reward_model(str(rm_dir), tok)


def test_chat_task_and_last_layers_training(tmp_path, tiny_test_models):
    _, tiny, _ = tiny_test_models
    tok = __import__("copy").deepcopy(tiny.tokenizer)  # the session's tokenizer stays template-free
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    policy_dir, rm_dir, _ = _save_stand_ins(tmp_path, tok, "llama")
    data = tmp_path / "chat"
    data.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"question {i}?"}], "chosen": "yes", "rejected": "no"}
            for i in range(8)]
    rows += [{"prompt": "Human: hi there\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:"}]
    for name in ("prompts_train.jsonl", "prompts_eval.jsonl"):
        (data / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = resolve("chat-llama3-8b-ultrafeedback", {
        "task": {"source": str(data)}, "model": {"policy": str(policy_dir), "reward_model": str(rm_dir),
                                                 "dtype": "float32", "trainable_layers": 1},
        "generation": {"max_new_tokens": 8}, "train": {"prompts_per_iteration": 4, "lr": 1e-3},
        "eval": {"prompts": 4}})
    from harness import tasks

    _, task = tasks.load("chat", cfg.task.source)
    assert task.sft_train[-1].messages[-1] == {"role": "user", "content": "how are you?"}
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    trainable = {n for n, p in models.policy.named_parameters() if p.requires_grad}
    # the last block of two, the final norm and the (untied) head, as the authors' chat scripts train
    assert trainable and all(".layers.1." in n for n in trainable - {"model.norm.weight", "lm_head.weight"})
    assert {"model.norm.weight", "lm_head.weight"} <= trainable
    before = {n: p.detach().clone() for n, p in models.policy.named_parameters()}
    # DPO on the rows' pairs: a gradient from the first step on (8 sampled tokens of a random model rarely reach
    # EOS, and equal missing-EOS scores give an on-policy optimizer nothing to learn)
    trainer = Trainer(cfg, make("dpo"), models, task.pref_train, Budget())
    trainer.iteration(1)
    changed = {n for n, p in models.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_chat_head_training_follows_the_authors_rule():
    """The authors' chat scripts train the last blocks, the final norm and lm_head; a tied lm_head stays frozen
    (otherwise the input embeddings would train too)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from harness.core.models import train_only_last_layers

    assert resolve("chat-llama3-8b-ultrafeedback").model.train_head
    for tied in (False, True):
        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                             num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
        model = AutoModelForCausalLM.from_config(config)
        train_only_last_layers(model, 2, head=True)
        trainable = {n.split(".")[1] if n.startswith("model.layers") else n
                     for n, p in model.named_parameters() if p.requires_grad}
        assert {"model.norm.weight"} <= trainable and "model.embed_tokens.weight" not in trainable
        assert ("lm_head.weight" in trainable) == (not tied)
        assert {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("model.layers")} == {
            n for n, _ in model.named_parameters() if n.startswith(("model.layers.1.", "model.layers.2."))}


class SpanRewardModel(torch.nn.Module):
    """A stand-in reward model whose score range is set: score = span x (a fixed pseudo-random number in [0, 1)
    from the real tokens), so scores of different responses differ by up to `span`."""

    def __init__(self, span: float, eos_id: int):
        super().__init__()
        self.span = span
        self.config = type("C", (), {"eos_token_id": eos_id, "reward_bias": 0.0})()

    def forward(self, input_ids, attention_mask, **_):
        code = (input_ids * attention_mask * torch.arange(1, input_ids.shape[1] + 1)).sum(-1) % 101
        return type("O", (), {"logits": (self.span * code.float() / 101)[:, None]})()


def test_scale_check_catches_the_mixed_setting_on_the_tasks_own_pairs(tiny_test_models):
    """The UltraFeedback preset's terms (kl_coef 0.05, missing-EOS score -4) on a handful of the task's preference
    pairs: reward differences of order 1 pass unscaled and fail at 1/1000 (the mixed setting: the paper's reward
    model with the code's scale); differences of order 1000 pass at 1/1000 (the code's Eurus setting)."""
    from harness.app.reward_scale import HANDFUL, KL_FLOOR, measure

    _, tiny, data = tiny_test_models
    tok = tiny.tokenizer

    def check(span, scale):
        cfg = resolve("chat-llama3-8b-ultrafeedback", {"train": {"reward_scale": scale},
                                                         "generation": {"max_new_tokens": 32},
                                                         "task": {"max_prompt_tokens": 64}})
        return measure(SpanRewardModel(span, tok.eos_token_id), tok, data.pref_train, cfg)

    unscaled, mixed, code = check(2.0, 1.0), check(2.0, 1e-3), check(2000.0, 1e-3)
    assert unscaled.pairs == mixed.pairs == HANDFUL
    assert unscaled.problems == [] and code.problems == []
    assert mixed.median_difference == pytest.approx(unscaled.median_difference * 1e-3)
    assert mixed.median_difference < KL_FLOOR * mixed.kl_unit
    assert len(mixed.problems) == 2 and "KL term" in mixed.problems[0] and "missing-EOS" in mixed.problems[1]


def test_scale_check_sees_a_missing_eos_score_that_rewards_not_ending(tiny_test_models):
    """Unscaled scores of order 1000 with the -4 missing-EOS score: most responses score below it."""
    from harness.app.reward_scale import measure

    _, tiny, data = tiny_test_models

    class Negative(SpanRewardModel):
        def forward(self, input_ids, attention_mask, **kw):
            out = super().forward(input_ids, attention_mask)
            out.logits = out.logits - self.span
            return out

    cfg = resolve("chat-llama3-8b-ultrafeedback", {"generation": {"max_new_tokens": 32},
                                                     "task": {"max_prompt_tokens": 64}})
    result = measure(Negative(2000.0, tiny.tokenizer.eos_token_id), tiny.tokenizer, data.pref_train, cfg)
    assert result.share_below_penalty > 0.5
    assert any("not ending would be rewarded" in p for p in result.problems)


def test_ultrafeedback_dry_run_prints_its_reward_scale_and_refuses_the_mixed_setting(tmp_path, tiny_test_models):
    """The preset's dry run on local stand-ins (a Llama reward model whose score head is set so its scores differ
    by a median of 1.0 on the data's pairs): it says the scale and why, measures it on the data's own pairs, and
    is not ready at 1/1000."""
    from harness.app.reward_scale import measure
    from harness.core.models import load_reward_model

    _, tiny, _ = tiny_test_models
    tok = __import__("copy").deepcopy(tiny.tokenizer)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    policy_dir, rm_dir, _ = _save_stand_ins(tmp_path, tok, "llama")
    data = tmp_path / "chat"
    data.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"question {i}?"}], "chosen": f"yes {i} " * (i + 1),
             "rejected": "no " * (2 * i + 1)} for i in range(10)]
    for name in ("prompts_train.jsonl", "prompts_eval.jsonl"):
        (data / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def config(scale, rm):
        return resolve("chat-llama3-8b-ultrafeedback", {
            "task": {"source": str(data), "max_prompt_tokens": 64}, "generation": {"max_new_tokens": 32},
            "model": {"policy": str(policy_dir), "reward_model": str(rm), "dtype": "float32"},
            "train": {"reward_scale": scale}})

    from harness import tasks

    pairs = tasks.load("chat", str(data))[1].pref_train
    rm = load_reward_model(str(rm_dir), tok)
    raw = measure(rm, tok, pairs, config(1.0, rm_dir)).median_difference
    with torch.no_grad():
        rm.score.weight.mul_(1.0 / raw)  # the score range, set: a median difference of 1.0
    set_dir = tmp_path / "rm-range-set"
    rm.save_pretrained(set_dir)
    assert measure(load_reward_model(str(set_dir), tok), tok, pairs, config(1.0, set_dir)).median_difference == (
        pytest.approx(1.0, rel=1e-3))

    ok = dry_run(config(1.0, set_dir))
    text = "\n".join(ok.lines)
    assert "reward scale  1 x" in text and "scale check   measured on 8 preference pairs" in text
    assert not [p for p in ok.problems if p.startswith("reward scale")]
    mixed = dry_run(config(1e-3, set_dir))
    assert [p for p in mixed.problems if p.startswith("reward scale") and "far below the KL term" in p]
    # the hub preset itself, offline: the scale and its source, the measurement skipped with the reason
    hub = dry_run(resolve("chat-llama3-8b-ultrafeedback"))
    assert any("App. I.2.2" in line for line in hub.lines)
    assert any(line.startswith("scale check   not measured here") for line in hub.lines)
