"""Offline preference pairs for a verifiable task (arith, gsm8k, math): SFT samples labelled by the task's checker.

DPO trains on fixed (chosen, rejected) pairs and these tasks have none, so they are made once from the SFT policy:
two responses per training prompt, sampled at the run's sampling temperature with a fixed seed (the same pairs
for every seed and optimizer), scored by the checker under the run's score rule (a response without EOS gets the
missing-EOS score). One right and one wrong make a pair (chosen = the right one). Equal scores are a tie and give
no pair: `ties_correct` (both right) and `ties_wrong` (both wrong or unfinished) count them. The pairs are cached
under <cache>/checked_pairs/<key>.jsonl, keyed by everything that changes them, beside a .json of the counts.
"""
from __future__ import annotations

import json
from dataclasses import replace

import torch

from harness.core.errors import UserError
from harness.core.examples import Example, TaskData
from harness.core.experience import encode_queries, task_scores
from harness.core.rollout import sample, truncate_after_eos
from harness.core.scoring import ScoreRule
from harness.core.store import cache_root, code_fingerprint, config_hash, read_json, write_json, write_jsonl
from harness.core.tokens import decode_responses

PAIR_SEED = 0  # fixed: every seed and optimizer trains on the same pairs (as on TL;DR's fixed preference data)
VERSION = 1  # bump when the way pairs are made changes


def pairs_key(origin: dict, source: str, n_prompts: int, max_prompt_tokens: int, max_new_tokens: int,
              temperature: float, rule: ScoreRule, checker: tuple = ()) -> str:
    """The pairs' cache key; `checker`: the task's reward (its class), part of the code that made them."""
    return config_hash({"policy": origin.get("policy"), "tokenizer": origin.get("tokenizer"), "source": source,
                        "prompts": n_prompts, "max_prompt_tokens": max_prompt_tokens,
                        "max_new_tokens": max_new_tokens, "temperature": temperature,
                        "rule": [rule.scale, rule.missing_eos_score], "seed": PAIR_SEED, "version": VERSION,
                        # the EOS test only when not the default (the keys of earlier pairs stay valid), and the
                        # code that makes the pairs: a changed sampler, scorer or checker never reads old pairs
                        **({"eos_test": rule.missing_eos_test} if rule.missing_eos_test != "eos" else {}),
                        "code": code_fingerprint(make_pairs, "harness.core.rollout", "harness.core.scoring", *checker)})


@torch.no_grad()
def make_pairs(policy, tokenizer, examples: list[Example], reward, *, max_prompt_tokens: int, max_new_tokens: int,
               temperature: float, rule: ScoreRule, chunk: int = 64) -> tuple[list[Example], dict]:
    """(pairs, counts): one pair per prompt whose two samples the checker scores differently."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(policy.parameters()).device
    generator = torch.Generator(device).manual_seed(PAIR_SEED)
    was_training = policy.training
    policy.eval()
    pairs, counts = [], {"prompts": len(examples), "pairs": 0, "ties_correct": 0, "ties_wrong": 0}
    for start in range(0, len(examples), chunk):
        batch = examples[start : start + chunk]
        query = encode_queries(batch, tokenizer, max_prompt_tokens, device)
        response, mask = truncate_after_eos(sample(policy, query, max_new_tokens, temperature, pad, generator, 2),
                                            eos, pad)
        scores = task_scores(reward, response, mask, batch, tokenizer, eos, rule).reshape(-1, 2).tolist()
        texts = decode_responses(response, mask, tokenizer)
        for i, (ex, (a, b)) in enumerate(zip(batch, scores)):
            if a == b:
                counts["ties_correct" if a > 0 else "ties_wrong"] += 1
                continue
            # decoded text keeps its leading space and drops the EOS, as responses are held (encode_responses
            # appends the EOS again; an unfinished sample is max_new_tokens long, so it stays without one)
            good, bad = (texts[2 * i], texts[2 * i + 1]) if a > b else (texts[2 * i + 1], texts[2 * i])
            pairs.append(replace(ex, chosen=good, rejected=bad))
    policy.train(was_training)
    counts["pairs"] = len(pairs)
    return pairs, counts


def _row(ex: Example) -> dict:
    return {"question": ex.question, "chosen": ex.chosen, "rejected": ex.rejected}


def cached_pairs(data: TaskData, models, *, n_prompts: int, max_prompt_tokens: int, max_new_tokens: int,
                 temperature: float, rule: ScoreRule, cache_dir: str | None = None, write: bool = True,
                 log=print) -> dict:
    """Fill `data.pref_train` with checker-labelled SFT pairs of the first `n_prompts` training prompts (made on
    first use, then read from the cache; `write` False: not written, as on every process but the main one);
    returns the counts (prompts, pairs, ties_correct, ties_wrong)."""
    examples = data.sft_train[:n_prompts]
    key = pairs_key(models.origin, data.source, len(examples), max_prompt_tokens, max_new_tokens, temperature, rule,
                    checker=(type(data.reward),))
    path = cache_root(cache_dir) / "checked_pairs" / f"{key}.jsonl"
    counts_path = path.with_suffix(".json")
    by_question = {ex.question: ex for ex in examples}
    if path.exists() and counts_path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        data.pref_train = [replace(by_question[r["question"]], chosen=r["chosen"], rejected=r["rejected"])
                           for r in rows]
        return read_json(counts_path)
    log(f"Labelling SFT samples of {len(examples)} training prompts with the checker for offline pairs "
        f"(once; cached in {path.parent})")
    with models.as_reference() as sft:  # the reference is the SFT policy, whatever the run has trained
        pairs, counts = make_pairs(sft, models.tokenizer, examples, data.reward, max_prompt_tokens=max_prompt_tokens,
                                   max_new_tokens=max_new_tokens, temperature=temperature, rule=rule)
    if not pairs:
        raise UserError(f"no offline pairs: all {counts['prompts']} prompts' two SFT samples tied "
                        f"({counts['ties_correct']} both right, {counts['ties_wrong']} both wrong)")
    data.pref_train = pairs
    if not write:
        return counts
    write_jsonl(path, [_row(p) for p in pairs])
    write_json(counts_path, counts)
    return counts
