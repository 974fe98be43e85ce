"""The optimizers on denoising trajectories (image generation, REBEL paper section 4.3): pure losses over per-step
log-probabilities [P, K, T'] (P prompts, K trajectories each, T' denoising steps), reusing the language losses' math.

- rebel: REBEL's pairwise regression (algorithms/rebel.py `rebel_loss`) with logp(trajectory) = the sum of its steps'
  log-probs in place of a response's summed token log-probs. Target: the reward difference (the paper's eq. 1) or the
  difference of per-prompt standardised rewards (`target: advantage`, what the authors' RLCM code regresses on).
- ppo: the clipped policy gradient of DDPO/RLCM (no critic, no GAE; what the paper calls PPO): per step,
  max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) (harness/core/objective.py `clipped_surrogate`) with A the trajectory's
  per-prompt standardised reward clipped to [-adv_clip, adv_clip], averaged over the trajectories and steps.

Per-prompt statistics (`harness.core.diffusion.PerPromptStats`, DDPO's stat tracker, kept by the backbone): each prompt keeps its last `buffer` rewards; a reward is
standardised by its prompt's buffer mean and std once the buffer holds `min_count`, by the whole batch's before.

Not registered in algorithms.base.REGISTRY (those optimizers train token sequences); harness/app/image_run.py looks
them up here by the same names, rebel and ppo.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.rebel import rebel_loss
from harness.core.errors import UserError
from harness.core.objective import clipped_surrogate

TARGETS = ("reward", "advantage")


@dataclass
class TrajectoryRebel:
    """REBEL on trajectory pairs: regress the difference of summed per-step log-ratios onto eta x the target's"""

    eta: float = 1.0
    epochs: int = 1
    """passes over each iteration's pairs (paper, images: 1)"""
    minibatch: int = 1
    """pairs per optimizer step (paper: train batch 1 per GPU)"""
    target: str = "reward"
    """reward: the paper's eq. 1; advantage: per-prompt standardised rewards (the authors' RLCM code)"""
    stat_buffer: int = 32
    stat_min_count: int = 16

    name = "rebel"
    samples_per_prompt = 2
    per_step = False  # the loss needs every step's log-prob of both trajectories at once

    def __post_init__(self):
        if not self.eta > 0:
            raise ValueError(f"eta must be > 0 (got {self.eta})")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {self.target!r}")

    @property
    def uses_advantages(self) -> bool:
        return self.target == "advantage"

    def loss(self, logp_new: Tensor, logp_old: Tensor, reward: Tensor, advantage: Tensor | None
             ) -> tuple[Tensor, dict[str, float]]:
        """[P, 2, T'] log-probs, [P, 2] rewards (and advantages) -> (loss, stats)."""
        target = advantage if self.uses_advantages else reward
        loss, residual = rebel_loss(logp_new.sum(-1), logp_old.sum(-1), target, self.eta)
        return loss, {"rebel/mse": loss.item(), "rebel/residual_abs": residual.abs().mean().item()}


@dataclass
class TrajectoryPPO:
    """Clipped per-step policy gradient with per-prompt reward statistics (DDPO, RLCM; the paper's PPO)"""

    clip: float = 1e-4
    adv_clip: float = 10.0
    epochs: int = 2
    """passes over each iteration's trajectories (paper, images: 2)"""
    minibatch: int = 2
    """trajectories per optimizer step"""
    stat_buffer: int = 32
    stat_min_count: int = 16

    name = "ppo"
    samples_per_prompt = 1
    per_step = True  # one step's log-probs at a time (gradients accumulated over the steps)
    uses_advantages = True

    def __post_init__(self):
        if not self.clip > 0 or not self.adv_clip > 0:
            raise ValueError("clip and adv_clip must be > 0")

    def loss(self, logp_new: Tensor, logp_old: Tensor, reward: Tensor, advantage: Tensor | None
             ) -> tuple[Tensor, dict[str, float]]:
        """[P, K, T'] log-probs, [P, K] advantages -> (mean clipped surrogate over trajectories and steps, stats)."""
        adv = advantage.clamp(-self.adv_clip, self.adv_clip).unsqueeze(-1).expand_as(logp_new)
        ratio = torch.exp(logp_new - logp_old)
        policy, clipped = clipped_surrogate(ratio, adv, self.clip, self.clip)
        return policy.mean(), {"ppo/policy_loss": policy.mean().item(), "ppo/clipfrac": clipped.float().mean().item(),
                               "ppo/approx_kl": 0.5 * ((logp_new - logp_old) ** 2).mean().item()}


TRAJECTORY_ALGORITHMS = {"rebel": TrajectoryRebel, "ppo": TrajectoryPPO}


def make(name: str, args: dict | None = None):
    """The named trajectory optimizer with `args` overriding its defaults; one-line errors."""
    if name not in TRAJECTORY_ALGORITHMS:
        raise UserError(f"the image task trains with {', '.join(TRAJECTORY_ALGORITHMS)}, not {name!r}")
    cls = TRAJECTORY_ALGORITHMS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(args or {}) - known)
    if unknown:
        raise UserError(f"{name!r} on trajectories has no setting {', '.join(unknown)}; its settings: "
                        f"{', '.join(sorted(known))}")
    try:
        return cls(**(args or {}))
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid settings for {name!r}: {e}") from None


def hyperparameters(algo) -> dict:
    return dataclasses.asdict(algo)
