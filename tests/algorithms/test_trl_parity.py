"""Where TRL 1.x implements the same quantity, ours must agree with it numerically on identical inputs.

- DPO: TRL's DPOTrainer computes its sigmoid loss (loss_type "sigmoid", the default) from a real batch of its own
  collator, with its own log-prob code (the fused LM head) and a frozen reference copy. We take the same token ids
  (prompt, chosen + EOS, rejected + EOS), compute summed log-probs with our backbone (harness.core.scoring) at
  temperature 1 and our `dpo_loss`, and compare the loss: the same number up to float rounding.
- RLOO: TRL's RLOOTrainer computes the leave-one-out advantages inside `_generate_and_score_completions`. We feed it
  fixed completions and fixed rewards (generation and reward functions replaced; beta 0 so that no KL enters) and
  compare its advantages with `leave_one_out_advantages` on the same rewards, for k = 2 and k = 4.
"""
import math

import pytest
import torch

from algorithms.dpo import dpo_loss
from algorithms.rloo import leave_one_out_advantages
from harness.core.scoring import sequence_logprobs
from harness.tasks import resolve_paths
from harness.core.tokens import left_pad


@pytest.fixture(scope="module")
def tiny(tiny_test_models):
    cfg, models, data = tiny_test_models
    return cfg, resolve_paths(cfg.model, log=lambda *a: None), models.tokenizer, data


def _common(tmp_path):
    return dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no",
                logging_steps=10**6, seed=0, disable_dropout=True)


def test_dpo_sigmoid_loss_matches_trl(tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    cfg, paths, tok, data = tiny
    pairs = data.pref_train[:4]
    prompts = [tok.decode(tok(ex.prompt)["input_ids"][-60:]) for ex in pairs]
    ds = Dataset.from_dict({"prompt": prompts, "chosen": [ex.chosen for ex in pairs],
                            "rejected": [ex.rejected for ex in pairs]})
    policy = AutoModelForCausalLM.from_pretrained(paths["policy"])
    trainer = DPOTrainer(model=policy, processing_class=tok, train_dataset=ds,
                         args=DPOConfig(**_common(tmp_path), beta=0.05, per_device_train_batch_size=4,
                                        precompute_ref_log_probs=False, loss_type=["sigmoid"]))
    with torch.no_grad():  # move the policy away from the reference so the loss is not just log 2
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch).item()
    # the same ids in our layout: left-padded prompt, (chosen, rejected) responses right-padded with their masks
    ids, completion = batch["input_ids"], batch["completion_mask"].bool()
    keep = batch["attention_mask"].bool()
    prompt_ids = [row[k & ~c].tolist() for row, k, c in zip(ids, keep, completion)]
    responses = [row[c].tolist() for row, c in zip(ids, completion)]
    P = len(ids) // 2
    assert prompt_ids[:P] == prompt_ids[P:]  # TRL stacks [chosen..., rejected...] of the same prompts
    query = left_pad(prompt_ids[:P], tok.pad_token_id)
    width = max(map(len, responses))
    response = torch.full((2 * P, width), tok.pad_token_id)
    mask = torch.zeros(2 * P, width, dtype=torch.bool)
    order = [i for p in range(P) for i in (p, P + p)]  # ours: (chosen, rejected) of each prompt together
    for row, i in enumerate(order):
        response[row, : len(responses[i])] = torch.tensor(responses[i])
        mask[row, : len(responses[i])] = True
    assert all(r[-1] == tok.eos_token_id for r in responses)  # EOS appended and counted, as in our backbone
    with torch.no_grad():
        logp = sequence_logprobs(trainer.model, query, response, mask, tok.pad_token_id, 1.0, group=2).sum
        logp_ref = sequence_logprobs(trainer.ref_model, query, response, mask, tok.pad_token_id, 1.0, group=2).sum
    ours, margin = dpo_loss(logp.reshape(P, 2), logp_ref.reshape(P, 2), beta=0.05)
    assert margin.abs().max() > 1e-3  # a real comparison, not log 2 on both sides
    assert math.isclose(ours.item(), theirs, rel_tol=1e-4, abs_tol=1e-6), (ours.item(), theirs)


@pytest.mark.parametrize("k", [2, 4])
def test_rloo_leave_one_out_advantages_match_trl(tiny, tmp_path, k):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import RLOOConfig, RLOOTrainer

    cfg, paths, tok, data = tiny
    P = 3
    prompts = [tok.decode(tok(ex.prompt)["input_ids"][-40:]) for ex in data.sft_train[:P]]
    rewards = torch.tensor([[0.3, -1.0, 2.5, 0.7][:k], [1.0, 1.0, -0.5, 0.0][:k], [-2.0, 0.25, 0.5, 3.0][:k]])
    trainer = RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(paths["policy"]), processing_class=tok,
                          reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                          train_dataset=Dataset.from_dict({"prompt": prompts}),
                          args=RLOOConfig(**_common(tmp_path), per_device_train_batch_size=P * k, num_generations=k,
                                          beta=0.0, max_completion_length=8))
    completion = tok(" my sister lied to me", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    def fixed_generate(prompt_list):
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompt_list]
        return prompt_ids, [list(completion)] * len(prompt_list), [tok.decode(completion)] * len(prompt_list)

    trainer._generate = fixed_generate
    trainer._calculate_rewards = lambda *a, **kw: rewards.reshape(-1, 1)  # one reward function, rows grouped by prompt
    trainer.model.train()
    inputs = [{"prompt": p} for p in prompts for _ in range(k)]  # TRL's layout: the k copies of a prompt together
    theirs = trainer._generate_and_score_completions(inputs)["advantages"]
    assert torch.allclose(leave_one_out_advantages(rewards).flatten(), theirs.float(), atol=1e-6)
