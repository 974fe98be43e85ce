"""A diffusion model as an RL policy: the denoising chain of a consistency model made stochastic, so that each of
its T steps is a Gaussian action with a log-probability (Black et al. 2023, DDPO; Oertell et al. 2024, RLCM).

One step from x_t (timestep t, the next one t' or, at the last step, t itself as in RLCM's scheduler):
    x0      = (x_t - sqrt(1 - a_t) eps_theta(x_t, t, c)) / sqrt(a_t)          a = the scheduler's alphas_cumprod
              (or the UNet's output itself, for a model that predicts x0: the stand-in)
    denoised = c_out(t) x0 + c_skip(t) x_t                                   the consistency boundary condition
    x_t'   ~ N(sqrt(a_t') denoised, (1 - a_t') I)
log pi(x_t' | x_t, c) is that Gaussian's density, reduced over the latent's dimensions by a mean (RLCM and DDPO:
per-dimension log-probs averaged, which keeps log-ratios O(1) whatever the resolution) or a sum (the exact log-density).
A trajectory is the T actions; logp(trajectory) = the sum of its steps' log-probs, the analogue of a response's summed
token log-probs (REBEL regresses on it).

Nothing here knows a task or an optimizer: harness/tasks/image.py builds the policies and rewards, algorithms/
trajectory.py the losses, harness/app/image_run.py the loop.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

LOGP_REDUCTIONS = ("mean", "sum")
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # the attention projections (RLCM's LoRA targets)


def lcm_timesteps(steps: int, original_steps: int = 50, train_steps: int = 1000) -> list[int]:
    """The LCM inference schedule as RLCM's scheduler computes it: `original_steps` evenly spaced training timesteps
    (c - 1, 2c - 1, ..., with c = train_steps // original_steps), then every (original_steps // steps)-th from the end.
    (diffusers >= 0.27 spaces them differently: 999, 879, 759, 639, 499, ... for 8 steps; docs/fidelity.md.)"""
    c = train_steps // original_steps
    origin = [(i + 1) * c - 1 for i in range(original_steps)]
    skip = original_steps // steps
    return origin[::-1][::skip][:steps]


def scaled_linear_alphas_cumprod(train_steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> Tensor:
    """Stable Diffusion's (and LCM's) noise schedule: betas linear in sqrt space."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, train_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def boundary_scalings(t: int, sigma_data: float = 0.5, timestep_scaling: float = 10.0) -> tuple[float, float]:
    """(c_skip, c_out) of the consistency model's boundary condition at timestep t (LCM's discrete version)."""
    s = t * timestep_scaling
    return sigma_data**2 / (s**2 + sigma_data**2), s / (s**2 + sigma_data**2) ** 0.5


def gaussian_logp(x: Tensor, mean: Tensor, std: Tensor | float, reduce: str = "mean") -> Tensor:
    """log N(x; mean, std^2 I) per sample [N, ...] -> [N]: per-dimension log-densities averaged or summed."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    per_dim = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    dims = tuple(range(1, per_dim.ndim))
    return per_dim.mean(dims) if reduce == "mean" else per_dim.sum(dims)


@dataclass
class DiffusionPolicy:
    """A denoiser (a diffusers UNet with a LoRA adapter: the only trained weights), its schedule, how prompts become
    conditioning and latents become images. `extra(n)` gives further UNet inputs (LCM: the guidance embedding)."""

    unet: nn.Module
    timesteps: list[int]
    alphas_cumprod: Tensor  # [train_steps] float64
    encode: Callable[[list[str]], Tensor]  # prompts -> [N, S, D] conditioning (constants)
    decode: Callable[[Tensor], Tensor]  # x_0 latents [N, C, H, W] -> images [N, 3, H', W'] in [0, 1]
    latent_shape: tuple[int, int, int]
    logp_reduce: str = "mean"
    prediction: str = "epsilon"  # what the UNet predicts: the noise (LCM) or x0 itself ("sample": the stand-in)
    extra: Callable[[int], dict] = field(default=lambda n: {})
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        if self.logp_reduce not in LOGP_REDUCTIONS:
            raise ValueError(f"logp_reduce must be one of {', '.join(LOGP_REDUCTIONS)}, not {self.logp_reduce!r}")

    @property
    def horizon(self) -> int:
        return len(self.timesteps)

    def step_distribution(self, x: Tensor, i: int, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mean, std) of x_{t'} given x_t at step i (module docstring), and the step's denoised prediction;
        differentiable in the UNet's weights."""
        t = self.timesteps[i]
        t_next = self.timesteps[i + 1] if i + 1 < self.horizon else t  # RLCM: the last step is noised too
        a_t, a_next = (self.alphas_cumprod[s].item() for s in (t, t_next))
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = self.unet(x, tt, encoder_hidden_states=cond, **self.extra(x.shape[0])).sample
        x0 = out if self.prediction == "sample" else (x - math.sqrt(1 - a_t) * out) / math.sqrt(a_t)
        c_skip, c_out = boundary_scalings(t)
        denoised = c_out * x0 + c_skip * x
        std = torch.tensor(math.sqrt(1 - a_next), dtype=x.dtype, device=x.device)
        return math.sqrt(a_next) * denoised, std, denoised

    def step_logp(self, states: Tensor, next_states: Tensor, i: int, cond: Tensor) -> Tensor:
        """[N] log pi(next_states | states, cond) at step i under the current weights (with gradients)."""
        mean, std, _ = self.step_distribution(states, i, cond)
        return gaussian_logp(next_states, mean, std, self.logp_reduce)


