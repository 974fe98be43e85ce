"""REBEL: REgression to RElative REward Based RL (Gao et al. 2024, Algorithm 1).

For each prompt, two responses y, y' sampled from pi_t. Regress the difference of log-ratios onto the difference of
rewards (eq. 1 of the paper multiplied through by eta^2, which has the same minimiser):
    loss = mean_pairs( [logp_theta(y) - logp_t(y)] - [logp_theta(y') - logp_t(y')] - eta * (r(y) - r(y')) )^2
No clipping, no value model, no advantage normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Batch, PolicyOutput


def rebel_loss(logp_new: Tensor, logp_old: Tensor, reward: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """Squared regression error per pair. Shapes: [P, 2] summed log-probs and rewards -> ([], [P])."""
    log_ratio = logp_new - logp_old  # [P, 2]
    residual = (log_ratio[:, 0] - log_ratio[:, 1]) - eta * (reward[:, 0] - reward[:, 1])
    return (residual**2).mean(), residual


@register("rebel")
@dataclass
class Rebel(Algorithm):
    """REBEL: regress log-ratio differences of two on-policy samples onto their reward difference"""

    samples_per_prompt: int = 2
    """y and y' (the paper's pair)"""
    epochs: int = 4
    """passes over each batch (paper: 4, one optimizer step per epoch)"""
    minibatches: int = 1
    eta: float = 1.0
    """regression scale: target = eta * (r(y) - r(y'))"""

    def __post_init__(self):
        if self.samples_per_prompt != 2:
            raise ValueError("REBEL regresses on pairs: samples_per_prompt must be 2")
        if not self.eta > 0:
            raise ValueError(f"eta must be > 0 (got {self.eta}): eta <= 0 regresses toward lower reward")

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        loss, residual = rebel_loss(new.logp, batch.logp_old_sum, batch.reward, self.eta)
        return loss, {"rebel/mse": loss.item(), "rebel/residual_abs": residual.abs().mean().item()}
