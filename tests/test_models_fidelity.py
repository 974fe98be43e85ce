"""What the paper presets train, checked on local GPT-NeoX stand-ins: LoRA on PEFT's default targets
(query_key_value) for the policy and for the PPO critic (the reward model, its head frozen, values read with the
RM's bias subtracted), fp32 master weights whatever the frozen dtype, and the dry run's counts and memory plan."""
import pytest
import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

from algorithms.base import make
from harness.core.settings import LoraSettings
from harness.app.config import resolve
from harness.core.errors import UserError
from harness.core.experience import Budget
from harness.core.models import add_critic_lora, load_models, lora_config
from harness.tasks import resolve_paths
from harness.app.plan import Counts, dry_run, estimate_memory_gb, estimated_counts, memory_plan, parameter_counts
from harness.core.precision import Precision
from harness.core.scoring import token_values
from harness.tasks.tldr import load_task
from harness.core.train import Trainer
from tests.test_scale_presets import _save_stand_ins

HIDDEN, LAYERS = 32, 2  # the stand-ins' shape


def _lora_by_hand(r: int, hidden: int = HIDDEN, layers: int = LAYERS) -> int:
    """LoRA of rank r on query_key_value (hidden -> 3 hidden): A is r x hidden, B is 3 hidden x r, per block."""
    return layers * r * (hidden + 3 * hidden)


@pytest.fixture(scope="module")
def neox(tmp_path_factory, tiny_test_models):
    _, tiny, _ = tiny_test_models
    policy_dir, rm_dir, _ = _save_stand_ins(tmp_path_factory.mktemp("neox"), tiny.tokenizer, "gpt_neox")
    return policy_dir, rm_dir


def _paper_cfg(neox, algo="ppo", **model):
    """The 1.4B paper preset's model settings (its LoRA settings untouched) on the stand-ins."""
    policy_dir, rm_dir = neox
    return resolve("tldr-pythia-1.4b", {"algo": algo, "task": {"source": "synthetic", "max_prompt_tokens": 64},
                                        "model": {"policy": str(policy_dir), "reward_model": str(rm_dir), **model},
                                        "generation": {"max_new_tokens": 8},
                                        "train": {"prompts_per_iteration": 4, "micro_batch_prompts": 4}})


def test_lora_targets_default_to_pefts_choice_for_the_architecture():
    assert PEFT_DEFAULTS["gpt_neox"] == ["query_key_value"]  # what the authors' target-less LoraConfig gets
    paper = resolve("tldr-pythia-1.4b").model.lora
    assert paper.target_modules is None and (paper.r, paper.alpha, paper.dropout) == (1024, 2048, 0.0)
    config = lora_config(LoraSettings(r=8, alpha=16, dropout=0.1), "gpt_neox")
    assert set(config.target_modules) == {"query_key_value"} and config.lora_dropout == 0.1
    assert config.bias == "none" and config.lora_alpha == 16
    assert lora_config(LoraSettings(target_modules="all-linear"), "gpt_neox").target_modules == "all-linear"
    with pytest.raises(UserError, match="PEFT has no default for architecture 'mystery'"):
        lora_config(LoraSettings(), "mystery")


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_lora_policy_and_critic_train_query_key_value_adapters_only(neox):
    cfg = _paper_cfg(neox)
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=True)
    assert models.reference is None  # adapter_disabled, as the authors' ppo.py
    r = cfg.model.lora.r
    for model in (models.policy, models.critic):
        trainable = _trainable(model)
        assert trainable and all(".attention.query_key_value.lora_" in n for n in trainable)
        assert sum(p.numel() for p in trainable.values()) == _lora_by_hand(r)
        assert all(p.dtype == torch.float32 for p in trainable.values())
    assert not models.critic.score.weight.requires_grad  # the authors' get_peft_model(critic): head frozen
    # the dry run counts what was loaded, with the same LoraConfig builder
    assert parameter_counts(cfg.model.policy, cfg).trainable == _lora_by_hand(r)