@dataclass
class Trajectories:
    """N sampled denoising chains. latents[:, i] is step i's state, latents[:, i + 1] its action (next state)."""

    prompts: list[str]
    latents: Tensor  # [N, T + 1, C, H, W]
    logp: Tensor  # [N, T] per-step log-probs under the sampling policy (constants)
    cond: Tensor  # [N, S, D]
    images: Tensor  # [N, 3, H, W] in [0, 1], decoded from the last step's denoised prediction

    def select(self, idx: Tensor) -> "Trajectories":
        return Trajectories([self.prompts[j] for j in idx.tolist()], self.latents[idx], self.logp[idx],
                            self.cond[idx], self.images[idx])


@torch.no_grad()
def sample(policy: DiffusionPolicy, prompts: list[str], generator: torch.Generator) -> Trajectories:
    """Denoise from x_T ~ N(0, I), recording every state and each step's log-probability. The image is decoded from
    the last step's denoised prediction, as LCM pipelines (and RLCM) do: the last action's noise does not reach it."""
    n = len(prompts)
    cond = policy.encode(prompts).to(policy.device)
    x = torch.randn((n, *policy.latent_shape), generator=generator).to(policy.device)
    states, logps = [x], []
    for i in range(policy.horizon):
        mean, std, denoised = policy.step_distribution(x, i, cond)
        noise = torch.randn(mean.shape, generator=generator).to(policy.device)
        x = mean + std * noise
        logps.append(gaussian_logp(x, mean, std, policy.logp_reduce))
        states.append(x)
    latents = torch.stack(states, 1)
    return Trajectories(list(prompts), latents, torch.stack(logps, 1), cond, policy.decode(denoised).clamp(0, 1))


def trajectory_logp(policy: DiffusionPolicy, traj: Trajectories, steps: list[int] | None = None) -> Tensor:
    """[N, len(steps)] per-step log-probs of the recorded actions under the current weights (with gradients)."""
    steps = list(range(policy.horizon)) if steps is None else steps
    return torch.stack([policy.step_logp(traj.latents[:, i], traj.latents[:, i + 1], i, traj.cond) for i in steps], 1)


def add_lora(unet: nn.Module, r: int, alpha: int, targets: list[str] | None = None) -> list[nn.Parameter]:
    """Freeze the UNet and add a peft LoRA adapter to its attention projections; returns the trainable parameters
    (the adapter's only). LoRA's B starts at zero, so the adapted policy starts as the base policy."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=r, lora_alpha=alpha, init_lora_weights="gaussian",
                                target_modules=targets or LORA_TARGETS))
    params = [p for n, p in unet.named_parameters() if p.requires_grad]
    if not params or any("lora_" not in n for n, p in unet.named_parameters() if p.requires_grad):
        raise RuntimeError("the LoRA adapter left no trainable parameters, or trained a base weight")
    return params


class PerPromptStats:
    """DDPO's per-prompt reward statistics (the clipped trajectory PG's advantages, algorithms/trajectory.py): state the
    backbone keeps across iterations, so it lives here, not in the optimizer file; `update` returns the standardised rewards."""

    def __init__(self, buffer: int, min_count: int, eps: float = 1e-6):
        self.buffer, self.min_count, self.eps = buffer, min_count, eps
        self.stats: dict[str, deque] = {}

    def update(self, prompts: list[str], rewards: Tensor) -> Tensor:
        out = torch.empty_like(rewards, dtype=torch.float64)
        flat = rewards.double()
        for prompt in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, p in enumerate(prompts) if p == prompt])
            seen = self.stats.setdefault(prompt, deque(maxlen=self.buffer))
            seen.extend(flat[idx].tolist())
            ref = torch.tensor(list(seen), dtype=torch.float64) if len(seen) >= self.min_count else flat
            # population std (numpy's default), as DDPO's tracker
            out[idx] = (flat[idx] - ref.mean()) / (ref.std(unbiased=False) + self.eps)
        return out.to(rewards.dtype)

    def state(self) -> dict:
        return {p: list(v) for p, v in self.stats.items()}
