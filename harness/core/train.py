"""The training loop: rollout -> score -> the optimizer's loss over epochs x minibatches -> step -> log.

It never names an optimizer: what differs between them is declared on the Algorithm (algorithms/base.py).
With several data-parallel processes (harness/core/distributed.py) each rank runs this loop on its shard of every
iteration's prompts; gradients are averaged over ranks before each step and the logged line is reduced over ranks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

import torch

from harness.core import off_policy
from harness.core.batch import Batch, PolicyOutput
from harness.core.contract import ONLINE_WITH_REFERENCE, PREFERENCE_PAIRS, Algorithm
from harness.core.distributed import Runtime, derived_seed
from harness.core.errors import UserError
from harness.core.experience import (Budget, Timer, adopt_policy_forward, collect_online, collect_pairs, gold_rewards,
                                policy_output, reference_values)
from harness.core.models import Models
from harness.core.objective import kl_loss, token_share
from harness.core.rollout import logprob_drift, make_engine
from harness.core.examples import Example, Gold, TaskData, TaskReward
from harness.core.scoring import ScoreRule, has_eos
from harness.core.settings import RunSettings


class TrainingDiverged(UserError):
    """NaN or inf in a loss or reward: the run stops; what was written so far stays."""


def anneal_lr(total: int, step: int) -> float:
    """The learning-rate multiplier after `step` of `total` decay steps, linear to 0: the authors' online scripts'
    anneal_lr, lr * (1 - step / total), written out as they write it."""
    return 1 - min(1.0, step / total)


def lr_scheduler(optimizer, schedule: str, total: int):
    """Linear decay to 0 (anneal_lr) or cosine to 0 without warm-up: transformers' cosine schedule, which the N+
    SFT, reward and offline pairwise scripts take through get_scheduler("cosine")."""
    if schedule == "cosine":
        from transformers import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(anneal_lr, total))


def training_examples(algo: Algorithm, data: TaskData) -> list[Example]:
    """What an optimizer trains on: the preference pairs (offline) or the SFT split's prompts (online)."""
    return data.pref_train if algo.data == PREFERENCE_PAIRS else data.sft_train


