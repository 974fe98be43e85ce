"""The image-generation task (REBEL paper section 4.3): prompts, the diffusion policies, the rewards.

Prompts: the paper's 45 animals (appendix I.3.1; the same list as RLCM's datasets/simple_animals.txt), or a text file
with one prompt a line (`task.prompts: FILE`).

Policies (harness/core/diffusion.py `DiffusionPolicy`, LoRA only trained):
- `tiny`, the offline stand-in: a ~0.25M-parameter diffusers UNet2DConditionModel in pixel space (3 x 16 x 16),
  conditioned on a fixed hashed word embedding of the prompt, pre-trained here in seconds to draw each prompt's
  coloured blob on grey (x0-prediction), cached; sampled with the same stochastic consistency-style chain as LCM.
- `lcm`, the paper's: SimianLuo/LCM_Dreamshaper_v7 (UNet + VAE + CLIP text encoder through diffusers), latents
  4 x 64 x 64, the guidance-scale embedding as the UNet's timestep_cond. Needs a GPU and the hub; not run here.

The runs themselves: harness/app/image_run.py. Rewards: harness/tasks/image_rewards.py.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import Tensor

from harness.core.diffusion import DiffusionPolicy, add_lora, lcm_timesteps, scaled_linear_alphas_cumprod
from harness.core.errors import UserError
from harness.tasks import Task, register

ANIMALS = ("cat dog horse monkey rabbit zebra spider bird sheep deer cow goat lion tiger bear raccoon fox wolf lizard "
           "beetle ant butterfly fish shark whale dolphin squirrel mouse rat snake turtle frog chicken duck goose bee "
           "pig turkey fly llama camel bat gorilla hedgehog kangaroo").split()  # appendix I.3.1, in RLCM's order


def load_prompts(source: str) -> list[str]:
    """`animals` (the paper's 45) or a text file, one prompt a line (blank lines skipped)."""
    if source == "animals":
        return list(ANIMALS)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"task.prompts is `animals` or a text file with one prompt a line; {source} is neither")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{source} holds no prompts")
    return prompts


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class HashedWordEmbedding:
    """The stand-in's text encoder: each word hashed to one of `buckets` fixed random vectors (seeded, never trained),
    up to `length` words, zero-padded. Any prompt gets an embedding, so user prompt files work offline."""

    def __init__(self, dim: int, length: int = 4, buckets: int = 1024, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(buckets, dim, generator=g) / math.sqrt(dim)
        self.length, self.buckets = length, buckets

    def __call__(self, prompts: list[str]) -> Tensor:
        out = torch.zeros(len(prompts), self.length, self.table.shape[1])
        for i, prompt in enumerate(prompts):
            for j, word in enumerate(prompt.lower().split()[: self.length]):
                out[i, j] = self.table[_seed_of(word) % self.buckets]
        return out


def prompt_colour(prompt: str) -> Tensor:
    """The stand-in's drawing of a prompt: one fixed muted colour (a point of the RGB cube near grey)."""
    g = torch.Generator().manual_seed(_seed_of(prompt) % (2**63))
    return 0.5 + 0.25 * (2 * torch.rand(3, generator=g) - 1)


def blob_images(prompts: list[str], size: int, generator: torch.Generator) -> Tensor:
    """[N, 3, size, size] in [0, 1]: each prompt's coloured disc (random centre and radius) on grey."""
    n = len(prompts)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = size * (0.3 + 0.4 * torch.rand(n, 2, generator=generator))
    radius = size * (0.15 + 0.15 * torch.rand(n, generator=generator))
    inside = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2) <= radius[:, None, None] ** 2
    colours = torch.stack([prompt_colour(p) for p in prompts])  # [N, 3]
    return torch.where(inside[:, None], colours[:, :, None, None], torch.full((n, 3, size, size), 0.5))


