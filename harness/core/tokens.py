"""Turning text into the padded tensors the backbone uses: left-padded queries, right-padded responses."""
from __future__ import annotations

import torch
from torch import Tensor


def left_pad(seqs: list[list[int]], pad_id: int) -> Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long)


def encode_responses(texts: list[str], tokenizer, max_tokens: int, eos_id: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Offline responses (references, preference pairs) as [N, max_tokens] + mask, EOS appended.

    A text too long for `max_tokens` is cut and so has no EOS: it then gets the same missing-EOS treatment as a
    sampled response that never ended. A text that already ends in the tokenizer's EOS string loses it, so every
    response carries exactly one EOS (a literal "<|endoftext|>" is tokenized as the EOS token itself).
    """
    eos_text = getattr(tokenizer, "eos_token", None)
    if eos_text:
        texts = [t[: -len(eos_text)] if t.endswith(eos_text) else t for t in texts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = torch.full((len(texts), max_tokens), pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_tokens), dtype=torch.bool)
    for i, seq in enumerate(ids):
        seq = (list(seq) + [eos_id])[:max_tokens]
        out[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = True
    return out, mask


def decode_responses(response: Tensor, mask: Tensor, tokenizer) -> list[str]:
    """Response text without EOS/padding."""
    eos = tokenizer.eos_token_id
    return [tokenizer.decode([t for t, m in zip(r.tolist(), mk.tolist()) if m and t != eos])
            for r, mk in zip(response, mask)]
