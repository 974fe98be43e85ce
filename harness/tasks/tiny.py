"""The tiny preset, built by the harness itself on first use: tokenizer, SFT policy, reward model.

Deterministic from the recipe's seed, cached under <cache>/tiny-<recipe hash>/, rebuilt when the recipe (or
BUILD_VERSION, bumped when this code changes what it builds) changes. The directory appears atomically (built in a
temp dir, then renamed), so an interrupted build is simply redone.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress

from harness.core.settings import TinyRecipe
from harness.core.scoring import cross_entropy_on_response, pairwise_reward_loss, reward_scores
from harness.core.errors import UserError
from harness.core.store import cache_root, code_fingerprint, config_hash, write_json
from harness.tasks import Builtin, register_builtin, synthetic
from harness.tasks.tldr import load_task, synthetic_source
from harness.core.examples import TaskData
from harness.core.tokens import encode_responses, left_pad

BUILD_VERSION = 2  # 2: batches without all-padding columns, each RM pair's prompt run once (same numbers, rounded)
EOS, PAD = "<|endoftext|>", "<|padding|>"


@dataclass
class TinyPaths:
    root: Path

    policy = property(lambda self: self.root / "sft")
    reward_model = property(lambda self: self.root / "reward")
    info = property(lambda self: self.root / "build_info.json")


# the code that makes a build (harness.core.store.code_fingerprint): a change to it is another build
BUILD_CODE = ("harness.tasks.tiny", "harness.tasks.synthetic", "harness.tasks.tldr_prompt", "harness.core.tokens",
              "harness.core.scoring:cross_entropy_on_response", "harness.core.scoring:pairwise_reward_loss",
              "harness.core.scoring:reward_scores")


def recipe_key(recipe: TinyRecipe) -> str:
    """The build's cache key: the recipe (a standard-posts recipe dumps without its `posts` field, TinyRecipe's
    serializer; a hard recipe gets a key of its own), the data version and the code that builds it."""
    return config_hash({"recipe": recipe.model_dump(), "build_version": BUILD_VERSION,
                        "data": synthetic.data_version(recipe.posts), "code": code_fingerprint(*BUILD_CODE)})


def ensure_tiny(recipe: TinyRecipe, cache_dir: str | None = None, log=print) -> TinyPaths:
    return ensure_built("tiny", recipe_key(recipe), lambda out: build(recipe, out, log), cache_dir, log)


def ensure_built(name: str, key: str, build_into, cache_dir: str | None = None, log=print) -> TinyPaths:
    """<cache>/<name>-<key>/, built by `build_into(TinyPaths(tmp))` on first use (locked, then renamed into place)."""
    final = cache_root(cache_dir) / f"{name}-{key}"
    if (final / "build_info.json").exists():
        return TinyPaths(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(final.parent / f".{name}-{key}.lock", log):  # one build per key at a time, others wait for it
        if (final / "build_info.json").exists():
            return TinyPaths(final)
        log(f"Building the {name} preset (first use; cached afterwards) in {final}")
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".building-"))
        try:
            build_into(TinyPaths(tmp))
            if final.exists():  # a concurrent build (without the lock: another file system) finished first
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return TinyPaths(final)


@contextlib.contextmanager
def _build_lock(path: Path, log):
    """An exclusive lock on `path` (filelock), so that two processes never build the same preset at once."""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"Waiting for another process building the same tiny preset ({path.name})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def train_tokenizer(data: TaskData, vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [ex.prompt + ex.reference for ex in data.sft_train] + [ex.chosen for ex in data.pref_train[:5000]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
                            show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def encode_rows(examples, tokenizer, recipe: TinyRecipe, fields: tuple[str, ...]):
    # One batched tokenizer call for every prompt that fits; only the rare longer ones take encode_prompt's
    # per-example cut (the same ids either way: encode_prompt returns the plain encoding when it fits).
    # (a plain prompt is used verbatim: these tokenizers have no chat template)
    texts = [ex.prompt_string(tokenizer) for ex in examples]
    plain = tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"]
    prompts = [ids if t is not None and len(ids) <= recipe.max_prompt_tokens
               else ex.encode_prompt(tokenizer, recipe.max_prompt_tokens)
               for ex, t, ids in zip(examples, texts, plain)]
    query = left_pad(prompts, tokenizer.pad_token_id)
    responses = []  # ids, mask, ids, mask, ... in the order of `fields`
    for f in fields:
        responses += encode_responses([getattr(ex, f) for ex in examples], tokenizer, recipe.max_response_tokens,
                                      tokenizer.eos_token_id, tokenizer.pad_token_id)
    return query, *responses


def _batches(lengths: torch.Tensor, batch: int, steps: int, rng: torch.Generator, bucket: int = 0):
    """Seeded shuffled batches. bucket 0: consecutive slices of a random permutation (a new one when it runs out).
    bucket > 1: each run of `bucket` batches is sorted by length before it is cut, and those batches go in random
    order, so that `_trim` removes most of the padding (batches of similar length; not the same batches)."""
    n, out = len(lengths), []
    if n < batch:
        raise UserError(f"the tiny recipe's batch ({batch}) is larger than its data ({n} rows): lower it")
    if bucket <= 1:
        order, pos = torch.randperm(n, generator=rng), 0
        for _ in range(steps):
            if pos + batch > n:
                order, pos = torch.randperm(n, generator=rng), 0
            out.append(order[pos : pos + batch])
            pos += batch
        return out
    while len(out) < steps:
        order = torch.randperm(n, generator=rng)
        for start in range(0, n - batch + 1, batch * bucket):
            chunk = order[start : start + batch * bucket]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            cut = [chunk[i : i + batch] for i in range(0, len(chunk) - batch + 1, batch)]
            out += [cut[i] for i in torch.randperm(len(cut), generator=rng).tolist()]
    return out[:steps]


def _trim(idx, query: torch.Tensor, *responses: torch.Tensor, pad: int):
    """Rows `idx` without the columns that are padding in every row: the left of the (left-padded) queries and the
    right of the (right-padded) responses, mask included. Positions come from the mask, so the numbers are unchanged."""
    q = query[idx]
    q = q[:, int((q != pad).any(0).float().argmax()) :]
    rows = [r[idx] for r in responses]
    width = max(int(m.sum(1).max()) for m in rows[1::2])
    return q, *(r[:, :width] for r in rows)


def sequence_lengths(query: torch.Tensor, pad: int, *masks: torch.Tensor) -> torch.Tensor:
    return (query != pad).sum(1) + sum(m.sum(1) for m in masks)


def _optimizer(model, lr: float, steps: int, schedule: str = "linear"):
    """AdamW, linear warm-up over the first 5% of the steps, then linear or cosine decay to 0. Written out rather
    than transformers' schedulers: theirs start the warm-up at 0 and do not multiply warm-up and decay, so the
    cached builds (and every number measured on them) would change."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def factor(s: int) -> float:
        if schedule == "linear":
            return min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps)
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_steps(model, loss_fn, tensors, lengths, steps: int, batch: int, lr: float, rng, name: str, pad: int,
           recipe: TinyRecipe) -> None:
    opt, sched = _optimizer(model, lr, steps, recipe.schedule)
    model.train()
    with Progress(transient=True) as bar:
        task = bar.add_task(name, total=steps)
        for idx in _batches(lengths, batch, steps, rng, recipe.length_buckets):
            out = loss_fn(model, *_trim(idx, *tensors, pad=pad), pad)
            loss = out[0] if isinstance(out, tuple) else out
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            bar.update(task, advance=1, description=f"{name} loss {loss.item():.3f}")
    model.eval()


