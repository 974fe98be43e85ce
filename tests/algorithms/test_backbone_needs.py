"""What the backbone does for the needs an optimizer declares: the human reference as a response, a preference
tensor, post-EOS tokens counted, per-token rewards, and pi_t's log-probs from a single-pass update's own forward."""
import torch

from algorithms.base import make
from harness.app.config import resolve
from harness.core.experience import Budget, collect_online, gold_rewards, policy_output
from harness.core.models import load_models
from harness.tasks import resolve_paths
from harness.tasks.synthetic import bradley_terry_prob
from harness.core.tokens import encode_responses
from harness.core.train import Trainer

P = 6


def _collect(models, cfg, data, **needs):
    return collect_online(models, data.sft_train[:P], needs.pop("samples", 2), cfg.task.max_prompt_tokens,
                          cfg.generation.max_new_tokens, cfg.generation.temperature, cfg.train.kl_coef, 64,
                          needs.pop("budget", Budget()), torch.Generator().manual_seed(0), **needs)


def test_reference_is_appended_as_the_last_response_and_scored(tiny_test_models):
    cfg, models, data = tiny_test_models
    budget = Budget()
    batch = _collect(models, cfg, data, samples=1, append_reference=True, budget=budget)
    ref, ref_mask = encode_responses([ex.reference for ex in data.sft_train[:P]], models.tokenizer,
                                     cfg.generation.max_new_tokens, models.eos_id, models.pad_id)
    assert batch.response.shape[:2] == (P, 2)
    width = batch.response.shape[-1]  # cut after the last token any response of the batch counts
    assert torch.equal(batch.response[:, 1], ref[:, :width]) and torch.equal(batch.mask[:, 1], ref_mask[:, :width])
    assert not ref_mask[:, width:].any()
    assert (batch.logp_old[:, 1] != 0).any() and batch.score[:, 1].abs().sum() > 0  # scored like a sample
    assert budget.responses == P and budget.rm_queries == 2 * P  # one sampled, two scored per prompt


def test_preference_tensor_is_the_gold_bradley_terry_probability_on_the_stand_in(tiny_test_models):
    cfg, models, data = tiny_test_models
    batch = _collect(models, cfg, data, samples=3, preferences=True, gold=data.gold)
    assert batch.preference.shape == (P, 3, 3)
    assert torch.allclose(batch.preference + batch.preference.transpose(1, 2), torch.ones(P, 3, 3), atol=1e-6)
    gold = gold_rewards(data.gold, batch.flat("response"), batch.flat("mask"), data.sft_train[:P], models.tokenizer,
                        models.eos_id).reshape(P, 3)
    assert abs(batch.preference[2, 0, 1].item() - bradley_terry_prob(gold[2, 0].item(), gold[2, 1].item(), 0.15)) < 1e-6


def test_per_token_rewards_sum_to_the_sequence_reward(tiny_test_models):
    cfg, models, data = tiny_test_models
    batch = _collect(models, cfg, data)
    assert torch.allclose(batch.token_reward.sum(-1), batch.reward, atol=1e-5)
    assert batch.logp_mask is None and torch.equal(batch.counted_mask, batch.mask)
    assert (batch.token_reward[~batch.mask] == 0).all()


def test_single_pass_update_adopts_its_forward_as_pi_t(tiny_test_models, harness_cache):
    cfg, _, data = tiny_test_models
    cfg = resolve("tiny-test", {"model": {"cache_dir": harness_cache}, "train": {"prompts_per_iteration": P}})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    trainer = Trainer(cfg, make("reinforce"), models, data.sft_train, Budget())
    assert trainer.single_pass and not Trainer(cfg, make("rebel"), models, data.sft_train, Budget()).single_pass
    batch = trainer.collect(trainer.next_prompts())
    assert batch.logp_old is None and batch.reward is None  # no scoring forward of the policy
    with torch.no_grad():
        expected = policy_output(models, batch, trainer.temperature).logp_tokens
    trainer.update(batch, 1)
    assert torch.allclose(batch.logp_old, expected, atol=1e-5)  # pi_theta at its one forward == pi_t
    assert torch.allclose(batch.reward, batch.score - cfg.train.kl_coef * batch.kl)
    assert batch.kl.abs().max() < 1e-4  # the policy was the SFT reference when it sampled


def test_pi_t_is_scored_at_the_optimizers_logprob_temperature(tiny_test_models):
    """An optimizer that declares a log-prob temperature other than the sampling one starts at ratio 1: pi_t's
    log-probs in the batch are the ones its own forward (policy_output) computes at that temperature."""
    cfg, models, data = tiny_test_models
    assert cfg.generation.temperature != 1.0
    batch = _collect(models, cfg, data, logprob_temperature=1.0)
    models.policy.eval()
    with torch.no_grad():
        at_one = policy_output(models, batch, 1.0).logp_tokens
        at_sampling = policy_output(models, batch, cfg.generation.temperature).logp_tokens
    models.policy.train()
    assert torch.allclose(batch.logp_old, at_one, atol=1e-5)
    assert not torch.allclose(batch.logp_old, at_sampling, atol=1e-3)  # the bug this guards: scored at sampling T