def test_bf16_frozen_and_compute_keep_fp32_adapters_and_train(neox):
    """The GPU path on CPU: base weights and reward model in bf16, bf16 autocast, adapters fp32; one PPO iteration."""
    cfg = _paper_cfg(neox, frozen_dtype="bfloat16", compute_dtype="bfloat16", lora={"r": 4, "alpha": 8})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=True)
    assert models.precision.compute == torch.bfloat16 and models.precision.master == torch.float32
    for model in (models.policy, models.critic):
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
        assert {d for n, d in dtypes.items() if "lora_" not in n} == {models.precision.frozen}
    before = {n: p.detach().clone() for n, p in _trainable(models.policy).items()}
    line = Trainer(cfg, make("ppo"), models, load_task("synthetic").sft_train, Budget()).iteration(1)
    assert torch.isfinite(torch.tensor(line["loss"]))
    moved = [n for n, p in _trainable(models.policy).items() if not torch.equal(p, before[n])]
    assert moved and all(p.dtype == torch.float32 for p in _trainable(models.policy).values())


def test_full_fine_tuning_critic_is_the_whole_reward_model_in_fp32(neox):
    cfg = _paper_cfg(neox, lora=None, reference="frozen_copy", frozen_dtype="bfloat16")
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None), needs_critic=True)
    for model in (models.policy, models.critic):
        assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    assert {p.dtype for p in models.reference.parameters()} == {models.precision.frozen}


def test_critic_values_subtract_the_reward_models_bias(neox, tiny_test_models):
    from transformers import AutoModelForSequenceClassification

    critic = add_critic_lora(AutoModelForSequenceClassification.from_pretrained(neox[1]), LoraSettings(r=4, alpha=8))
    pad = tiny_test_models[1].pad_id
    query, response = torch.tensor([[pad, 5, 6]]), torch.tensor([[7, 8, pad]])
    mask = torch.tensor([[True, True, False]])
    critic.config.reward_bias = 0.0
    raw = token_values(critic, query, response, mask, pad)
    critic.config.reward_bias = 0.25  # the authors' ScalarModel: scalar_head(h) - config.bias, at every position
    assert torch.allclose(token_values(critic, query, response, mask, pad), (raw - 0.25) * mask)


