"""A*-PO (algorithms/astar_po.py): the V* estimate by hand, the loss and gradient against TRL 1.16's own
A2POTrainer.compute_loss, and the backbone's once-per-prompt estimate with its budget."""
from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from algorithms.base import make
from harness.core.batch import Batch, PolicyOutput
from harness.core.experience import Budget, reference_values
from harness.core.models import load_models
from harness.core.scoring import ScoreRule
from harness.core.train import Trainer, objective_loss
from harness.tasks import resolve_paths


class FirstOfEach:
    """A task reward that scores 1 for the first of every n responses it is asked about, 0 for the rest."""

    name = "first-of-each"

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, text, example):
        self.calls += 1
        return float((self.calls - 1) % self.n == 0)


def test_v_star_by_hand(tiny_test_models):
    cfg, models, data = tiny_test_models
    n, beta = 4, 0.5
    budget = Budget()
    values = reference_values(models, data.sft_train[:3], n, beta, cfg.task.max_prompt_tokens, 8, 0.7, 64, budget,
                              torch.Generator().manual_seed(0), ScoreRule(missing_eos_score=None), FirstOfEach(n))
    want = beta * math.log((math.exp(1 / beta) + n - 1) / n)  # rewards (1, 0, 0, 0): beta log mean exp(r / beta)
    assert values == pytest.approx([want] * 3)
    assert (budget.responses, budget.rm_queries, budget.prompts) == (12, 12, 0)
    # the rollouts' score rule applies to them too: an unfinished response scores the missing-EOS score
    ended = reference_values(models, data.sft_train[:3], n, beta, cfg.task.max_prompt_tokens, 2, 0.7, 64, budget,
                             torch.Generator().manual_seed(0), ScoreRule(missing_eos_score=-1.0), FirstOfEach(n))
    assert all(v < want for v in ended)


def test_loss_and_gradient_match_trls_a2po_trainer():
    from trl.experimental.a2po import A2POTrainer

    g = torch.Generator().manual_seed(0)
    P, T = 5, 4
    logp = -torch.rand(P, 1, T, generator=g)
    ref = -torch.rand(P, 1, T, generator=g)
    score, v_star = torch.randint(0, 2, (P, 1), generator=g).float(), torch.rand(P, generator=g)
    algo = make("astar_po", {"beta2": 0.1})
    batch = Batch(query=torch.zeros(P, 1, dtype=torch.long), response=torch.zeros(P, 1, T, dtype=torch.long),
                  mask=torch.ones(P, 1, T, dtype=torch.bool), logp_old=logp.clone(), logp_ref=ref, score=score,
                  v_star=v_star)
    batch.extras = algo.prepare(batch)
    leaf = logp.clone().requires_grad_()
    ours, _ = objective_loss(algo, batch, PolicyOutput(leaf))
    ours_grad, = torch.autograd.grad(ours, leaf)

    theirs_leaf = logp.sum(-1).reshape(P).clone().requires_grad_()  # TRL works on sequence log-probs
    stub = SimpleNamespace(args=SimpleNamespace(beta2=0.1), model=SimpleNamespace(training=True),
                           _metrics={"train": defaultdict(list)},
                           _get_sequence_logps=lambda *a, **k: theirs_leaf)
    inputs = {"input_ids": None, "attention_mask": None, "logits_to_keep": T, "ref_logps": ref.sum(-1).reshape(P),
              "rewards": score.reshape(P), "v_star": v_star}
    theirs = A2POTrainer.compute_loss(stub, None, inputs)
    theirs_grad, = torch.autograd.grad(theirs, theirs_leaf)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-7) and ours.item() > 1e-3
    # each token's gradient is its sequence's: d loss / d logp(y)
    assert torch.allclose(ours_grad[:, 0], theirs_grad[:, None].expand(P, T), atol=1e-7)


def test_the_backbone_estimates_v_star_once_per_prompt_and_counts_it(tiny_test_models):
    cfg, _, data = tiny_test_models
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"prompts_per_iteration": 4})})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    algo = make("astar_po", {"value_samples": 3})
    trainer = Trainer(cfg, algo, models, data.sft_train[:6], Budget())  # 6 prompts: iteration 2 repeats some
    line1 = trainer.iteration(1)
    assert line1["responses"] == 4 + 4 * 3 and len(trainer.values) == 4
    line2 = trainer.iteration(2)
    new = len(trainer.values) - 4  # the second batch's prompts not seen in the first
    assert 0 < new < 4 and line2["responses"] == line1["responses"] + 4 + new * 3
    assert line2["prompts"] == 8 and "time/value_estimate_s" in line1
    state = trainer.state_dict()
    assert state["values"] == trainer.values  # checkpointed: a resumed run does not sample them again
