"""Rewards on images [N, 3, H, W] in [0, 1] (with their prompts) -> [N] float scores, for the image task.

Programmatic rewards for the offline stand-in, and the LAION aesthetic predictor of the paper's experiment (CLIP
ViT-L/14 image embedding, L2-normalised, then an MLP head; the improved-aesthetic-predictor weights, as DDPO, RLCM and
TRL's DDPO use). `harness prepare`-style assets: AESTHETIC_ASSETS.
"""
from __future__ import annotations

import io
from typing import Callable

import torch
from torch import Tensor, nn

from harness.core.errors import UserError

CLIP_MODEL = "openai/clip-vit-large-patch14"
AESTHETIC_HEAD = ("trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth")  # (hub repo, file): the LAION head
AESTHETIC_ASSETS = (CLIP_MODEL, f"{AESTHETIC_HEAD[0]}/{AESTHETIC_HEAD[1]}")


def colourfulness(images: Tensor, prompts: list[str] | None = None) -> Tensor:
    """Hasler and Suesstrunk's colourfulness metric on [0, 1] RGB: sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 +
    mu_yb^2), with rg = R - G and yb = (R + G) / 2 - B (on the 0-1 scale; 0 for a grey image)."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    sd = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mu = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return sd + 0.3 * mu


def brightness(images: Tensor, prompts: list[str] | None = None) -> Tensor:
    """Mean pixel value in [0, 1]."""
    return images.flatten(1).mean(1)


def compressibility(images: Tensor, prompts: list[str] | None = None) -> Tensor:
    """Minus the JPEG size in kB at quality 95 (DDPO's compressibility reward): smaller files score higher."""
    from PIL import Image

    out = []
    for img in (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        out.append(-buf.tell() / 1000)
    return torch.tensor(out)


class AestheticHead(nn.Module):
    """The improved-aesthetic-predictor's MLP over a 768-d CLIP ViT-L/14 embedding (dropouts are inert at eval)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embed: Tensor) -> Tensor:
        return self.layers(embed).squeeze(-1)


class AestheticScorer:
    """The LAION aesthetic predictor: CLIP image features, L2-normalised, through the MLP head (a 1-10 scale)."""

    name = "aesthetic"

    def __init__(self, clip, processor, head: AestheticHead, device="cpu"):
        self.clip, self.processor, self.head, self.device = clip.eval(), processor, head.eval(), device

    @classmethod
    def load(cls, device="cpu", clip_name: str = CLIP_MODEL, head: tuple[str, str] = AESTHETIC_HEAD):
        """From the hub cache (`harness prepare` or a first online run fetches CLIP_MODEL and the head's file)."""
        from huggingface_hub import hf_hub_download
        from transformers import CLIPModel, CLIPProcessor

        clip = CLIPModel.from_pretrained(clip_name).to(device)
        module = AestheticHead()
        module.load_state_dict(torch.load(hf_hub_download(*head), map_location="cpu", weights_only=True))
        return cls(clip, CLIPProcessor.from_pretrained(clip_name), module.to(device), device)

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str] | None = None) -> Tensor:
        inputs = self.processor(images=list(images.float().cpu()), return_tensors="pt", do_rescale=False)
        embed = self.clip.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        embed = getattr(embed, "pooler_output", embed)  # transformers 5 may wrap the features
        return self.head(embed / embed.norm(dim=-1, keepdim=True)).float().cpu()


PROGRAMMATIC: dict[str, Callable] = {"colourfulness": colourfulness, "brightness": brightness,
                                      "compressibility": compressibility}
REWARDS = tuple(PROGRAMMATIC) + ("aesthetic",)


def make_reward(name: str, device="cpu") -> Callable[[Tensor, list[str]], Tensor]:
    if name in PROGRAMMATIC:
        return PROGRAMMATIC[name]
    if name == "aesthetic":
        return AestheticScorer.load(device)
    raise UserError(f"unknown image reward {name!r}; valid: {', '.join(REWARDS)}")