def tiny_unet(size: int, channels: tuple[int, int], dim: int):
    """Two resolution levels, attention (the LoRA's targets) at the lower one only: full-resolution attention
    would triple the CPU time of every step."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
                                block_out_channels=channels, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=dim,
                                attention_head_dim=8, norm_num_groups=8)


def build_tiny(recipe: dict, cache_dir: Path, log=print) -> Path:
    """Pre-train the stand-in's UNet to draw each prompt's blob (x0-prediction at the schedule's timesteps) on the
    given prompts; cached under cache_dir by the recipe's and the code's hash (a second call loads it)."""
    from harness.core.store import code_fingerprint, config_hash

    # the code that builds it is part of the key: a changed architecture or data never loads an old build
    key = config_hash({**recipe, "code": code_fingerprint(tiny_unet, blob_images, prompt_colour, HashedWordEmbedding)})
    path = cache_dir / "image_tiny" / key[:16]
    if (path / "config.json").exists():
        return path
    log(f"Building the tiny image stand-in ({recipe['pretrain_steps']} denoising steps; cached in {path})")
    torch.manual_seed(recipe["seed"])
    g = torch.Generator().manual_seed(recipe["seed"])
    unet = tiny_unet(recipe["size"], tuple(recipe["channels"]), recipe["dim"])
    encode = HashedWordEmbedding(recipe["dim"], seed=recipe["seed"])
    alphas = scaled_linear_alphas_cumprod()
    steps = torch.tensor(lcm_timesteps(recipe["steps"]))
    opt = torch.optim.Adam(unet.parameters(), lr=recipe["pretrain_lr"])
    prompts = recipe["prompts"]
    for _ in range(recipe["pretrain_steps"]):
        batch = [prompts[i] for i in torch.randint(len(prompts), (recipe["pretrain_batch"],), generator=g).tolist()]
        x0 = 2 * blob_images(batch, recipe["size"], g) - 1
        t = steps[torch.randint(len(steps), (len(batch),), generator=g)]
        a = alphas[t].float()[:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
        loss = ((unet(xt, t, encoder_hidden_states=encode(batch)).sample - x0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    log(f"  final denoising loss {loss.item():.4f}")
    unet.save_pretrained(path)
    return path


def tiny_policy(recipe: dict, cache_dir: Path, *, lora_r: int, lora_alpha: int, logp_reduce: str = "mean",
                log=print) -> tuple[DiffusionPolicy, list]:
    """The stand-in policy with a fresh LoRA adapter; returns (policy, trainable parameters)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(build_tiny(recipe, cache_dir, log))
    params = add_lora(unet, lora_r, lora_alpha)
    encode = HashedWordEmbedding(recipe["dim"], seed=recipe["seed"])
    policy = DiffusionPolicy(unet, lcm_timesteps(recipe["steps"]), scaled_linear_alphas_cumprod(), encode,
                             decode=lambda x: (x + 1) / 2, latent_shape=(3, recipe["size"], recipe["size"]),
                             logp_reduce=logp_reduce, prediction="sample")
    return policy, params


def guidance_embedding(w: Tensor, dim: int = 256) -> Tensor:
    """LCM's guidance-scale embedding of w [N] (sinusoidal features of 1000 w, sin then cos): the UNet's
    timestep_cond, with w = guidance_scale - 1 as RLCM passes it."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = (w.float() * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def lcm_policy(name: str, *, lora_r: int, lora_alpha: int, steps: int, original_steps: int, guidance_scale: float,
               resolution: int, max_prompt_tokens: int, logp_reduce: str, device: str = "cuda",
               dtype: torch.dtype = torch.float16) -> tuple[DiffusionPolicy, list]:
    """The paper's latent consistency model with LoRA (rank, alpha) on the UNet's attention projections; the frozen
    weights in `dtype`, the adapter in float32 (RLCM: fp16 base, fp32 LoRA). Needs the hub (or its cache) and a GPU."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(name)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
        part.to(device=device, dtype=dtype)
    params = add_lora(pipe.unet, lora_r, lora_alpha)
    for p in params:
        p.data = p.data.float()
    scale = pipe.vae.config.scaling_factor

    @torch.no_grad()
    def encode(prompts: list[str]) -> Tensor:
        ids = pipe.tokenizer(prompts, padding="max_length", truncation=True, max_length=max_prompt_tokens,
                             return_tensors="pt").input_ids.to(device)
        return pipe.text_encoder(ids)[0]

    @torch.no_grad()
    def decode(latents: Tensor) -> Tensor:
        return (pipe.vae.decode(latents.to(dtype) / scale).sample.float() + 1) / 2

    cond_dim = pipe.unet.config.time_cond_proj_dim
    w = torch.tensor([guidance_scale - 1.0])
    policy = DiffusionPolicy(pipe.unet, lcm_timesteps(steps, original_steps), pipe.scheduler.alphas_cumprod.double(),
                             encode, decode, latent_shape=(pipe.unet.config.in_channels, resolution // 8,
                                                           resolution // 8),
                             logp_reduce=logp_reduce, device=torch.device(device),
                             extra=lambda n: {"timestep_cond": guidance_embedding(w.repeat(n), cond_dim)
                                              .to(device=device, dtype=dtype)})
    return policy, params


def _load(source, dataset=None, preference_dataset=None):
    raise UserError("the image task has no text data: `harness run --task image` trains through "
                    "harness/app/image_run.py (its presets: image-tiny, image-lcm-dreamshaper)")


register(Task("image", "text-to-image with a diffusion policy: the paper's 45 animals, a programmatic or aesthetic "
              "reward (REBEL section 4.3)", _load, preset="image-tiny", checker=True, suite="image",
              offline_sources=("animals",), reward_note="an image reward (colourfulness, aesthetic, ...)"))
