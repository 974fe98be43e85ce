"""Reward-model checkpoint conventions, loaded into one interface: `model(**inputs).logits` is [B, 1], the score
read at the last real token, and `model.config.reward_bias` is subtracted by harness.core.scoring.reward_scores (and from
a critic's values by harness.core.scoring.token_values, as the authors' ScalarModel does).

- Hugging Face sequence classifiers (`*ForSequenceClassification`, e.g. FsfairX-LLaMA3-RM, the tiny preset's RM).
- The TL;DR "ScalarModel" checkpoints (vwxyzjn/..__reward__tldr): config.json with `base_config` and `bias`,
  weights `lm_backbone.*` + `scalar_head.{weight,bias}`.
Checkpoints that only ship pickled weights (e.g. Starling-RM-7B-alpha's custom head) are refused: convert them to
safetensors first.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from harness.core.errors import UserError


class ScalarRewardModel(nn.Module):
    """Backbone + linear head on every position; forward pools the last real token like a sequence classifier."""

    def __init__(self, backbone: nn.Module, hidden_size: int, bias: float, eos_token_id: int | None = None):
        super().__init__()
        self.lm_backbone = backbone
        self.scalar_head = nn.Linear(hidden_size, 1)
        self.config = SimpleNamespace(reward_bias=bias, eos_token_id=eos_token_id, pad_token_id=None)

    @property
    def base_model(self) -> nn.Module:  # what harness.core.scoring.token_values runs (a critic from this RM)
        return self.lm_backbone

    @property
    def score(self) -> nn.Module:
        return self.scalar_head

    def forward(self, input_ids, attention_mask, position_ids=None, **kw):
        hidden = self.lm_backbone(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids).last_hidden_state
        last = (attention_mask * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(1)
        pooled = hidden[torch.arange(len(hidden)), last]
        return SimpleNamespace(logits=self.scalar_head(pooled))


def _local_config(name: str) -> dict | None:
    """config.json of a local directory or of a hub repo already in the local cache (no download)."""
    path = Path(name) / "config.json"
    if not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            path = Path(cached) if isinstance(cached, str) else None
        except Exception:  # not a valid repo id either: let from_pretrained report it
            path = None
    return json.loads(path.read_text()) if path and path.exists() else None


def is_scalar_model(name: str) -> bool:
    config = _local_config(name)
    return bool(config) and "base_config" in config and "bias" in config


def load_scalar_model(name: str, dtype=torch.float32) -> ScalarRewardModel:
    from huggingface_hub import snapshot_download
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    root = Path(name) if Path(name).is_dir() else Path(snapshot_download(name))
    config = json.loads((root / "config.json").read_text())
    base = dict(config["base_config"])
    base_config = AutoConfig.for_model(base.pop("model_type"), **base)
    model = ScalarRewardModel(AutoModel.from_config(base_config, torch_dtype=dtype), config["hidden_size"],
                              float(config["bias"]), eos_token_id=base_config.eos_token_id)
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        raise UserError(f"reward model {name!r} has no safetensors weights; pickled weights are never loaded "
                        f"(convert them to safetensors)")
    state = {}
    for shard in shards:
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"reward model {name!r} does not match the ScalarModel layout "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(dtype)
