"""General-preference REBEL (REBEL paper, Appendix D): regress on a preference model instead of a reward.

Three responses y, y', y'' from pi_t per prompt; with l(x, y, y'') = 2 P(y > y'' | x) - 1 from the backbone's
preference model (`batch.preference`), the regression target replaces r(y) - r(y') by l(x, y, y'') - l(x, y', y''):
    loss = mean( [logp_theta(y) - logp_t(y)] - [logp_theta(y') - logp_t(y')]
                 - eta * ([l(y, y'') - beta kl(y)] - [l(y', y'') - beta kl(y')]) )^2
keeping the backbone's KL penalty (beta kl = score - reward) unless `kl_penalty` is False.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from algorithms.base import Algorithm, register
from algorithms.rebel import rebel_loss
from harness.core.batch import Batch, PolicyOutput


def preference_targets(preference: Tensor) -> Tensor:
    """[P, 3, 3] P(y_i > y_j) -> [P, 2] l(x, y_i, y'') = 2 P(y_i > y'') - 1 for y_i in (y, y'), y'' the third."""
    return 2 * preference[:, :2, 2] - 1


@register("rebel_preference")
@dataclass
class PreferenceRebel(Algorithm):
    """General-preference REBEL: regress log-ratio differences on preference differences against a third sample"""

    samples_per_prompt: int = 3
    """y, y' (the regressed pair) and y'' (the comparator)"""
    epochs: int = 4
    minibatches: int = 1
    eta: float = 1.0
    kl_penalty: bool = True
    """subtract the backbone's beta * kl from l, as REBEL does from the score"""

    needs_preference = True

    def __post_init__(self):
        if self.samples_per_prompt != 3:
            raise ValueError("general-preference REBEL needs y, y' and y'': samples_per_prompt must be 3")

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        target = preference_targets(batch.preference)
        if self.kl_penalty:
            target = target + (batch.reward - batch.score)[:, :2]  # the backbone's -beta * kl
        loss, residual = rebel_loss(new.logp[:, :2], batch.logp_old_sum[:, :2], target, self.eta)
        return loss, {"rebel_preference/mse": loss.item(),
                      "rebel_preference/residual_abs": residual.abs().mean().item()}
