"""PPO with a per-token KL reward, GAE and a critic initialised from the reward model (Schulman et al. 2017;
the TL;DR recipe of Huang et al. 2024, "The N+ implementation details of RLHF with PPO").

Per-token reward (the backbone's `batch.token_reward`): r_t = -beta * (logp_t - logp_ref)_t, plus the score at EOS.
GAE (gamma 1, lambda 0.95): delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}, R_t = A_t + V_t;
advantages whitened over valid tokens. With rho_t = pi_theta / pi_t per token:
    policy loss = masked mean of max(-A rho, -A clip(rho, 1 - eps, 1 + eps))
    value loss  = 0.5 * masked mean of max((V - R)^2, (clip(V, V_old -+ eps_v) - R)^2)
    loss = policy loss + vf_coef * value loss
The masked means divide by the batch's counted tokens (every rank's, `Batch.token_share`), whatever the micro-batch.
mask_post_eos=False reproduces the REBEL authors' PPO: every generated token counts (post-EOS tokens are
KL-penalised, trained on and valued) and rewards are whitened (mean kept) over the whole [N, Lr] tensor, padding too.
batch_statistics: the whitening's mean and std over every rank's batch ("global", the default: the update does not
depend on the number of processes), or over each process's own shard ("per_process": the authors' accelerate script
whitens each process's batch; the TL;DR paper presets select it). docs/fidelity.md "Whitening scope".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from algorithms.base import Algorithm, register
from harness.core.batch import Batch, PolicyOutput, Prepared
from harness.core.contract import RECORDED_WHEN_SET
from harness.core.objective import BATCH_STATISTICS, check_choice, clipped_surrogate, gae, masked_mean, scope, whiten


@dataclass
class ActorCriticTargets(Prepared):
    advantages: Tensor  # [P, K, Lr] GAE advantages, whitened
    returns: Tensor  # [P, K, Lr] the critic's targets, advantages + values_old before whitening


def ppo_losses(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, values: Tensor, values_old: Tensor,
               returns: Tensor, mask: Tensor, clip: float, clip_value: float,
               tokens: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Clipped policy and value losses over per-token [..., Lr] tensors, token means whose denominator is the sum of
    `tokens` (per-prompt shares of the batch's counted tokens, `Batch.token_share`; None: the tokens counted here);
    returns (policy, value, clip fraction)."""
    count = None if tokens is None else tokens.sum()
    policy, clipped = clipped_surrogate(torch.exp(logp_new - logp_old), advantages, clip, clip)
    values_clipped = values_old + (values - values_old).clamp(-clip_value, clip_value)
    value = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask, count=count)
    return masked_mean(policy, mask, count=count), value, masked_mean(clipped.float(), mask)


@register("ppo")
@dataclass
class PPO(Algorithm):
    """PPO: per-token KL reward, GAE, clipped policy and value losses, critic from the reward model"""

    samples_per_prompt: int = 1
    epochs: int = 4
    """passes over each batch (TL;DR recipe: 4, one minibatch each)"""
    minibatches: int = 1
    gamma: float = 1.0
    lam: float = 0.95
    """GAE lambda"""
    clip: float = 0.2
    """policy ratio clip range"""
    clip_value: float = 0.2
    """value clip range around the rollout-time values"""
    vf_coef: float = 0.1
    mask_post_eos: bool = True
    """False: the REBEL authors' unmasked variant (post-EOS tokens penalised, rewards whitened over padding)"""
    batch_statistics: str = field(default="global", metadata=RECORDED_WHEN_SET)
    """whitening over every rank's batch (global), or over each process's shard (per_process: the REBEL authors')"""

    needs_critic = True

    def __post_init__(self):
        check_choice("batch_statistics", self.batch_statistics, BATCH_STATISTICS)

    def prepare(self, batch: Batch) -> ActorCriticTargets:
        mask, rewards = batch.counted_mask, batch.token_reward
        over = scope(self.batch_statistics, batch.sum_over_ranks)
        if not self.mask_post_eos:
            rewards = whiten(rewards, shift_mean=False, sum_over_ranks=over)
        advantages = gae(rewards, batch.values_old, self.gamma, self.lam)
        return ActorCriticTargets(advantages=whiten(advantages, mask, sum_over_ranks=over),
                                  returns=advantages + batch.values_old)

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        targets = batch.prepared(ActorCriticTargets)
        policy, value, clipfrac = ppo_losses(new.logp_tokens, batch.logp_old, targets.advantages, new.values,
                                             batch.values_old, targets.returns, batch.counted_mask, self.clip,
                                             self.clip_value, batch.token_share)
        return policy + self.vf_coef * value, {"ppo/policy_loss": policy.item(), "ppo/value_loss": value.item(),
                                               "ppo/clipfrac": clipfrac.item()}
