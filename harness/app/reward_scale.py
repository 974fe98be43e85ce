"""The reward scale of a run, said and checked in the dry run (issue 29).

`train.reward_scale` multiplies the reward model's scores before the missing-EOS replacement and the KL penalty
(r = scale * score - kl_coef * KL). A scale belongs to the reward model it was chosen for: the REBEL authors divide
openbmb/Eurus-RM-7b's scores by 1000 (src/ultrafeedback/rebel.py, `reward_reg`), while the paper uses
FsfairX-LLaMA3-RM-v0.1's scores without normalisation. Mixed (FsfairX with 1/1000), the reward differences between
two responses shrink to about 1e-3, below the KL term and far below the missing-EOS score, and a run would learn
almost nothing from the reward without failing.

The dry run says which scale a run uses and why (`KNOWN_SCALES`), and, where the reward model and the task's data
are on this machine, measures it: the reward model scores the chosen and rejected responses of a handful of the
task's own preference pairs, and the scaled differences are compared with the other terms of the reward
(`ScaleCheck`). The thresholds are judgment calls, stated with their reasons at `KL_FLOOR` and `PENALTY_FLOOR`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from harness.app.config import RunConfig
from harness.core.scoring import ScoreRule, reward_scores

# reward model -> (the scale its source used, where that comes from)
KNOWN_SCALES: dict[str, tuple[float, str]] = {
    "sfairXC/FsfairX-LLaMA3-RM-v0.1": (1.0, "the REBEL paper (App. I.2.2) uses FsfairX's scores without any "
                                       "normalisation; the authors' README names it for Llama-3 on UltraFeedback"),
    "openbmb/Eurus-RM-7b": (1e-3, "the REBEL authors' src/ultrafeedback/rebel.py divides Eurus-RM-7b's scores by "
                            "reward_reg = 1000"),
    "berkeley-nest/Starling-RM-7B-alpha": (1.0, "the REBEL authors' src/nectar/rebel.py uses Starling's scores "
                                           "unscaled"),
}

HANDFUL = 8  # preference pairs scored by the dry run's measurement
# "Far below": the median scaled difference between two responses to one prompt, against
# - the KL term's unit, kl_coef x 1 nat (how much the reward moves when a response's log-ratio to the reference
#   moves by one nat; sequence KLs of several nats are usual after a few updates). Below a tenth of it, the reward
#   differences are noise beside the KL term as soon as the policy moves at all.
KL_FLOOR = 0.1
# - the missing-EOS gap, |missing_eos_score - median scaled score|. The penalty is meant to be much larger than a
#   typical difference (the authors' -4 against Eurus/1000 scores), so only a gap a hundred times larger is flagged.
PENALTY_FLOOR = 0.01
# A missing-EOS score above this share of the scored responses rewards not ending over them.
PENALTY_ABOVE_SHARE = 0.25


@dataclass(frozen=True)
class ScaleCheck:
    """What the measurement found, on scaled scores."""

    scale: float
    pairs: int
    median_difference: float  # median |scale * (score(chosen) - score(rejected))|
    median_score: float  # median scale * score over both responses
    kl_unit: float  # kl_coef x 1 nat
    missing_eos_score: float | None
    share_below_penalty: float  # share of scaled scores below the missing-EOS score (0 without one)

    @property
    def penalty_gap(self) -> float | None:
        return None if self.missing_eos_score is None else abs(self.missing_eos_score - self.median_score)

    @property
    def problems(self) -> list[str]:
        out = []
        d = self.median_difference
        if self.kl_unit > 0 and d < KL_FLOOR * self.kl_unit:
            out.append(f"the scaled reward differences (median {d:.3g} over {self.pairs} pairs) are far below the "
                       f"KL term (kl_coef x 1 nat = {self.kl_unit:.3g}; flagged below {KL_FLOOR:g} of it)")
        gap = self.penalty_gap
        if gap is not None and d < PENALTY_FLOOR * gap:
            out.append(f"the scaled reward differences (median {d:.3g}) are far below the missing-EOS penalty (score "
                       f"{self.missing_eos_score:g}, {gap:.3g} from the median score {self.median_score:.3g}; "
                       f"flagged below {PENALTY_FLOOR:g} of it)")
        if self.missing_eos_score is not None and self.share_below_penalty > PENALTY_ABOVE_SHARE:
            out.append(f"the missing-EOS score {self.missing_eos_score:g} is above {self.share_below_penalty:.0%} of "
                       f"the scaled scores: not ending would be rewarded over them")
        return out

    def describe(self) -> str:
        gap = "" if self.penalty_gap is None else f", missing-EOS gap {self.penalty_gap:.3g}"
        return (f"measured on {self.pairs} preference pairs of the task: scaled |score difference| median "
                f"{self.median_difference:.3g}, median scaled score {self.median_score:.3g}; KL unit "
                f"{self.kl_unit:.3g}{gap}")


def check_scores(chosen: Tensor, rejected: Tensor, scale: float, kl_coef: float,
                 missing_eos_score: float | None) -> ScaleCheck:
    """The check on already scaled scores of the two responses of each pair ([N] each)."""
    both = torch.cat([chosen, rejected]).float()
    below = 0.0 if missing_eos_score is None else (both < missing_eos_score).float().mean().item()
    return ScaleCheck(scale=scale, pairs=len(chosen), median_difference=(chosen - rejected).abs().median().item(),
                      median_score=both.median().item(), kl_unit=kl_coef, missing_eos_score=missing_eos_score,
                      share_below_penalty=below)


@torch.no_grad()
def measure(reward_model, tokenizer, examples: list, cfg: RunConfig, n: int = HANDFUL) -> ScaleCheck | None:
    """Score the chosen and rejected responses of the first `n` preference pairs with the run's reward model at the
    run's scale (raw scores: no missing-EOS replacement), then `check_scores`. None without pairs."""
    from harness.core.experience import encode_queries
    from harness.core.tokens import encode_responses

    pairs = [ex for ex in examples if ex.chosen and ex.rejected][:n]
    if not pairs:
        return None
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    query = encode_queries(pairs, tokenizer, cfg.task.max_prompt_tokens)
    rule = ScoreRule(scale=cfg.train.reward_scale, missing_eos_score=None)
    scores = []
    for texts in ([ex.chosen for ex in pairs], [ex.rejected for ex in pairs]):
        response, mask = encode_responses(texts, tokenizer, cfg.generation.max_new_tokens, eos, pad)
        scores.append(reward_scores(reward_model, query, response, mask, pad, rule=rule))
    return check_scores(scores[0], scores[1], cfg.train.reward_scale, cfg.train.kl_coef, cfg.train.missing_eos_score)


