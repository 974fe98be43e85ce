"""The TL;DR suite: RM score, KL to the reference (sequence estimate and exact), win rate against human references.

Generation uses the evaluation temperature (the reference code: 0.01); the KL is computed on those samples at the
sampling temperature of training (stated as `kl_temperature`), because log-probs at 0.01 measure nothing useful.
"""
from __future__ import annotations

import torch

from harness.experience import encode_queries
from harness.rollout import sample, truncate_after_eos
from harness.scoring import exact_kl, has_eos, reward_scores, sequence_logprobs
from harness.tasks.synthetic import Facts, gold_reward
from harness.tasks.tldr import Example
from harness.tokens import decode_responses

KL_DEFINITION = "masked_sequence_sum"


@torch.no_grad()
def evaluate_tldr(policy, reference, reward_model, tokenizer, examples: list[Example], *, max_prompt_tokens: int,
                  max_new_tokens: int, temperature: float, kl_temperature: float, judge=None, seed: int = 1234,
                  chunk: int = 64) -> tuple[dict, list[dict]]:
    """Metrics (means over `examples`) and per-sample records. `judge` may be None (win rate not computed)."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    generator = torch.Generator().manual_seed(seed)  # the same sampling noise for every policy evaluated
    was_training = policy.training
    policy.eval()
    parts: dict[str, list] = {"response": [], "mask": [], "score": [], "kl": [], "kl_exact": []}
    for start in range(0, len(examples), chunk):
        batch = examples[start : start + chunk]
        query = encode_queries(batch, tokenizer, max_prompt_tokens)
        raw = sample(policy, query, max_new_tokens, temperature, pad, generator)
        response, mask = truncate_after_eos(raw, eos, pad)
        pi = sequence_logprobs(policy, query, response, mask, pad, kl_temperature, keep_logits=True)
        ref = sequence_logprobs(reference, query, response, mask, pad, kl_temperature, keep_logits=True)
        parts["response"].append(response)
        parts["mask"].append(mask)
        parts["score"].append(reward_scores(reward_model, query, response, mask, pad))
        parts["kl"].append(pi.sum - ref.sum)
        parts["kl_exact"].append(exact_kl(pi.logits, ref.logits, mask))
    policy.train(was_training)
    response, mask = torch.cat(parts["response"]), torch.cat(parts["mask"])
    score, kl, kl_ex = (torch.cat(parts[k]) for k in ("score", "kl", "kl_exact"))
    ended = has_eos(response, mask, eos).tolist()
    texts = decode_responses(response, mask, tokenizer)
    lengths = mask.sum(-1).tolist()
    metrics = {"rm_score": score.mean().item(), "kl": kl.mean().item(), "kl_exact": kl_ex.mean().item(),
               "response_length": sum(lengths) / len(lengths), "eos_rate": sum(ended) / len(ended),
               "n": len(examples), "temperature": temperature, "kl_temperature": kl_temperature,
               "kl_definition": KL_DEFINITION, "win_rate": None, "win_rate_judge": None, "gold_reward": None}
    samples = [{"prompt": ex.prompt, "response": t, "reference": ex.reference, "score": s, "kl": k, "eos": e}
               for ex, t, s, k, e in zip(examples, texts, score.tolist(), kl.tolist(), ended)]
    if all(ex.facts for ex in examples):
        golds = [gold_reward(t, Facts(**ex.facts), terminated=e) for ex, t, e in zip(examples, texts, ended)]
        metrics["gold_reward"] = sum(golds) / len(golds)
        for rec, g in zip(samples, golds):
            rec["gold"] = g
    if judge is not None:
        kwargs = {"terminated": ended} if getattr(judge, "sees_termination", False) else {}
        verdicts = judge.win_rate([ex.prompt for ex in examples], texts, [ex.reference for ex in examples], **kwargs)
        metrics["win_rate"], metrics["win_rate_judge"] = verdicts["win_rate"], judge.name
        metrics["judge"] = {k: v for k, v in verdicts.items() if k != "per_sample"}
        for rec, v in zip(samples, verdicts["per_sample"]):
            rec["judge"] = v
    return metrics, samples