def new_policy(recipe: TinyRecipe, tokenizer):
    """A freshly initialised small Pythia-architecture (GPT-NeoX) causal LM for the recipe and tokenizer."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
                           num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                           intermediate_size=4 * recipe.hidden_size,
                           max_position_embeddings=recipe.max_prompt_tokens + recipe.max_response_tokens + 8,
                           rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                           eos_token_id=eos, bos_token_id=eos, pad_token_id=pad)
    return GPTNeoXForCausalLM(config)


def quiet_transformers() -> None:
    """A first run's terminal shows the build's own lines, not transformers' save/load bars or the reward model's
    load report (its LM head "unexpected", its scalar head "missing": both by design)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build(recipe: TinyRecipe, out: TinyPaths, log=print) -> None:
    from transformers import GPTNeoXForSequenceClassification

    quiet_transformers()

    t0 = clock = time.time()
    seconds: dict[str, float] = {}  # where the build's time goes (build_info["seconds"])

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.time() - clock, 1)
        clock = time.time()

    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    rng = torch.Generator().manual_seed(recipe.seed)
    data = load_task(synthetic_source(recipe.posts))  # the stand-in's profile the recipe names
    lap("data")
    tokenizer = train_tokenizer(data, recipe.vocab_size)
    pad = tokenizer.pad_token_id
    lap("tokenizer")
    policy = new_policy(recipe, tokenizer)
    info: dict = {"recipe": recipe.model_dump(), "build_version": BUILD_VERSION,
                  "parameters": sum(p.numel() for p in policy.parameters()), "torch_threads": torch.get_num_threads()}

    # SFT: cross-entropy of the reference summary given the prompt.
    sft = encode_rows(data.sft_train, tokenizer, recipe, ("reference",))
    lap("encode_sft")
    train_steps(policy, cross_entropy_on_response, sft, sequence_lengths(sft[0], pad, sft[2]), recipe.sft_steps,
                recipe.sft_batch, recipe.sft_lr, rng, "SFT", pad, recipe)
    lap("sft_train")
    eq, eref, emask = encode_rows(data.sft_eval[:512], tokenizer, recipe, ("reference",))
    with torch.no_grad():
        info["sft_eval_loss"] = cross_entropy_on_response(policy, eq, eref, emask, pad).item()
    lap("sft_eval")
    info["sft_seconds"] = round(time.time() - t0, 1)
    log(f"  SFT done: held-out loss {info['sft_eval_loss']:.3f} ({info['sft_seconds']} s)")
    policy.save_pretrained(out.policy, safe_serialization=True)
    tokenizer.save_pretrained(out.policy)

    # Reward model: SFT backbone + scalar head read at EOS, Bradley-Terry loss on the preference pairs.
    t1 = time.time()
    rm = GPTNeoXForSequenceClassification.from_pretrained(out.policy, num_labels=1)
    torch.nn.init.zeros_(rm.score.weight)
    pref = encode_rows(data.pref_train, tokenizer, recipe, ("chosen", "rejected"))
    lap("encode_pairs")
    train_steps(rm, pairwise_reward_loss, pref, sequence_lengths(pref[0], pad, pref[2], pref[4]), recipe.rm_steps,
                recipe.rm_batch, recipe.rm_lr, rng, "reward model", pad, recipe)
    lap("rm_train")
    info.update(_reward_model_report(rm, data, tokenizer, recipe))
    rm.config.reward_bias = info["reward_bias"]
    lap("rm_eval")
    info["rm_seconds"] = round(time.time() - t1, 1)
    log(f"  reward model done: held-out pair accuracy {info['rm_pair_accuracy']:.2f}, agreement with the gold "
        f"reward {info['rm_gold_rank_correlation']:.2f} (Spearman) ({info['rm_seconds']} s)")
    rm.save_pretrained(out.reward_model, safe_serialization=True)
    tokenizer.save_pretrained(out.reward_model)
    info["total_seconds"] = round(time.time() - t0, 1)
    info["seconds"] = seconds
    write_json(out.info, info)