def known_scale(cfg: RunConfig) -> tuple[str, str | None]:
    """(why the run uses its scale, a problem when the scale is not the one recorded for its reward model)."""
    scale, name = cfg.train.reward_scale, cfg.model.reward_model
    if name in KNOWN_SCALES:
        known, source = KNOWN_SCALES[name]
        if abs(scale - known) <= 1e-12 * max(1.0, known):
            return f"{scale:g} x {name}'s scores: {source}", None
        return (f"{scale:g} x {name}'s scores, NOT its recorded scale {known:g} ({source})",
                f"reward scale: train.reward_scale {scale:g} with {name}, whose recorded scale is {known:g} "
                f"({source}); a scale belongs to the reward model it was chosen for (docs/fidelity.md)")
    what = f"{name}'s scores" if name else "the built-in reward model's scores"
    return f"{scale:g} x {what} (train.reward_scale; no recorded scale for this reward model)", None


def _generated_or_local(task_name: str, source: str) -> bool:
    """A local directory, or a source the task generates offline (its registered `offline_sources`; before tasks
    declared them, the synthetic sources of harness.app.config). `auto` is not: it may read the hub."""
    if Path(source).is_dir():
        return True
    from harness import tasks

    offline = getattr(tasks.get(task_name), "offline_sources", None)
    if offline is None:
        from harness.app import config

        offline = tuple(getattr(config, "SYNTHETIC_SOURCES", ()))
    return source in offline and source != "auto"


def _local_inputs(cfg: RunConfig):
    """(reward model path, tokenizer path, reason) when both and the task's data are on this machine without a
    download or a build; else (None, None, why not)."""
    source = cfg.task.source
    if not _generated_or_local(cfg.task.name, source):
        return None, None, f"task.source {source} is not on this machine (a local directory or a stand-in is)"
    if cfg.model.policy == "builtin:tiny":
        from harness.core.store import cache_root
        from harness.tasks.tiny import recipe_key

        built = cache_root(cfg.model.cache_dir) / f"tiny-{recipe_key(cfg.model.tiny)}"
        if not (built / "build_info.json").exists():
            return None, None, "the tiny preset is not built yet (the first run builds it)"
        return cfg.model.reward_model or str(built / "reward"), cfg.model.tokenizer or str(built / "sft"), ""
    rm, tok = cfg.model.reward_model, cfg.model.tokenizer or cfg.model.policy
    if not (rm and Path(rm).is_dir() and Path(tok).is_dir()):
        return None, None, "the reward model and tokenizer are not local directories"
    return rm, tok, ""


def add_to_plan(cfg: RunConfig, plan) -> None:
    """The dry run's `reward scale` lines: the scale and why; the measurement where it can run here; problems."""
    from harness import tasks

    task = tasks.get(cfg.task.name)
    if task.checker and not cfg.model.reward_model:
        plan.add("reward scale", f"{cfg.train.reward_scale:g} x {task.reward_note}; no reward model")
        return
    why, problem = known_scale(cfg)
    plan.add("reward scale", why)
    if problem:
        plan.problems.append(problem)
    rm_path, tok_path, reason = _local_inputs(cfg)
    if rm_path is None:
        plan.add("scale check", f"not measured here: {reason}")
        return
    try:
        from harness import tasks
        from harness.core.models import load_reward_model, load_tokenizer

        _, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset, cfg.task.preference_dataset)
        tokenizer = load_tokenizer(tok_path)
        result = measure(load_reward_model(rm_path, tokenizer, torch.float32), tokenizer, data.pref_train, cfg)
    except Exception as e:  # the dry run reports, it does not crash on a check it could not make
        plan.add("scale check", f"not measured here: {type(e).__name__}: {e}"[:300])
        return
    if result is None:
        plan.add("scale check", "not measured here: the task's data has no preference pairs to score")
        return
    plan.add("scale check", result.describe() + (": ok" if not result.problems else ""))
    for p in result.problems:
        plan.add("", f"WARNING: {p}")
        plan.problems.append(f"reward scale: {p}")
