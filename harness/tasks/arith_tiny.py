"""The arithmetic task's tiny policy (`model.policy: builtin:arith`), built by the harness itself on first use.

Like the TL;DR tiny preset (harness/tasks/tiny.py, whose helpers it uses): a byte-level BPE tokenizer trained on the
stand-in's prompts and worked solutions, a small Pythia-architecture (GPT-NeoX) policy, and SFT on the solutions
("Question: ...\\nAnswer:" -> " <steps>\\n#### N" + EOS) of the training split. No reward model: the task is scored
by its checker. Deterministic from the recipe's seed, cached under <cache>/arith-tiny-<key>/ where the key hashes
the recipe (its reward-model fields excepted: nothing here reads them), BUILD_VERSION and the generator's
arith.VERSION, so a changed recipe or generator is rebuilt.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace

import torch

from harness.core.settings import TinyRecipe
from harness.core.scoring import cross_entropy_on_response
from harness.core.store import code_fingerprint, config_hash, write_json
from harness.tasks import Builtin, arith, register_builtin, tiny
from harness.tasks.tiny import (TinyPaths, encode_rows, ensure_built, new_policy, quiet_transformers,
                                sequence_lengths, train_steps, train_tokenizer)

BUILD_VERSION = 1
UNUSED = ("rm_steps", "rm_batch", "rm_lr")  # recipe fields of the TL;DR build's reward model


# the code that makes a build (harness.core.store.code_fingerprint): a change to it is another build
BUILD_CODE = ("harness.tasks.arith_tiny", "harness.tasks.arith", *tiny.BUILD_CODE)


def recipe_key(recipe: TinyRecipe) -> str:
    return config_hash({"recipe": recipe.model_dump(exclude=set(UNUSED)), "build_version": BUILD_VERSION,
                        "data": arith.VERSION, "code": code_fingerprint(*BUILD_CODE)})


def ensure_arith_tiny(recipe: TinyRecipe, cache_dir: str | None = None, log=print) -> TinyPaths:
    """The built policy's directory (`.policy`, tokenizer inside), building it first when the key is new."""
    return ensure_built("arith-tiny", recipe_key(recipe), lambda out: build(recipe, out, log), cache_dir, log)


def build(recipe: TinyRecipe, out: TinyPaths, log=print) -> None:
    quiet_transformers()
    t0 = time.time()
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    rng = torch.Generator().manual_seed(recipe.seed)
    data = arith.standard().task
    # only as many problems as the SFT steps can visit (all of them for the preset; a test-size recipe then builds
    # in seconds): the tokenizer and the SFT batches see the same ones
    data = replace(data, sft_train=data.sft_train[: recipe.sft_steps * recipe.sft_batch])
    tokenizer = train_tokenizer(data, recipe.vocab_size)
    pad = tokenizer.pad_token_id
    policy = new_policy(recipe, tokenizer)
    info: dict = {"recipe": recipe.model_dump(exclude=set(UNUSED)), "build_version": BUILD_VERSION,
                  "data_version": arith.VERSION, "parameters": sum(p.numel() for p in policy.parameters()),
                  "torch_threads": torch.get_num_threads(), "sft_examples": len(data.sft_train)}
    query, ref, ref_mask = encode_rows(data.sft_train, tokenizer, recipe, ("reference",))
    # a solution longer than max_response_tokens loses its EOS (and its "#### N"): the policy would learn to ramble
    info["references_cut"] = int((ref_mask.sum(1) == ref_mask.shape[1]).sum())
    info["prompts_cut"] = int(((query != pad).sum(1) >= recipe.max_prompt_tokens).sum())
    train_steps(policy, cross_entropy_on_response, (query, ref, ref_mask), sequence_lengths(query, pad, ref_mask),
                recipe.sft_steps, recipe.sft_batch, recipe.sft_lr, rng, "SFT (arith)", pad, recipe)
    eq, eref, emask = encode_rows(data.sft_eval[:512], tokenizer, recipe, ("reference",))
    with torch.no_grad():
        info["sft_eval_loss"] = cross_entropy_on_response(policy, eq, eref, emask, pad).item()
    info["sft_seconds"] = info["total_seconds"] = round(time.time() - t0, 1)
    log(f"  SFT done: held-out loss {info['sft_eval_loss']:.3f} ({info['sft_seconds']} s)")
    policy.save_pretrained(out.policy, safe_serialization=True)
    tokenizer.save_pretrained(out.policy)
    write_json(out.info, info)


register_builtin("builtin:arith", Builtin(ensure_arith_tiny, has_reward_model=False,
                                          note="its tasks, arith and gsm8k, are scored by a checker"))