@torch.no_grad()
def _reward_model_report(rm, data: TaskData, tokenizer, recipe: TinyRecipe) -> dict:
    """Bias (mean raw score of references), held-out pair accuracy, and rank agreement with the gold reward."""
    from scipy.stats import spearmanr

    pad = tokenizer.pad_token_id
    rm.config.reward_bias = 0.0
    q, ref, ref_m = encode_rows(data.sft_eval[:512], tokenizer, recipe, ("reference",))
    bias = reward_scores(rm, q, ref, ref_m, pad).mean().item()
    pairs = data.pref_eval[:512]
    q, ch, ch_m, rj, rj_m = encode_rows(pairs, tokenizer, recipe, ("chosen", "rejected"))
    s_ch, s_rj = reward_scores(rm, q, ch, ch_m, pad), reward_scores(rm, q, rj, rj_m, pad)
    gold = [synthetic.gold_reward(t, synthetic.Facts(**ex.facts)) for ex in pairs for t in (ex.chosen, ex.rejected)]
    scores = torch.stack([s_ch, s_rj], 1).flatten().tolist()
    rho = spearmanr(scores, gold).statistic
    return {"reward_bias": bias, "rm_pair_accuracy": (s_ch > s_rj).float().mean().item(),
            "rm_gold_rank_correlation": float(rho)}


def build_info(paths: TinyPaths) -> dict:
    return json.loads(paths.info.read_text())


register_builtin("builtin:tiny", Builtin(ensure_tiny))  # the TL;DR stand-in's SFT policy and reward model
