"""DPO: Direct Preference Optimization (Rafailov et al. 2023, eq. 7), offline on the task's preference pairs.

With y_w the chosen and y_l the rejected response (index 0 and 1 of each pair), pi_ref the frozen SFT policy:
    h = [logp_theta(y_w) - logp_theta(y_l)] - [logp_ref(y_w) - logp_ref(y_l)],   loss = mean( -log sigmoid(beta h) )
No temperature scaling of the log-probs; it never samples while training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Batch, PolicyOutput


def dpo_loss(logp: Tensor, logp_ref: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Sigmoid preference loss. Shapes: [P, 2] summed log-probs (index 0 preferred) -> ([], margins [P]).

    The margin beta * h is the difference of the implicit rewards beta * log(pi / pi_ref) of the two responses.
    """
    margin = beta * ((logp[:, 0] - logp[:, 1]) - (logp_ref[:, 0] - logp_ref[:, 1]))
    return -F.logsigmoid(margin).mean(), margin


@register("dpo")
@dataclass
class DPO(Algorithm):
    """DPO: offline sigmoid loss on the task's (chosen, rejected) pairs against the frozen SFT reference"""

    samples_per_prompt: int = 2
    """the (chosen, rejected) pair; nothing is sampled"""
    epochs: int = 1
    minibatches: int = 1
    beta: float = 0.05

    data = "preference_pairs"
    kl_placements = ()  # nothing sampled, no reward: its pull toward the reference is beta
    logprob_temperature = 1.0

    def __post_init__(self):
        if self.samples_per_prompt != 2:
            raise ValueError("DPO trains on (chosen, rejected) pairs: samples_per_prompt must be 2")

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        loss, margin = dpo_loss(new.logp, batch.logp_ref_sum, self.beta)
        return loss, {"dpo/margin": margin.mean().item(), "dpo/accuracy": (margin > 0).float().mean().item()}
