"""A*-PO: policy optimization via optimal advantage regression (Brantley et al. 2025, arXiv 2505.20686; the REBEL
authors' follow-up), one sample per prompt, no critic.

Stage 1, offline (the backbone: `optimal_value_samples`, harness/core/experience.py `reference_values`): for each
training prompt, once, N responses of pi_ref estimate the optimal value of the KL-regularised objective,
    V*(x) = beta1 log mean_i exp(r(x, y_i) / beta1),
counted in the budget. Stage 2, on-policy: one response y ~ pi_t per prompt, and REBEL's regression with the
optimal advantage as the target in place of a second sample:
    loss = mean_x ( beta2 log(pi_theta(y|x) / pi_ref(y|x)) - (r(x, y) - V*(x)) )^2
r is the score (the backbone's reward model or the task's reward, after the missing-EOS rule); the KL to the
reference lives in the implicit reward beta2 log(pi / pi_ref), so no KL placement applies. Defaults are TRL 1.16's
A2POConfig (N 8, beta1 0.5, beta2 1e-3, one update per batch); TRL also drops training prompts whose N reference
samples all scored 0 (filter_all_incorrect), which this harness does not (every optimizer sees the same prompts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Batch, PolicyOutput, Prepared


@dataclass
class Targets(Prepared):
    target: Tensor  # [P] r(x, y) - V*(x)


@register("astar_po")
@dataclass
class AStarPO(Algorithm):
    """A*-PO: regress beta2 log(pi/pi_ref) of one sample on r - V*, V* estimated once per prompt from pi_ref"""

    samples_per_prompt: int = 1
    epochs: int = 1
    minibatches: int = 1
    value_samples: int = 8
    """N responses of pi_ref per prompt for V*"""
    beta1: float = 0.5
    """temperature of the V* estimate"""
    beta2: float = 1e-3
    """scale of the implicit reward log(pi / pi_ref)"""

    kl_placements: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        if self.samples_per_prompt != 1:
            raise ValueError("astar_po regresses one sample per prompt: samples_per_prompt must be 1")
        if self.value_samples < 1 or self.beta1 <= 0 or self.beta2 <= 0:
            raise ValueError("astar_po needs value_samples >= 1, beta1 > 0 and beta2 > 0")

    def optimal_value_samples(self) -> tuple[int, float]:
        return self.value_samples, self.beta1

    def prepare(self, batch: Batch) -> Targets:
        return Targets(batch.score[:, 0] - batch.v_star)

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        target = batch.prepared(Targets).target
        implicit = self.beta2 * (new.logp[:, 0] - batch.logp_ref_sum[:, 0])
        loss = ((implicit - target) ** 2).mean()
        return loss, {"astar_po/implicit_reward": implicit.mean().item(), "astar_po/advantage": target.mean().item()}