def data_order(n: int, seed: int, epoch: int = 0) -> list[int]:
    """The seeded order in which a run visits its n training examples in pass `epoch` (the same on every rank)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, f"data-order/{epoch}"))).tolist()


@dataclass
class Trainer:
    cfg: RunSettings
    algo: Algorithm
    models: Models
    train_examples: list[Example]
    budget: Budget
    runtime: Runtime = field(default_factory=Runtime.single)
    gold: Gold | None = None  # the task's gold reward (the stand-in's): the preference model, a logged statistic
    reward: TaskReward | None = None  # a verifiable task's checker: scores responses in place of the reward model

    def __post_init__(self):
        t, rank = self.cfg.train, self.runtime.rank
        self.optimizer = torch.optim.AdamW(self.models.trainable_parameters(), lr=t.lr, eps=t.adam_eps,
                                           betas=tuple(t.adam_betas), weight_decay=t.weight_decay)
        # Linear decay, no warm-up (PROTOCOL.md). per_iteration: iteration k runs at lr * (1 - (k - 1) / N) over all
        # its epochs and minibatches, as the authors' and N+ scripts' anneal_lr; per_step: decay after every step.
        self.per_step_decay = t.lr_decay == "per_step"
        total = max(1, t.iterations * (self.algo.epochs * self.algo.minibatches if self.per_step_decay else 1))
        self.scheduler = lr_scheduler(self.optimizer, t.lr_schedule, total)
        self.runtime.shard(list(range(t.prompts_per_iteration)), "train.prompts_per_iteration")  # fail early
        # Three random streams, each its own generator, so that none depends on how much another consumed:
        # minibatch permutations and sampling differ per rank, the data order is shared by all ranks.
        self.generator = torch.Generator().manual_seed(derived_seed(self.cfg.seed, "minibatches", rank))
        self.sampler = torch.Generator(self.models.device).manual_seed(derived_seed(self.cfg.seed, "sampling", rank))
        self.data_pass, self.cursor = 0, 0
        self.order = data_order(len(self.train_examples), self.cfg.seed)
        self.temperature = self.algo.logprob_temperature or self.cfg.generation.temperature
        # The objective matrix (harness/core/contract.py): beta goes into the reward or into the loss, never both.
        beta = self.algo.resolved_kl_coef(t.kl_coef)
        self.reward_kl_coef = beta if self.algo.kl_placement == "reward" else 0.0
        self.loss_kl_coef = beta if self.algo.kl_placement == "loss" and self.algo.kl_placements else 0.0
        if self.algo.dynamic_sampling:
            self.budget.groups_dropped = self.budget.groups_dropped or 0
        self.shared_prefix = self.runtime.fsdp is None  # see experience.policy_output
        g = self.cfg.generation
        off_policy.check(t, self.algo.data == PREFERENCE_PAIRS, self.runtime.fsdp is not None)
        self.engine = None if self.algo.data == PREFERENCE_PAIRS else make_engine(
            g.engine, self.models.origin.get("policy", ""), self.models.precision.compute_name,
            derived_seed(self.cfg.seed, "engine", rank), self.cfg.task.max_prompt_tokens + g.max_new_tokens,
            g.vllm_gpu_memory_utilization)
        self.values: dict[str, float] = {}  # A*-PO's V* of each prompt seen, estimated once (by its text)
        self.value_sampler = torch.Generator(self.models.device).manual_seed(derived_seed(self.cfg.seed, "values", rank))
        self.lag = off_policy.PolicyLag(t.staleness, self.models.policy)
        if t.staleness:  # the sampler runs k updates behind (harness/core/off_policy.py)
            self.engine = off_policy.LaggedEngine(self.engine, self.lag)

    def next_prompts(self) -> list[Example]:
        """This rank's shard of the next P prompts of a seeded permutation of the training split (a new
        permutation per pass over it)."""
        P = self.cfg.train.prompts_per_iteration
        if self.cursor + P > len(self.order):
            self.data_pass += 1
            self.order, self.cursor = data_order(len(self.train_examples), self.cfg.seed, self.data_pass), 0
        picked = [self.train_examples[i] for i in self.order[self.cursor : self.cursor + P]]
        self.cursor += P
        return self.runtime.shard(picked)

    @property
    def single_pass(self) -> bool:
        """One forward and one optimizer step per batch: pi_t is pi_theta at that forward, so pi_t's log-probs come
        from it (adopt_policy_forward) instead of a separate scoring forward of the policy."""
        micro = self.cfg.train.micro_batch_prompts
        return (self.algo.epochs == 1 and self.algo.minibatches == 1
                and (micro is None or micro * self.runtime.world_size >= self.cfg.train.prompts_per_iteration))

    def collect(self, examples: list[Example]) -> Batch:
        """This iteration's scored batch; with dynamic sampling, without the groups whose K scores are all equal,
        refilled from newly sampled prompts for at most `algo.dynamic_sampling` more rounds (DAPO). Every sampled
        response stays counted in the budget; the dropped groups are counted too."""
        batch = self.collect_once(examples)
        if not self.algo.dynamic_sampling or batch.score is None:
            return batch
        wanted, kept = batch.num_prompts, []
        for round_ in range(self.algo.dynamic_sampling + 1):
            if round_:
                batch = self.collect_once(self.next_prompts())
            informative = (batch.score.max(1).values > batch.score.min(1).values).nonzero().flatten()
            self.budget.groups_dropped += batch.num_prompts - len(informative)
            kept.append(batch.select(informative))
            have = sum(b.num_prompts for b in kept)
            if not self.runtime.sum({"short": float(have < wanted)})["short"]:  # every rank refills together
                break
        if have == 0:  # nothing informative after every round: the last batch as it is (zero advantages)
            return batch
        joined = Batch.concat([b for b in kept if b.num_prompts], self.models.pad_id)
        return joined.select(torch.arange(min(wanted, joined.num_prompts)))

    def collect_once(self, examples: list[Example]) -> Batch:
        """A scored batch of these prompts: sampled by pi_t (online) or the task's pairs (offline)."""
        g, t = self.cfg.generation, self.cfg.train
        local_prompts = t.prompts_per_iteration // self.runtime.world_size
        chunk = 4 * min(t.micro_batch_prompts or local_prompts, local_prompts) * self.algo.samples_per_prompt
        self.models.policy.eval()
        try:
            with self.runtime.gathered(self.models.policy, self.models.critic):
                if self.algo.data == PREFERENCE_PAIRS:
                    return collect_pairs(self.models, examples, self.cfg.task.max_prompt_tokens, g.max_new_tokens,
                                         self.temperature, chunk, self.budget, with_policy=not self.single_pass)
                self.engine.sync(self.models.policy)
                batch = collect_online(self.models, examples, self.algo.samples_per_prompt,
                                      self.cfg.task.max_prompt_tokens, g.max_new_tokens, g.temperature, self.reward_kl_coef,
                                      chunk, self.budget, self.sampler,
                                      append_reference=self.algo.data == ONLINE_WITH_REFERENCE,
                                      count_post_eos=not self.algo.mask_post_eos,
                                      preferences=self.algo.needs_preference, with_policy=not self.single_pass,
                                      engine=self.engine, rule=score_rule(self.cfg),
                                      logprob_temperature=self.temperature, gold=self.gold, reward=self.reward,
                                      kl_estimator=self.algo.kl_estimator)
                batch.v_star = self.optimal_values(examples, chunk)
                return batch
        finally:
            self.models.policy.train()

    def optimal_values(self, examples: list[Example], chunk: int) -> torch.Tensor | None:
        """[P] V* of these prompts when the optimizer asks for it: estimated once per prompt (its first draw) from
        pi_ref's samples, cached and checkpointed with the trainer."""
        asked = self.algo.optimal_value_samples()
        if asked is None:
            return None
        n, beta = asked
        first = {}  # prompt text -> its first example, for the prompts without an estimate yet
        for ex in examples:
            if ex.prompt not in self.values:
                first.setdefault(ex.prompt, ex)
        if first:
            new, todo = list(first), list(first.values())
            g = self.cfg.generation
            with Timer(self.budget, "value_estimate"):
                values = reference_values(self.models, todo, n, beta, self.cfg.task.max_prompt_tokens, g.max_new_tokens,
                                          g.temperature, chunk, self.budget, self.value_sampler, score_rule(self.cfg),
                                          self.reward)
            self.values.update(zip(new, values))
        return torch.tensor([self.values[ex.prompt] for ex in examples], device=self.models.device)

    def update(self, batch: Batch, iteration: int) -> dict[str, float]:
        """The optimizer's `prepare`, then E epochs x M minibatches over the batch's prompts, gradient accumulation
        over micro-batches. A single-pass update first adopts its own forward as pi_t's log-probs."""
        first = None
        if self.single_pass:
            with self.models.autocast():  # bf16 compute when the run has it; the weights stay float32
                first = policy_output(self.models, batch, self.temperature, self.shared_prefix)
            adopt_policy_forward(batch, first, self.reward_kl_coef, self.algo.kl_estimator)
        if batch.reward is not None and not torch.isfinite(batch.reward).all():
            raise TrainingDiverged(f"non-finite rewards at iteration {iteration}: check the reward model's outputs")
        drift = {}
        if batch.sample_logp is not None:
            S = batch.sample_logp.shape[1]
            drift = logprob_drift(batch.sample_logp, batch.logp_old[:, :S], batch.counted_mask[:, :S])
            t = self.cfg.train
            if t.rollout_correction != "none":
                weight, correction_stats = off_policy.correction_weights(
                    batch.sample_logp, batch.logp_old[:, :S], batch.counted_mask[:, :S], t.rollout_correction,
                    t.correction_min, t.correction_max)
                # the appended reference (data "online_with_reference") was not sampled: weight 1
                batch.correction = torch.cat([weight, batch.counted_mask[:, S:].to(weight.dtype)], 1)
                drift.update(correction_stats)
        batch.sum_over_ranks = self.runtime.sum_tensors
        batch.token_share = token_share(batch.counted_mask, batch.sum_over_ranks)
        batch.extras = self.algo.prepare(batch)
        stats: dict[str, list[float]] = {}
        micro = self.cfg.train.micro_batch_prompts or batch.num_prompts
        for epoch in range(self.algo.epochs):
            perm = torch.randperm(batch.num_prompts, generator=self.generator)
            for mb in perm.chunk(self.algo.minibatches):
                self.optimizer.zero_grad(set_to_none=True)
                for part in mb.split(micro):
                    sub = batch.select(part)
                    with self.models.autocast():
                        new = (first.select(part) if first is not None
                               else policy_output(self.models, sub, self.temperature, self.shared_prefix))
                        loss, loss_stats = self.objective(sub, new)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"the {self.algo.name} loss became {loss.item()} at iteration {iteration}, epoch {epoch}; "
                            f"lower train.lr (now {self.cfg.train.lr}) or check the reward model")
                    (loss * len(part) / len(mb)).backward()
                    for k, v in {"loss": loss.item(), **loss_stats}.items():
                        stats.setdefault(k, []).append(v)
                self.runtime.average_gradients(self.models.trainable_parameters())
                if self.cfg.train.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.models.trainable_parameters(), self.cfg.train.max_grad_norm)
                self.optimizer.step()
                if self.per_step_decay:
                    self.scheduler.step()
                self.budget.optimizer_steps += 1
        if not self.per_step_decay:
            self.scheduler.step()
        return {**{k: sum(v) / len(v) for k, v in stats.items()}, **drift}

    def objective(self, batch: Batch, new: PolicyOutput) -> tuple[torch.Tensor, dict[str, float]]:
        return objective_loss(self.algo, batch, new, self.loss_kl_coef)

    def iteration(self, iteration: int) -> dict:
        """One iteration; returns its metrics line (cumulative budget + this iteration's statistics), reduced over
        ranks: counters summed, statistics averaged."""
        start = time.perf_counter()
        self.budget.timings = {}
        examples = self.next_prompts()
        self.lag.record()  # once per iteration: dynamic sampling's refills sample from the same lagged policy
        with self.models.autocast():
            batch = self.collect(examples)
        if hasattr(self.engine, "release"):  # a colocated vLLM frees its GPU memory for the update (sleep mode)
            self.engine.release()
        with Timer(self.budget, "update"):
            stats = self.update(batch, iteration)
        self.budget.wall_time_s += time.perf_counter() - start
        stats = {**stats, **rollout_stats(batch, examples, self.models, self.gold, self.reward),
                 **{f"time/{k}_s": round(v, 4) for k, v in self.budget.timings.items()}}
        return {"iteration": iteration, **self.counters(), **self.runtime.mean(stats),
                "lr": self.scheduler.get_last_lr()[0]}

    def counters(self) -> dict:
        """The run's budget so far, over all ranks (wall time: this rank's)."""
        local = self.budget.counters()
        summed = self.runtime.sum({k: local[k] for k in ("prompts", "responses", "rm_queries")})
        return {**local, **{k: int(v) for k, v in summed.items()}}

    def trainable_modules(self) -> torch.nn.Module:
        """The models the optimizer updates, under stable names (what sharded optimizer state is keyed by)."""
        return torch.nn.ModuleDict({k: m for k, m in (("policy", self.models.policy), ("critic", self.models.critic))
                                    if m is not None})

    def state_dict(self) -> dict:
        """Everything but the weights that a resumed run needs to continue exactly (this rank's part)."""
        return {"optimizer": self.runtime.optimizer_state(self.trainable_modules(), self.optimizer),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(), "sampler": self.sampler.get_state(),
                "data_pass": self.data_pass, "cursor": self.cursor, "algorithm": self.algo.state_dict(),
                "budget": self.budget.counters(), **({"lag": self.lag.state_dict()} if self.lag.k else {}),
                **({"values": dict(self.values), "value_sampler": self.value_sampler.get_state()} if self.values
                   else {})}

    def load_state_dict(self, state: dict) -> None:
        self.runtime.load_optimizer_state(self.trainable_modules(), self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.sampler.set_state(state["sampler"])
        self.data_pass, self.cursor = state["data_pass"], state["cursor"]
        self.order = data_order(len(self.train_examples), self.cfg.seed, self.data_pass)
        self.algo.load_state_dict(state["algorithm"])
        if self.lag.k:
            self.lag.load_state_dict(state.get("lag", []))
        if "values" in state:
            self.values = dict(state["values"])
            self.value_sampler.set_state(state["value_sampler"])
        for k, v in state["budget"].items():
            setattr(self.budget, k, v)


def objective_loss(algo: Algorithm, batch: Batch, new: PolicyOutput,
                   loss_kl_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The optimizer's loss, plus beta * KL of pi_theta (aggregated like its loss) when the KL is in the loss. A
    rollout correction reweights the optimizer's loss, not the KL term (as TRL's and verl's)."""
    loss, stats = algo.loss(batch, new if batch.correction is None else off_policy.corrected(new, batch.correction))
    if loss_kl_coef:
        term, kl_mean = kl_loss(new.logp_tokens, batch.logp_old, batch.logp_ref, batch.counted_mask, loss_kl_coef,
                                algo.kl_estimator, algo.loss_aggregation, batch.token_share, algo.length_normaliser,
                                algo.kl_ratio_correction)
        loss = loss + term
        stats = {**stats, "objective/kl_loss": term.item(), "objective/kl_per_token": kl_mean}
    return loss, stats


def score_rule(cfg: RunSettings, missing_eos: bool = True) -> ScoreRule:
    """The run's reward-model score rule; missing_eos False: no missing-EOS replacement (an evaluation that reports
    raw scores, as the authors' does)."""
    missing = cfg.train.missing_eos_score if missing_eos else None
    return ScoreRule(scale=cfg.train.reward_scale, missing_eos_score=missing,
                     missing_eos_test=cfg.train.missing_eos_test, max_new_tokens=cfg.generation.max_new_tokens)


def rollout_stats(batch: Batch, examples: list[Example], models: Models, gold: Gold | None = None,
                  reward: TaskReward | None = None) -> dict[str, float]:
    """The shared training statistics every optimizer logs (docs/run_format.md); with a task's gold reward, how it
    moves during training; with a task's checker (exact 0/1 scores), `tie_frac`: the share of prompts whose K
    responses all scored the same, which give a pairwise or group optimizer no signal."""
    out = {"response_length": batch.mask.sum(-1).float().mean().item()}
    if batch.score is None:
        return out
    out.update(score=batch.score.mean().item(), kl=batch.kl.mean().item(), reward=batch.reward.mean().item(),
               eos_rate=has_eos(batch.response, batch.mask, models.eos_id).float().mean().item())
    if reward is not None and batch.score.shape[1] > 1:
        out["tie_frac"] = (batch.score.max(1).values == batch.score.min(1).values).float().mean().item()
    if gold is not None:
        out["gold"] = gold_rewards(gold, batch.flat("response"), batch.flat("mask"), examples, models.tokenizer,
                                   models.eos_id).mean().item()
    return out

