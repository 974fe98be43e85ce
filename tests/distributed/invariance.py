"""Every registered optimizer's gradient on fixed rollouts, from one process holding the whole batch and from each
rank of a launch holding its shard, each with and without micro-batches (tests/test_invariance.py compares them).

The update is harness/core/train.py's arithmetic for one minibatch (`Trainer.update`): the batch's `sum_over_ranks` and
`token_share`, the optimizer's `prepare`, then per micro-batch `objective_loss(...) * prompts / shard prompts`
backward, and the gradients averaged over ranks (`Runtime.average_gradients`). The model is a tiny random one:
per-token log-probs logsigmoid(phi . w) and values phi . v of fixed features phi, so every prompt's gradient lands
on the same few weights, as in a real model. Each rank pads its shard to its own longest response, as
harness/core/experience.py does: the first half of the prompts has shorter responses than the second.
Usage, under accelerate launch (each rank writes OUT_DIR/invariance-RANK.json):
    python -m tests.distributed.invariance OUT_DIR
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from algorithms.base import make, names
from harness.core.batch import RESPONSE_AXIS_FIELDS, Batch, PolicyOutput
from harness.core.contract import ONLINE_WITH_REFERENCE, Algorithm
from harness.core.distributed import Runtime
from harness.core.objective import local, max_over_ranks, sum_norm_length, token_share
from harness.core.scoring import token_rewards
from harness.core.train import objective_loss

PROMPTS, WIDTH, FEATURES, BETA = 8, 7, 6, 0.05
MICRO = (None, 1, 3)  # prompts per micro-batch: None, the whole shard at once; 3, uneven parts (3 + 1)
# every registered optimizer at its defaults, and settings whose statistics or normalisers are batch-wide
VARIANTS = {**{name: (name, {}) for name in names()},
            "ppo mask_post_eos=false": ("ppo", {"mask_post_eos": False}),
            "grpo scale_rewards=batch token_mean":
                ("grpo", {"scale_rewards": "batch", "loss_aggregation": "token_mean"}),
            "reinforce_pp seq_mean_token_sum_norm": ("reinforce_pp", {"loss_aggregation": "seq_mean_token_sum_norm"})}
# the REBEL authors' per-process whitening (and REINFORCE's per-process baseline): meant to depend on the ranks
PER_PROCESS = {"ppo batch_statistics=per_process": ("ppo", {"batch_statistics": "per_process"}),
               "ppo mask_post_eos=false batch_statistics=per_process":
                   ("ppo", {"mask_post_eos": False, "batch_statistics": "per_process"}),
               "reinforce batch_statistics=per_process": ("reinforce", {"batch_statistics": "per_process"})}


@dataclasses.dataclass
class Rollouts:
    batch: Batch  # the whole batch: prompt p's query[p, 0] is p, which picks its features
    features: Tensor  # [P, K, WIDTH, FEATURES]
    policy: Tensor  # [FEATURES] the weights at pi_t
    critic: Tensor  # [FEATURES]


def rollouts(algo: Algorithm) -> Rollouts:
    """Fixed responses, log-probs, scores (with ties: equal pairs and groups), rewards and values for `algo`."""
    g = torch.Generator().manual_seed(0)
    K = algo.samples_per_prompt + (algo.data == ONLINE_WITH_REFERENCE)

    def draw(x: Tensor) -> Tensor:  # the first and the last prompt sample one response K times: ties on each rank
        x[[0, PROMPTS - 1], 1:] = x[[0, PROMPTS - 1], :1]
        return x

    lengths = torch.randint(1, WIDTH - 1, (PROMPTS, K), generator=g)
    lengths[PROMPTS // 2 :, 0] = WIDTH  # the second half's shard is wider
    lengths = draw(lengths)
    mask = torch.arange(WIDTH) < lengths[..., None]
    counted = mask if algo.mask_post_eos else torch.ones_like(mask)
    features = draw(torch.randn(PROMPTS, K, WIDTH, FEATURES, generator=g))
    policy, critic = 0.5 * torch.randn(FEATURES, generator=g), 0.5 * torch.randn(FEATURES, generator=g)
    logp = F.logsigmoid(features @ policy)
    moved = draw(torch.randint(0, 2, (PROMPTS, K, 1), generator=g))  # half the responses: pi_t != pi_theta, ratios clip
    logp_old = (logp + 0.3 * moved * draw(torch.randn(PROMPTS, K, WIDTH, generator=g))) * counted
    logp_ref = (logp + 0.3 * draw(torch.randn(PROMPTS, K, WIDTH, generator=g))) * counted
    score = draw(torch.randint(0, 3, (PROMPTS, K), generator=g) / 2)
    beta = BETA if algo.kl_placement == "reward" and algo.kl_placements else 0.0
    token_reward = token_rewards(score.reshape(-1), logp_old.reshape(-1, WIDTH), logp_ref.reshape(-1, WIDTH),
                                 mask.reshape(-1, WIDTH), beta).reshape(PROMPTS, K, WIDTH) * counted
    kl = (logp_old - logp_ref).sum(-1)
    values = (features @ (critic + 0.3 * torch.randn(FEATURES, generator=g))) * counted
    batch = Batch(query=torch.stack([torch.arange(PROMPTS), torch.zeros(PROMPTS, dtype=torch.long)], 1),
                  response=torch.zeros(PROMPTS, K, WIDTH, dtype=torch.long), mask=mask, logp_old=logp_old,
                  logp_ref=logp_ref, score=score, kl=kl, reward=score - beta * kl, token_reward=token_reward,
                  values_old=values if algo.needs_critic else None,
                  logp_mask=None if algo.mask_post_eos else counted,
                  preference=torch.rand(PROMPTS, K, K, generator=g) if algo.needs_preference else None,
                  v_star=torch.rand(PROMPTS, generator=g) if algo.optimal_value_samples() else None,
                  max_new_tokens=WIDTH)
    return Rollouts(batch, features, policy, critic)


def padded_to_own_width(batch: Batch) -> Batch:
    """The columns up to the last counted token of any of its responses (harness/core/experience.py `_used_width`)."""
    width = int(batch.counted_mask.flatten(0, -2).any(0).nonzero().max()) + 1
    return dataclasses.replace(batch, **{f: getattr(batch, f)[..., :width] for f in RESPONSE_AXIS_FIELDS
                                         if getattr(batch, f) is not None})


def forward(data: Rollouts, batch: Batch, policy: Tensor, critic: Tensor, needs_critic: bool) -> PolicyOutput:
    features = data.features[batch.query[:, 0]][:, :, : batch.response.shape[-1]]
    counted = batch.counted_mask
    return PolicyOutput(F.logsigmoid(features @ policy) * counted,
                        (features @ critic) * counted if needs_critic else None)


def gradient(variant: tuple[str, dict], data: Rollouts, batch: Batch, sum_over_ranks, micro: int | None,
             runtime: Runtime | None = None) -> Tensor:
    """The policy's and critic's gradient of one update on `batch`, as harness/core/train.py computes it."""
    algo = make(*variant)
    policy, critic = data.policy.clone().requires_grad_(), data.critic.clone().requires_grad_()
    batch = dataclasses.replace(batch)
    batch.sum_over_ranks = sum_over_ranks
    batch.token_share = token_share(batch.counted_mask, sum_over_ranks)
    batch.extras = algo.prepare(batch)
    loss_kl_coef = algo.resolved_kl_coef(BETA) if algo.kl_placement == "loss" and algo.kl_placements else 0.0
    n = batch.num_prompts
    for part in torch.arange(n).split(micro or n):
        sub = batch.select(part)
        loss, _ = objective_loss(algo, sub, forward(data, sub, policy, critic, algo.needs_critic), loss_kl_coef)
        (loss * len(part) / n).backward()
    if runtime is not None:
        runtime.average_gradients([policy, critic])
    return torch.cat([torch.zeros_like(p) if p.grad is None else p.grad for p in (policy, critic)])


def compare(variant: tuple[str, dict], runtime: Runtime) -> dict:
    data = rollouts(make(*variant))
    whole = padded_to_own_width(data.batch)
    shard = padded_to_own_width(data.batch.select(torch.tensor(runtime.shard(list(range(PROMPTS))))))
    reference = gradient(variant, data, whole, local, None)
    row = {"scale": reference.abs().max().item(), "width": shard.response.shape[-1]}
    for micro in MICRO:
        if micro:
            row[f"1 process, micro-batches of {micro}"] = (gradient(variant, data, whole, local, micro)
                                                           - reference).abs().max().item()
        two = gradient(variant, data, shard, runtime.sum_tensors, micro, runtime)
        row[f"{runtime.world_size} processes, micro-batches of {micro or 'the shard'}"] = \
            (two - reference).abs().max().item()
    return row


def main(out: Path) -> None:
    runtime = Runtime.from_environment()
    rank = runtime.rank
    checks = {"max_over_ranks": max_over_ranks(torch.tensor(3.0 + rank), runtime.sum_tensors).item(),
              "max_over_ranks local": max_over_ranks(torch.tensor(3.0 + rank)).item(),
              "sum_norm_length": sum_norm_length("seq_mean_token_sum_norm", None, 5 + rank, runtime.sum_tensors),
              "sum_norm_length set": sum_norm_length("seq_mean_token_sum_norm", 9.0, 5 + rank, runtime.sum_tensors),
              "world_size": runtime.world_size}
    rows = {label: compare(variant, runtime) for label, variant in VARIANTS.items()}
    per_process = {label: compare(variant, runtime) for label, variant in PER_PROCESS.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"invariance-{rank}.json").write_text(json.dumps({"checks": checks, "invariant": rows,
                                                             "per_process": per_process}, indent=1))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