def test_lora_critic_on_a_scalar_model_reward_head(tiny_test_models):
    """The TL;DR ScalarModel convention (harness/core/reward_heads.py) as critic: adapters on its backbone only."""
    from transformers import AutoModel, GPTNeoXConfig

    from harness.core.reward_heads import ScalarRewardModel

    config = GPTNeoXConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                           intermediate_size=64)
    critic = add_critic_lora(ScalarRewardModel(AutoModel.from_config(config), HIDDEN, bias=0.5), LoraSettings(r=4))
    trainable = _trainable(critic)
    assert all(n.startswith("lm_backbone.") and ".query_key_value.lora_" in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == _lora_by_hand(4) and critic.config.reward_bias == 0.5


def test_lora_critic_checkpoint_round_trip(neox, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from harness.core.checkpoint import load_weights, save_weights

    critic = add_critic_lora(AutoModelForSequenceClassification.from_pretrained(neox[1]), LoraSettings(r=4, alpha=8))
    saved = {n: p.detach().clone() for n, p in critic.named_parameters()}
    save_weights(critic, tmp_path / "critic")
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    load_weights(critic, tmp_path / "critic")
    assert all(torch.equal(p, saved[n]) for n, p in critic.named_parameters())


def test_estimated_trainable_counts_of_the_paper_presets_by_hand():
    assert estimated_counts(resolve("tldr-pythia-1.4b")).trainable == 24 * 1024 * (2048 + 3 * 2048)
    assert estimated_counts(resolve("tldr-pythia-2.8b")).trainable == 32 * 1024 * (2560 + 3 * 2560)
    all_linear = estimated_counts(resolve("tldr-pythia-2.8b", {"model": {"lora": {"target_modules": "all-linear"}}}))
    # + dense (h -> h), dense_h_to_4h (h -> 4h), dense_4h_to_h (4h -> h)
    assert all_linear.trainable == 32 * 1024 * 2560 * (4 + 2 + 5 + 5)


def test_memory_plan_follows_the_precision_policy_by_hand():
    gb = 1024**3
    mem = estimate_memory_gb(trainable=2**30, frozen_bytes={"reward_model": 2 * 2**30}, activation_tokens=1024,
                             hidden=1024, layers=32, activation_bytes=2)
    assert mem["trained"] == pytest.approx(16.0) and mem["reward_model"] == pytest.approx(2.0)
    assert mem["activations"] == pytest.approx(1024 * 1024 * 32 * 34 / gb)
    cfg = resolve("tldr-pythia-2.8b", {"algo": "ppo"})
    counts = Counts(total=2_800_000_000, trainable=335_544_320, exact=False, layers=32, hidden=2560)
    bf16 = Precision(compute=torch.bfloat16, frozen=torch.bfloat16)
    mem = memory_plan(counts, cfg, make("ppo"), bf16)
    # policy and critic adapters at 16 bytes; policy base, reward model, critic base at 2 bytes; no reference copy
    assert mem["trained"] == pytest.approx(2 * 335_544_320 * 16 / gb)
    assert mem["policy_base"] == mem["reward_model"] == mem["critic_base"] == pytest.approx(2.8e9 * 2 / gb)
    assert "reference" not in mem
    tokens = cfg.train.micro_batch_prompts * 1 * (512 + 53)
    assert mem["activations"] == pytest.approx(tokens * 2560 * 32 * 34 / gb)
    fp32 = memory_plan(counts, cfg, make("ppo"), Precision())
    assert fp32["policy_base"] == pytest.approx(2 * mem["policy_base"])


def test_dry_run_prints_episodes_steps_precision_and_exact_counts(neox):
    cfg = _paper_cfg(neox, algo="rebel", compute_dtype="float32", frozen_dtype="float32")
    lines = {line[:14].strip(): line[14:] for line in dry_run(cfg).lines}
    t = cfg.train
    episodes = t.iterations * t.prompts_per_iteration  # prompts, as the authors' total_episodes counts them
    assert f"= {episodes:,} episodes" in lines["plan"] and f"{t.iterations * 4:,} optimizer steps" in lines["plan"]
    assert f"= {episodes * 2:,} sampled responses" in lines["plan"]
    assert lines["precision"].startswith("trainable weights float32 (master weights, grads, AdamW states), "
                                         "compute float32, frozen models float32")
    assert "LoRA r 1024 on query_key_value; exact, from the local config" in lines["parameters"]
    assert "trained" in lines["memory"] and "reference" not in lines["memory"]


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_positions_shifted_by_left_padding_change_nothing_under_rotary_embeddings(tmp_path, tiny_test_models, arch):
    """The REBEL authors pass no position_ids in their training and scoring forwards, so a left-padded row's real
    tokens sit at positions shifted by its padding; the harness counts positions over real tokens
    (scoring.forward_inputs). Rotary embeddings make attention depend on position differences only, and the pads
    are masked out, so both give the same logits at every real token up to float rounding."""
    from transformers import AutoModelForCausalLM

    from harness.core.scoring import forward_inputs

    _, tiny, _ = tiny_test_models
    policy_dir, _, _ = _save_stand_ins(tmp_path, tiny.tokenizer, arch)
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    pad = tiny.tokenizer.pad_token_id
    g = torch.Generator().manual_seed(0)
    query = torch.randint(5, 200, (3, 12), generator=g)
    query[0, :5] = pad  # left padding of 5, 2 and 0 tokens
    query[1, :2] = pad
    response = torch.randint(5, 200, (3, 6), generator=g)
    harness = forward_inputs(query, response, pad)
    assert harness["position_ids"][0, 5].item() == 0  # the first real token is at position 0
    authors = {k: v for k, v in harness.items() if k != "position_ids"}  # positions 0..L-1, pads counted
    with torch.no_grad():
        a = model(**harness).logits
        b = model(**authors).logits
    real = harness["attention_mask"].bool()
    assert (a - b)[real].abs().max().item() < 1e-4
    # the shift is real: a model with learned absolute positions would see different inputs
    assert not torch.equal(harness["position_ids"][real], torch.arange(real.shape[1]).expand_as(real)[real])
