"""Generation: fixed-length sampling, then everything after the first EOS is cut (padded and masked out).

A small KV-cached sampling loop rather than `generate`: it is deterministic under a seeded torch.Generator (needed
for exact resume), applies exactly `logits / temperature` with top_k 0 and top_p 1 as PROTOCOL.md asks, and never
stops early, so every optimizer pays for the same number of decode steps.
"""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def sample(model, query: Tensor, max_new_tokens: int, temperature: float, pad_id: int,
           generator: torch.Generator | None = None, group: int = 1,
           with_logprobs: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Sample `max_new_tokens` tokens for each left-padded query; [B, max_new_tokens] (raw, not yet truncated).
    with_logprobs: also the sampled tokens' log-probs under `logits / temperature` as the sampler saw them
    ([B, max_new_tokens]), for the check of drift against the trainer's forward.

    group > 1: `group` samples per query, consecutive in the output ([B * group, ...]); the query's prefill runs
    once and its KV cache is repeated. Decoding writes into a preallocated (static) KV cache instead of growing one
    by concatenation at every step (same numbers, a quarter faster on the tiny preset).
    """
    from transformers import StaticCache

    from harness.core.scoring import cache_keyword, returned_cache

    cache_key = cache_keyword(model)

    attention_mask = (query != pad_id).long()
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=query, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    logits = out.logits[:, -1].repeat_interleave(group, 0)
    cache = StaticCache(config=model.config, max_cache_len=query.shape[1] + max_new_tokens)
    for i, layer in enumerate(returned_cache(out).layers):
        cache.update(layer.keys.repeat_interleave(group, 0), layer.values.repeat_interleave(group, 0), i)
    attention_mask = torch.cat([attention_mask.repeat_interleave(group, 0),
                                attention_mask.new_ones(len(logits), max_new_tokens)], dim=1)
    next_pos = position_ids[:, -1:].repeat_interleave(group, 0) + 1
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)  # [B, 1]
        tokens.append(token)
        if with_logprobs:
            logprobs.append(torch.log_softmax(logits.float() / temperature, dim=-1).gather(1, token))
        if step == max_new_tokens - 1:
            break
        out = model(input_ids=token, attention_mask=attention_mask[:, : query.shape[1] + step + 1],
                    position_ids=next_pos, use_cache=True, **{cache_key: cache})
        logits, next_pos = out.logits[:, -1], next_pos + 1
    if with_logprobs:
        return torch.cat(tokens, dim=1), torch.cat(logprobs, dim=1)
    return torch.cat(tokens, dim=1)


class HFEngine:
    """The backbone's own sampler (`sample`) on the policy itself: the default engine, on every device."""

    name = "hf"

    def sync(self, policy) -> None:
        """Nothing to do: it samples from the policy's current weights."""

    def generate(self, policy, query: Tensor, max_new_tokens: int, temperature: float, pad_id: int,
                 generator: torch.Generator, group: int) -> tuple[Tensor, Tensor]:
        """Raw samples [B * group, max_new_tokens] and their log-probs as the engine computed them."""
        return sample(policy, query, max_new_tokens, temperature, pad_id, generator, group, with_logprobs=True)


def logprob_drift(engine_logp: Tensor, trainer_logp: Tensor, mask: Tensor) -> dict[str, float]:
    """How far the rollout engine's log-probs of the sampled tokens are from the trainer's forward (pi_t), over
    the counted tokens: mean and max absolute difference per token, and the mean |sequence log-ratio|. Near 0 for
    the backbone's sampler; a large value means pi_t's samples did not come from pi_t (engine precision, stale
    weights), which biases every on-policy optimizer."""
    diff = (engine_logp - trainer_logp).abs() * mask
    n = mask.sum().clamp(min=1)
    return {"rollout/logprob_drift_mean": (diff.sum() / n).item(), "rollout/logprob_drift_max": diff.max().item(),
            "rollout/sequence_logratio_abs": ((engine_logp - trainer_logp) * mask).sum(-1).abs().mean().item()}


def make_engine(engine: str, policy_source: str, dtype: str, seed: int, max_model_len: int,
                gpu_memory_utilization: float):
    """`hf` (the backbone's sampler), `vllm`, or `auto`: vLLM when it is installed and a GPU is present."""
    if engine == "auto":
        import importlib.util

        engine = "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
    if engine == "hf":
        return HFEngine()
    from harness.core.vllm_engine import VLLMEngine

    return VLLMEngine(policy_source, dtype=dtype, seed=seed, max_model_len=max_model_len,
                      gpu_memory_utilization=gpu_memory_utilization)


def truncate_after_eos(response: Tensor, eos_id: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Keep tokens up to AND including the first EOS; the rest becomes pad. Returns (response, mask)."""
    is_eos = response == eos_id
    # position of the first EOS, or the length when there is none
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(response[:, 0], response.shape[1]))
    mask = torch.arange(response.shape[1], device=response.device)[None, :] <= first[:, None]
    return response.masked_fill(~mask, pad_id), mask
