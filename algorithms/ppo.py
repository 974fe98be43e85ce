"""PPO with a per-token KL reward, GAE and a critic initialised from the reward model (Schulman et al. 2017;
the TL;DR recipe of Huang et al. 2024, "The N+ implementation details of RLHF with PPO").

Per-token reward (the backbone's `batch.token_reward`): r_t = -beta * (logp_t - logp_ref)_t, plus the score at EOS.
GAE (gamma 1, lambda 0.95): delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}, R_t = A_t + V_t;
advantages whitened over valid tokens. With rho_t = pi_theta / pi_t per token:
    policy loss = masked mean of max(-A rho, -A clip(rho, 1 - eps, 1 + eps))
    value loss  = 0.5 * masked mean of max((V - R)^2, (clip(V, V_old -+ eps_v) - R)^2)
    loss = policy loss + vf_coef * value loss
mask_post_eos=False reproduces the REBEL authors' PPO: every generated token counts (post-EOS tokens are
KL-penalised, trained on and valued) and rewards are whitened (mean kept) over the whole [N, Lr] tensor, padding too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, masked_mean, masked_whiten, register
from harness.batch import Batch, PolicyOutput


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates over the last axis (zero reward and value past the end); [..., Lr]."""
    advantages, last = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        next_value = values[..., t + 1] if t + 1 < rewards.shape[-1] else torch.zeros_like(last)
        last = rewards[..., t] + gamma * next_value - values[..., t] + gamma * lam * last
        advantages[..., t] = last
    return advantages


def ppo_losses(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, values: Tensor, values_old: Tensor,
               returns: Tensor, mask: Tensor, clip: float, clip_value: float) -> tuple[Tensor, Tensor, Tensor]:
    """Clipped policy and value losses over per-token [..., Lr] tensors; returns (policy, value, clip fraction)."""
    ratio = torch.exp(logp_new - logp_old)
    pg1, pg2 = -advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)
    policy = masked_mean(torch.max(pg1, pg2), mask)
    values_clipped = values_old + (values - values_old).clamp(-clip_value, clip_value)
    value = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask)
    return policy, value, masked_mean((pg2 > pg1).float(), mask)


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

    needs_critic = True

    def prepare(self, batch: Batch) -> dict[str, Tensor]:
        mask, rewards = batch.counted_mask, batch.token_reward
        if not self.mask_post_eos:
            rewards = masked_whiten(rewards, torch.ones_like(mask), shift_mean=False)
        advantages = gae(rewards, batch.values_old, self.gamma, self.lam)
        return {"returns": advantages + batch.values_old, "advantages": masked_whiten(advantages, mask)}

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        policy, value, clipfrac = ppo_losses(new.logp_tokens, batch.logp_old, batch.extras["advantages"], new.values,
                                             batch.values_old, batch.extras["returns"], batch.counted_mask,
                                             self.clip, self.clip_value)
        return policy + self.vf_coef * value, {"ppo/policy_loss": policy.item(), "ppo/value_loss": value.item(),
                                               "ppo/clipfrac": clipfrac.item()}
