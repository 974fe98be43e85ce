"""The typed structure every optimizer receives: k responses per prompt kept together as [P, K, ...].

Shuffling and minibatching index PROMPTS (the first axis), so a pair or group is never split (PROTOCOL.md).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, TypeVar

import torch
from torch import Tensor

from harness.core.objective import local


RESPONSE_AXIS_FIELDS = ("response", "mask", "logp_old", "logp_ref", "token_reward", "values_old", "logp_mask",
                        "sample_logp", "correction")  # [P, K, Lr]: padded on the right when batches are joined


@dataclass
class Prepared:
    """What an optimizer's `prepare` computes once per iteration for its `loss` (harness/core/contract.py): a subclass
    declares typed fields. Tensor fields are per prompt ([P, ...]) and travel with the batch through shuffling and
    micro-batches (`select`); other fields (a float) hold for the whole batch."""

    def select(self, idx: Tensor) -> "Prepared":
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})


@dataclass
class Advantages(Prepared):
    advantages: Tensor  # [P, K] one per response, or [P, K, Lr] one per token
    length: float | None = None  # L of a "seq_mean_token_sum_norm" loss (harness/core/objective.py `sum_norm_length`)


PreparedT = TypeVar("PreparedT", bound=Prepared)


@dataclass
class Batch:
    """One iteration's data. P prompts, K responses each, Lq query tokens, Lr response tokens.

    For online optimizers the responses were sampled from pi_t (with data "online_with_reference", the last of the
    K is the data set's human reference); for offline ones (DPO) they are the data set's (chosen, rejected) pairs
    and `score`, `kl`, `reward`, `token_reward` are None.
    """

    query: Tensor  # [P, Lq] left-padded prompt ids
    response: Tensor  # [P, K, Lr] padded after the first EOS (the raw samples when logp_mask is set)
    mask: Tensor  # [P, K, Lr] bool, True up to and including the first EOS: the response the RM scores
    logp_old: Tensor | None  # [P, K, Lr] per-token log-probs of pi_t (the policy at the start of the iteration),
    # constants; single-pass updates fill it (and kl, reward, token_reward) from their own forward before `prepare`
    logp_ref: Tensor  # [P, K, Lr] per-token log-probs of pi_ref, constants
    score: Tensor | None = None  # [P, K] reward-model score after the missing-EOS rule
    kl: Tensor | None = None  # [P, K] sequence KL estimate, sum of logp_old - logp_ref
    reward: Tensor | None = None  # [P, K] score - beta * kl
    token_reward: Tensor | None = None  # [P, K, Lr] -beta * (logp_old - logp_ref) per counted token, + score at EOS
    values_old: Tensor | None = None  # [P, K, Lr] critic values at rollout time (algorithms with a critic)
    logp_mask: Tensor | None = None  # [P, K, Lr] where log-probs count, when not `mask` (mask_post_eos=False: all)
    preference: Tensor | None = None  # [P, K, K] P(y_i > y_j) from the preference model (needs_preference)
    sample_logp: Tensor | None = None  # [P, S, Lr] the rollout engine's log-probs of the S sampled responses'
    # tokens, compared with logp_old (the trainer's forward) to measure the engine's drift; not used by losses
    v_star: Tensor | None = None  # [P] the optimal value of each prompt, estimated from pi_ref's samples (A*-PO)
    correction: Tensor | None = None  # [P, K, Lr] rollout-correction weights of the sampled tokens (pi_t / mu,
    # truncated or masked; harness/core/off_policy.py), None: no correction
    token_share: Tensor | None = None  # [P] the counted tokens of the whole batch (every rank) over its prompts: a
    # token-mean denominator that stays exact under micro-batching and data parallelism (harness/core/objective.py)
    sum_over_ranks: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] = local  # sums batch statistics over ranks
    max_new_tokens: int | None = None  # the generation cap the responses were sampled under
    extras: Prepared | None = None  # what the optimizer's `prepare` computed for its loss (read with `prepared`)

    @property
    def num_prompts(self) -> int:
        return self.query.shape[0]

    @property
    def counted_mask(self) -> Tensor:
        """[P, K, Lr] the tokens whose log-probs (and values) count: `mask`, or every token when logp_mask is set."""
        return self.mask if self.logp_mask is None else self.logp_mask

    @property
    def logp_old_sum(self) -> Tensor:
        """[P, K] logp_t(y): pi_t's log-probs summed over each response's counted tokens (zero elsewhere)."""
        return self.logp_old.sum(-1)

    @property
    def logp_ref_sum(self) -> Tensor:
        """[P, K] logp_ref(y), likewise."""
        return self.logp_ref.sum(-1)

    @property
    def samples_per_prompt(self) -> int:
        return self.response.shape[1]

    def select(self, idx: Tensor) -> "Batch":
        """The sub-batch of the prompts `idx` (all K responses of each)."""
        picked = {f.name: getattr(self, f.name)[idx] for f in fields(self)
                  if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **picked, extras=None if self.extras is None else self.extras.select(idx))

    def prepared(self, kind: type[PreparedT]) -> PreparedT:
        """The optimizer's prepared values, checked to be of the type its `loss` reads."""
        if not isinstance(self.extras, kind):
            raise TypeError(f"the batch carries {type(self.extras).__name__}, not {kind.__name__}: was the "
                            f"optimizer's prepare run on it?")
        return self.extras

    @staticmethod
    def concat(batches: list["Batch"], pad_id: int) -> "Batch":
        """Prompts of several batches as one (queries left-padded, responses right-padded to the widest)."""
        first = batches[0]
        if len(batches) == 1:
            return first
        out = {}
        for f in fields(first):
            parts = [getattr(b, f.name) for b in batches]
            if not isinstance(parts[0], Tensor):
                continue
            width = max(p.shape[-1] for p in parts)
            pad = pad_id if f.name in ("query", "response") else 0
            if f.name == "query":  # left-padded prompts
                parts = [torch.nn.functional.pad(p, (width - p.shape[-1], 0), value=pad) for p in parts]
            elif f.name in RESPONSE_AXIS_FIELDS:
                parts = [torch.nn.functional.pad(p, (0, width - p.shape[-1]), value=pad) for p in parts]
            out[f.name] = torch.cat(parts)
        return replace(first, **out)

    def flat(self, name: str) -> Tensor:
        """[P, K, ...] -> [P*K, ...]; for `query`, each prompt repeated K times."""
        if name == "query":
            return self.query.repeat_interleave(self.samples_per_prompt, dim=0)
        x = getattr(self, name)
        return x.reshape(-1, *x.shape[2:])


@dataclass
class PolicyOutput:
    """What the current policy pi_theta says about the batch's responses (with gradients)."""

    logp_tokens: Tensor  # [P, K, Lr] per-token log-probs, zero where masked
    values: Tensor | None = None  # [P, K, Lr] critic values (algorithms with a critic)

    @property
    def logp(self) -> Tensor:
        """[P, K] masked sum over the response: logp(y) in PROTOCOL.md."""
        return self.logp_tokens.sum(-1)

    def select(self, idx: Tensor) -> "PolicyOutput":
        """The prompts `idx` (differentiable indexing, like Batch.select)."""
        return PolicyOutput(self.logp_tokens[idx], None if self.values is None else self.values[idx])

