"""Where the tiny preset's build time goes, and what a recipe change does to it and to its quality.

  python benchmarks/tiny_build.py build [--preset tiny] [--set sft_steps=300 ...] [--out DIR]
      one full build (the harness's own code) into a temporary directory; prints build_info: held-out SFT loss,
      RM pair accuracy and Spearman with the gold reward, seconds per phase (data, tokenizer, encode, train, eval)
  python benchmarks/tiny_build.py steps [--preset tiny] [--old FILE] [--steps 20] [--rounds 2]
      seconds per SFT and RM step of the current build code against an older copy of harness/tasks/tiny.py (FILE),
      alternated back to back (a shared machine's load drifts), on the same recipe
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.app.config import parse_overrides, resolve  # noqa: E402


def recipe_of(args):
    recipe = resolve(args.preset).model.tiny
    return type(recipe).model_validate({**recipe.model_dump(), **parse_overrides(args.set)})  # validated, as in a preset


def full_build(args) -> dict:
    from harness.tasks import tiny

    out = Path(args.out or tempfile.mkdtemp(prefix="tiny-build-"))
    tiny.build(recipe_of(args), tiny.TinyPaths(out), log=print)
    info = json.loads((out / "build_info.json").read_text())
    print(json.dumps({k: v for k, v in info.items() if k != "recipe"}, indent=1))
    return info


def _load(path: str):
    spec = importlib.util.spec_from_file_location(f"tiny_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _two_forward_pair_loss(rm, query, chosen, chosen_mask, rejected, rejected_mask, pad):
    """The RM loss before the shared-prompt forward: [prompt | chosen] and [prompt | rejected] as two sequences."""
    from harness.core.scoring import forward_inputs

    r = rm(**forward_inputs(torch.cat([query, query]), torch.cat([chosen, rejected]), pad)).logits.float().squeeze(-1)
    r_c, r_r = r.chunk(2)
    return -torch.nn.functional.logsigmoid(r_c - r_r).mean(), (r_c > r_r).float().mean()


def _step_seconds(module, recipe, data, tokenizer, steps: int) -> dict:
    """Seconds per SFT step and per RM step of `module`'s training loop (its own batching and losses)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    pad = tokenizer.pad_token_id
    cfg = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, num_hidden_layers=recipe.layers,
                        num_attention_heads=recipe.heads, intermediate_size=4 * recipe.hidden_size,
                        max_position_embeddings=recipe.max_prompt_tokens + recipe.max_response_tokens + 8,
                        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, num_labels=1)
    short = recipe.model_copy(update={"sft_steps": steps, "rm_steps": steps})
    out = {}
    for kind, model_cls, fields, rows in (("sft", GPTNeoXForCausalLM, ("reference",), data.sft_train),
                                         ("rm", GPTNeoXForSequenceClassification, ("chosen", "rejected"),
                                          data.pref_train)):
        torch.manual_seed(0)
        model = model_cls(cfg)
        # the current code names its helpers encode_rows / sequence_lengths / train_steps; older revisions _encode ...
        encode = getattr(module, "encode_rows", getattr(module, "_encode", None))
        train = getattr(module, "train_steps", getattr(module, "_train", None))
        lengths = getattr(module, "sequence_lengths", getattr(module, "_lengths", None))
        tensors = encode(rows, tokenizer, recipe, fields)
        rng = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        if train is not None:  # the current code
            loss = module.cross_entropy_on_response if kind == "sft" else module.pairwise_reward_loss
            train(model, loss, tensors, lengths(tensors[0], pad, *tensors[2::2]), steps, short.sft_batch,
                  short.sft_lr, rng, kind, pad, short)
        else:  # the code before: fixed-width batches, both responses of a pair with their own prompt copy
            from harness.core.scoring import cross_entropy_on_response

            opt, sched = module._optimizer(model, short.sft_lr, steps)
            for idx in module._batches(len(tensors[0]), short.sft_batch, steps, rng):
                fn = cross_entropy_on_response if kind == "sft" else _two_forward_pair_loss
                loss = fn(model, *(t[idx] for t in tensors), pad)
                loss = loss[0] if isinstance(loss, tuple) else loss
                loss.backward()
                opt.step(), sched.step(), opt.zero_grad()
        out[f"{kind}_step_s"] = (time.perf_counter() - start) / steps
    return out


def compare_steps(args) -> None:
    from harness.tasks import tiny
    from harness.tasks.tldr import load_task

    recipe = recipe_of(args)
    data = load_task("synthetic")
    tokenizer = tiny.train_tokenizer(data, recipe.vocab_size)
    old = _load(args.old)
    rows = []
    for r in range(args.rounds):
        for name, module in (("before", old), ("after", tiny)):
            rows.append({"round": r, "code": name, **_step_seconds(module, recipe, data, tokenizer, args.steps)})
            print(json.dumps(rows[-1]))
    mean = {name: {k: sum(x[k] for x in rows if x["code"] == name) / args.rounds for k in ("sft_step_s", "rm_step_s")}
            for name in ("before", "after")}
    print(json.dumps({"mean": mean, "speedup": {k: mean["before"][k] / mean["after"][k] for k in mean["after"]}}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("build", "steps"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. sft_steps=300")
    parser.add_argument("--out")
    parser.add_argument("--old", help="an older copy of harness/tasks/tiny.py (steps mode)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full_build(args) if args.mode == "build" else compare_steps(args)
