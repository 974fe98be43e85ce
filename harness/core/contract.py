"""The optimizer contract: what the training loop (harness/core/train.py) runs, and all it knows of an optimizer.

An optimizer declares what it needs from the backbone and computes only what is unique to it:
  - `samples_per_prompt`, `epochs`, `minibatches`: how the backbone samples and iterates;
  - `data`: "online" (K samples from pi_t), "online_with_reference" (K samples from pi_t, then the data set's
    human reference as response K+1, scored like a sample) or "preference_pairs" (the task's offline
    (chosen, rejected) pairs, nothing sampled);
  - `needs_critic`: the backbone loads a critic (from the reward model) and passes its values;
  - `needs_preference`: the backbone fills `batch.preference[p, i, j] = P(y_i > y_j)` from its preference model;
  - `mask_post_eos`: True counts log-probs (and values) up to the first EOS; False counts every generated token
    (the sampled tokens after EOS too, as in the REBEL authors' PPO); `batch.counted_mask` says which;
  - `logprob_temperature`: None means the sampling temperature (online), 1.0 for offline losses such as DPO;
  - `optimal_value_samples()`: (N, beta) to have the backbone estimate V*(x) = beta log mean exp(r / beta) of
    each training prompt once, from N responses of pi_ref (`batch.v_star`, A*-PO), or None;
  - `prepare(batch)`: once per iteration, before the epochs (advantages, baselines, labels), returns a typed
    `harness.core.batch.Prepared` (per-prompt tensors travel with the batch through shuffling as `batch.extras`; the
    loss reads them with `batch.prepared(ItsType)`), or None;
  - `loss(batch, new)`: the optimizer's math on a minibatch; returns (scalar loss, detached float stats);
  - state kept across iterations (a moving baseline) lives in plain attributes set in `__post_init__`: checkpoints
    save and restore them (`state_dict`), so nothing else is needed for exact resume.
The objective matrix (settings every online optimizer has, applied by the backbone, docs/objective.md):
  - `kl_placement`: "reward" (r = score - beta * KL, the REBEL/PPO/RLOO protocol) or "loss" (beta * KL of pi_theta
    added to the optimizer's loss, aggregated by its `loss_aggregation`: the GRPO protocol); `kl_estimator` k1/k2/k3
    (harness/core/objective.py); `kl_coef` beta (None: train.kl_coef); `kl_ratio_correction` (loss placement: the KL
    term times the token ratio pi_theta / pi_t); `kl_placements` lists what an optimizer accepts (offline DPO: none);
  - `dynamic_sampling`: groups whose K scores are all equal are dropped and replaced by newly sampled prompts
    (DAPO), every sampled response counted in the budget.
Generation, log-probs, rewards, KL, masks and budgets are the backbone's; an optimizer never computes them
(tests/algorithms/test_contract.py enforces it). The registry of named optimizers is algorithms/base.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from harness.core.batch import Batch, PolicyOutput, Prepared

DataKind = Literal["online", "online_with_reference", "preference_pairs"]
ONLINE, ONLINE_WITH_REFERENCE, PREFERENCE_PAIRS = "online", "online_with_reference", "preference_pairs"
OBJECTIVE_SETTINGS = ("kl_placement", "kl_estimator", "kl_coef", "kl_ratio_correction")
RECORDED_WHEN_SET = {"recorded_when_set": True}  # field metadata: a setting added after runs were recorded, left
# out of `hyperparameters()` while it holds its default, so those runs keep pooling with later ones


@dataclass
class Algorithm:
    samples_per_prompt: int = 1
    """responses sampled per prompt (pairs and groups are kept together)"""
    epochs: int = 1
    """passes over each iteration's batch, each with a fresh permutation of prompts"""
    minibatches: int = 1
    """optimizer steps per epoch"""

    kl_placement: str = "reward"
    """where the KL to the reference goes: "reward" (r = score - beta * KL) or "loss" (+ beta * KL in the loss)"""
    kl_estimator: str = "k1"
    """k1 (log-ratio), k2 (half its square) or k3 ((r - 1) - log r), per token (harness/core/objective.py)"""
    kl_coef: float | None = None
    """beta (None: train.kl_coef)"""
    kl_ratio_correction: bool = False
    """loss placement: the KL term times the token ratio pi_theta / pi_t (DeepSeek-V3.2; TRL's bias correction)"""

    name: ClassVar[str] = ""
    kl_placements: ClassVar[tuple[str, ...]] = ("reward", "loss")
    loss_aggregation: ClassVar[str] = "seq_mean_token_sum"
    """how a per-token KL term in the loss is reduced (harness/core/objective.py); token-level optimizers make it a setting"""
    length_normaliser: ClassVar[float | None] = None
    dynamic_sampling: ClassVar[bool] = False
    data: ClassVar[DataKind] = ONLINE
    needs_critic: ClassVar[bool] = False
    needs_preference: ClassVar[bool] = False
    mask_post_eos: ClassVar[bool] = True
    logprob_temperature: ClassVar[float | None] = None

    def optimal_value_samples(self) -> tuple[int, float] | None:
        return None

    def prepare(self, batch: Batch) -> Prepared | None:
        return None

    def loss(self, batch: Batch, new: PolicyOutput) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The settings, without the objective-matrix ones that are at the protocol's defaults (so runs from before
        the matrix existed pool with later ones), nor those marked RECORDED_WHEN_SET at their defaults;
        `objective()` has the objective settings resolved."""
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(Algorithm):
            if f.name in OBJECTIVE_SETTINGS and (not self.kl_placements or out[f.name] == f.default):
                del out[f.name]
        for f in dataclasses.fields(self):
            if f.metadata.get("recorded_when_set") and out[f.name] == f.default:
                del out[f.name]
        return out

    def objective(self, train_kl_coef: float) -> dict:
        """The objective matrix as this run applies it (summary.json `objective`)."""
        if not self.kl_placements:
            return {"kl_placement": "none", "loss_aggregation": self.loss_aggregation}
        return {"kl_placement": self.kl_placement, "kl_estimator": self.kl_estimator,
                "kl_coef": self.resolved_kl_coef(train_kl_coef),
                "kl_ratio_correction": self.kl_ratio_correction, "loss_aggregation": self.loss_aggregation,
                "length_normaliser": self.length_normaliser, "dynamic_sampling": self.dynamic_sampling}

    def resolved_kl_coef(self, train_kl_coef: float) -> float:
        return train_kl_coef if self.kl_coef is None else self.kl_coef

    def state_dict(self) -> dict:
        """State an optimizer keeps across iterations (plain attributes that are not settings, such as a moving
        baseline): saved in checkpoints so that a resumed run continues exactly."""
        settings = {f.name for f in dataclasses.fields(self)}
        return {k: v for k, v in vars(self).items() if k not in settings}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)
