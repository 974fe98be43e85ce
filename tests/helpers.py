"""Small stand-in models whose outputs are known by hand."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class BigramLM(nn.Module):
    """logits at position t depend only on token t: table[token]. Easy to compute log-probs by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
        return SimpleNamespace(logits=self.table[input_ids])


class ConstantRewardModel(nn.Module):
    """Score = number of real tokens (so different lengths give different, known scores)."""

    def __init__(self, eos_id: int, bias: float = 0.0):
        super().__init__()
        self.config = SimpleNamespace(eos_token_id=eos_id, reward_bias=bias)

    def forward(self, input_ids, attention_mask, position_ids=None, **kw):
        return SimpleNamespace(logits=attention_mask.sum(-1, keepdim=True).float())
