"""How far apart are REBEL's regression targets under the harness's fp32 log-prob arithmetic and the REBEL authors'
bf16 arithmetic (model.logprob_dtype; issue 29)? On a tiny model, offline.

The policy is first trained for a few REBEL iterations (fp32, the preset's settings) so that pi_t differs from
pi_ref, then one batch is sampled and scored once, and the same responses are scored in three arithmetics:
  fp32       the harness's default: logits upcast, log-softmax and sums in fp32;
  bf16       model.logprob_dtype=bfloat16 on an fp32 forward: the authors' rounding of logits, temperature
             division, log-softmax and summed log-probs, nothing else changed;
  bf16+fwd   the same under bf16 autocast (model.compute_dtype=bfloat16): the forward's matmuls in bf16 too, the
             closest this machine gets to the authors' bf16 model (autocast keeps layer norms and softmax in fp32).
For each it prints the summed log-probs of pi_t, the KL, REBEL's target eta * (r(y) - r(y')) with
r = score - beta * KL, and, after one REBEL update (4 epochs, fp32), the regressor
(log pi_theta(y) - log pi_t(y)) - (log pi_theta(y') - log pi_t(y')); each against fp32.

  HARNESS_CACHE=/work/cache python benchmarks/logprob_arithmetic.py --preset tiny-test --prompts 64
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math

import torch

from algorithms.base import make
from harness.app.config import resolve
from harness.core.experience import Budget
from harness.core.models import load_models
from harness.core.scoring import kl_penalised_reward, sequence_kl, sequence_logprobs
from harness.tasks import load as load_task
from harness.tasks import resolve_paths
from harness.core.train import Trainer

ARITHMETICS = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False), "bf16+fwd": (torch.bfloat16, True)}


def sums(model, batch, temperature: float, dtype, autocast: bool, reference: bool = False, models=None) -> torch.Tensor:
    """[P, K] summed log-probs of the batch's responses under `model` (or the reference) in one arithmetic."""
    P, K = batch.num_prompts, batch.samples_per_prompt
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.no_grad(), ctx, (models.as_reference() if reference else contextlib.nullcontext(model)) as m:
        out = sequence_logprobs(m, batch.query, batch.flat("response"), batch.counted_mask.flatten(0, 1),
                                models.pad_id, temperature, group=K, dtype=dtype)
    return out.sum.reshape(P, K)


def stats(x: torch.Tensor, ref: torch.Tensor) -> dict:
    d = (x.float() - ref.float()).abs()
    return {"mean_abs_diff": d.mean().item(), "max_abs_diff": d.max().item(),
            "share_different": (d > 0).float().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-test")
    parser.add_argument("--train-iterations", type=int, default=6, help="REBEL iterations before the measurement")
    parser.add_argument("--prompts", type=int, default=64, help="prompts of the measured batch (2 responses each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cfg = resolve(args.preset, {"seed": args.seed})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    algo = make("rebel")
    examples = load_task(cfg.task.name, cfg.task.source)[1].sft_train
    trainer = Trainer(cfg, algo, models, examples, Budget())
    for it in range(1, args.train_iterations + 1):
        trainer.iteration(it)
    trainer.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"prompts_per_iteration": args.prompts})})
    batch = trainer.collect(trainer.next_prompts())  # sampled and scored once (fp32); the same responses below
    T, beta, eta = trainer.temperature, cfg.train.kl_coef, algo.eta

    before = {}
    for name, (dtype, autocast) in ARITHMETICS.items():
        logp_t = sums(models.policy, batch, T, dtype, autocast, models=models)
        logp_ref = sums(models.policy, batch, T, dtype, autocast, reference=True, models=models)
        kl = sequence_kl(logp_t, logp_ref)
        reward = kl_penalised_reward(batch.score, kl, beta)
        before[name] = {"logp_t": logp_t, "kl": kl, "target": eta * (reward[:, 0] - reward[:, 1])}

    trained = copy.deepcopy(models.policy)  # one REBEL update (fp32) of a copy: pi_theta
    saved_policy, models.policy = models.policy, trained
    step = Trainer(cfg, algo, models, examples, Budget())
    step.update(copy.deepcopy(batch), 1)
    models.policy = saved_policy
    regressor = {}
    for name, (dtype, autocast) in ARITHMETICS.items():
        ratio = sums(trained, batch, T, dtype, autocast, models=models) - before[name]["logp_t"]
        regressor[name] = ratio[:, 0] - ratio[:, 1]

    fp32 = before["fp32"]
    magnitude = fp32["logp_t"].abs()
    out = {
        "preset": args.preset, "train_iterations": args.train_iterations, "pairs": batch.num_prompts,
        "response_tokens_mean": batch.counted_mask.float().sum(-1).mean().item(),
        "logp_sum_abs_mean": magnitude.mean().item(), "logp_sum_abs_max": magnitude.max().item(),
        "bf16_step_at_mean_logp": 2.0 ** (math.floor(math.log2(magnitude.mean().item())) - 7),
        "kl_mean_fp32": fp32["kl"].mean().item(), "target_std_fp32": fp32["target"].std().item(),
        "target_abs_mean_fp32": fp32["target"].abs().mean().item(),
        "regressor_abs_mean_fp32": regressor["fp32"].abs().mean().item(),
    }
    for name in ("bf16", "bf16+fwd"):
        b = before[name]
        out[name] = {"logp_t_sum": stats(b["logp_t"], fp32["logp_t"]), "kl": stats(b["kl"], fp32["kl"]),
                     "target": stats(b["target"], fp32["target"]),
                     "target_sign_flips": (torch.sign(b["target"]) != torch.sign(fp32["target"])).float().mean().item(),
                     "regressor": stats(regressor[name], regressor["fp32"])}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
