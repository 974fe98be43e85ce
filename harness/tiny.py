"""The tiny preset, built by the harness itself on first use: tokenizer, SFT policy, reward model.

Deterministic from the recipe's seed, cached under <cache>/tiny-<recipe hash>/, rebuilt when the recipe (or
BUILD_VERSION, bumped when this code changes what it builds) changes. The directory appears atomically (built in a
temp dir, then renamed), so an interrupted build is simply redone.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress

from harness.config import TinyRecipe
from harness.scoring import cross_entropy_on_response, pairwise_reward_loss, reward_scores
from harness.store import config_hash, write_json
from harness.tasks import synthetic
from harness.tasks.tldr import TaskData, load_task, truncate_prompt
from harness.tokens import encode_responses, left_pad

BUILD_VERSION = 1
EOS, PAD = "<|endoftext|>", "<|padding|>"


@dataclass
class TinyPaths:
    root: Path

    policy = property(lambda self: self.root / "sft")
    reward_model = property(lambda self: self.root / "reward")
    info = property(lambda self: self.root / "build_info.json")


def cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


def ensure_tiny(recipe: TinyRecipe, cache_dir: str | None = None, log=print) -> TinyPaths:
    key = config_hash({"recipe": recipe.model_dump(), "build_version": BUILD_VERSION, "data": synthetic.VERSION})
    final = cache_root(cache_dir) / f"tiny-{key}"
    if (final / "build_info.json").exists():
        return TinyPaths(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    log(f"Building the tiny preset (first use; cached afterwards) in {final}")
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".building-"))
    try:
        build(recipe, TinyPaths(tmp), log)
        if final.exists():  # a concurrent build finished first; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TinyPaths(final)


def train_tokenizer(data: TaskData, vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [ex.prompt + ex.reference for ex in data.sft_train] + [ex.chosen for ex in data.pref_train[:5000]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
                            show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def _encode(examples, tokenizer, recipe: TinyRecipe, fields: tuple[str, ...]):
    query = left_pad([truncate_prompt(ex, tokenizer, recipe.max_prompt_tokens) for ex in examples],
                     tokenizer.pad_token_id)
    responses = []  # ids, mask, ids, mask, ... in the order of `fields`
    for f in fields:
        responses += encode_responses([getattr(ex, f) for ex in examples], tokenizer, recipe.max_response_tokens,
                                      tokenizer.eos_token_id, tokenizer.pad_token_id)
    return query, *responses


def _batches(n: int, batch: int, steps: int, rng: torch.Generator):
    order = torch.randperm(n, generator=rng)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=rng), 0
        yield order[pos : pos + batch]
        pos += batch


def _optimizer(model, lr: float, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps) + 0.0)
    return opt, sched


def build(recipe: TinyRecipe, out: TinyPaths, log=print) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    t0 = time.time()
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    rng = torch.Generator().manual_seed(recipe.seed)
    data = load_task("synthetic")
    tokenizer = train_tokenizer(data, recipe.vocab_size)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
                           num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                           intermediate_size=4 * recipe.hidden_size,
                           max_position_embeddings=recipe.max_prompt_tokens + recipe.max_response_tokens + 8,
                           rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                           eos_token_id=eos, bos_token_id=eos, pad_token_id=pad)
    policy = GPTNeoXForCausalLM(config)
    info: dict = {"recipe": recipe.model_dump(), "build_version": BUILD_VERSION,
                  "parameters": sum(p.numel() for p in policy.parameters())}

    # SFT: cross-entropy of the reference summary given the prompt.
    query, ref, ref_mask = _encode(data.sft_train, tokenizer, recipe, ("reference",))
    opt, sched = _optimizer(policy, recipe.sft_lr, recipe.sft_steps)
    policy.train()
    with Progress(transient=True) as bar:
        task = bar.add_task("SFT", total=recipe.sft_steps)
        for idx in _batches(len(query), recipe.sft_batch, recipe.sft_steps, rng):
            loss = cross_entropy_on_response(policy, query[idx], ref[idx], ref_mask[idx], pad)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            bar.update(task, advance=1, description=f"SFT loss {loss.item():.3f}")
    policy.eval()
    eq, eref, emask = _encode(data.sft_eval[:512], tokenizer, recipe, ("reference",))
    with torch.no_grad():
        info["sft_eval_loss"] = cross_entropy_on_response(policy, eq, eref, emask, pad).item()
    info["sft_seconds"] = round(time.time() - t0, 1)
    log(f"  SFT done: held-out loss {info['sft_eval_loss']:.3f} ({info['sft_seconds']} s)")
    policy.save_pretrained(out.policy, safe_serialization=True)
    tokenizer.save_pretrained(out.policy)

    # Reward model: SFT backbone + scalar head read at EOS, Bradley-Terry loss on the preference pairs.
    t1 = time.time()
    rm = GPTNeoXForSequenceClassification.from_pretrained(out.policy, num_labels=1)
    torch.nn.init.zeros_(rm.score.weight)
    query, ch, ch_m, rj, rj_m = _encode(data.pref_train, tokenizer, recipe, ("chosen", "rejected"))
    opt, sched = _optimizer(rm, recipe.rm_lr, recipe.rm_steps)
    rm.train()
    with Progress(transient=True) as bar:
        task = bar.add_task("reward model", total=recipe.rm_steps)
        for idx in _batches(len(query), recipe.rm_batch, recipe.rm_steps, rng):
            loss, acc = pairwise_reward_loss(rm, query[idx], ch[idx], ch_m[idx], rj[idx], rj_m[idx], pad)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            bar.update(task, advance=1, description=f"reward model loss {loss.item():.3f}")
    rm.eval()
    info.update(_reward_model_report(rm, data, tokenizer, recipe))
    rm.config.reward_bias = info["reward_bias"]
    info["rm_seconds"] = round(time.time() - t1, 1)
    log(f"  reward model done: held-out pair accuracy {info['rm_pair_accuracy']:.2f}, agreement with the gold "
        f"reward {info['rm_gold_rank_correlation']:.2f} (Spearman) ({info['rm_seconds']} s)")
    rm.save_pretrained(out.reward_model, safe_serialization=True)
    tokenizer.save_pretrained(out.reward_model)
    info["total_seconds"] = round(time.time() - t0, 1)
    write_json(out.info, info)


@torch.no_grad()
def _reward_model_report(rm, data: TaskData, tokenizer, recipe: TinyRecipe) -> dict:
    """Bias (mean raw score of references), held-out pair accuracy, and rank agreement with the gold reward."""
    import pandas as pd

    pad = tokenizer.pad_token_id
    rm.config.reward_bias = 0.0
    q, ref, ref_m = _encode(data.sft_eval[:512], tokenizer, recipe, ("reference",))
    bias = reward_scores(rm, q, ref, ref_m, pad).mean().item()
    pairs = data.pref_eval[:512]
    q, ch, ch_m, rj, rj_m = _encode(pairs, tokenizer, recipe, ("chosen", "rejected"))
    s_ch, s_rj = reward_scores(rm, q, ch, ch_m, pad), reward_scores(rm, q, rj, rj_m, pad)
    gold = [synthetic.gold_reward(t, synthetic.Facts(**ex.facts)) for ex in pairs for t in (ex.chosen, ex.rejected)]
    scores = torch.stack([s_ch, s_rj], 1).flatten().tolist()
    rho = pd.Series(scores).corr(pd.Series(gold), method="spearman")
    return {"reward_bias": bias, "rm_pair_accuracy": (s_ch > s_rj).float().mean().item(),
            "rm_gold_rank_correlation": float(rho)}


def build_info(paths: TinyPaths) -> dict:
    return json.loads(paths.info.read_text())
