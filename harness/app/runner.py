"""One run end to end: config -> data -> models -> SFT baseline -> training iterations -> evaluation -> summary."""
from __future__ import annotations

import datetime as dt
import math
import os
import traceback
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from algorithms.base import Algorithm, make
from evals import suites
from evals.tldr import KL_DEFINITION
from harness.app.config import TABLE_SECTIONS, RunConfig, changed_settings
from harness.core.contract import PREFERENCE_PAIRS
from harness.core.errors import UserError
from harness.core.experience import Budget
from harness.app.catalogue import preflight_run
from harness.core.models import Models, load_models, peak_memory_mb
from harness.tasks.checked_pairs import cached_pairs
from harness.tasks import resolve_paths
from harness.core.store import (RunDir, code_version, config_hash, read_json, writable_cache_root, write_json,
                                write_jsonl)
from harness.core import checkpoint
from harness import tasks
from harness.core.distributed import Runtime
from harness.core.examples import TaskData
from harness.core.store import cache_root, code_fingerprint
from harness.app.trackers import open_trackers
from harness.core.train import Trainer, TrainingDiverged, score_rule, training_examples

def suite_of(cfg: RunConfig) -> suites.TaskSuite:
    """The evaluation suite of the run's task (Task.suite)."""
    return suites.get(tasks.get(cfg.task.name).suite)


def held_out(cfg: RunConfig, data: TaskData) -> list:
    """The evaluation prompts: a seeded random subset of `eval.prompts` rows of the held-out split (the paper: 600
    random test prompts), the same for every optimizer and seed; `eval.selection=first` takes the first rows."""
    from harness.core.examples import eval_examples

    return eval_examples(data, cfg.eval.prompts, split=cfg.eval.split, selection=cfg.eval.selection,
                         seed=cfg.eval.selection_seed)


def make_judge(cfg: RunConfig, data: TaskData, base_url: str | None = None):
    """The one judge choice of `run` and `eval`: gold when the task has a gold reward (the stand-in); an
    OpenAI-compatible LLM judge when configured (an API key or `base_url`); otherwise none (win rate not
    computed). An LLM judge's endpoint is checked here, before any generation. A task with a checker has no judge:
    the checker grades its answers."""
    if not suite_of(cfg).uses_judge:
        return None
    choice = cfg.eval.judge
    if choice == "auto":
        has_key = os.environ.get("HARNESS_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        choice = "gold" if data.gold is not None else "openai" if has_key or base_url else "none"
    if choice == "gold":
        if data.gold is None:
            raise UserError("eval.judge=gold needs a task with a gold reward (the synthetic stand-in: its rows carry "
                            "the facts the gold reward checks); use eval.judge=openai for real data")
        from evals.gold_judge import GoldJudge

        return GoldJudge(data.gold, held_out(cfg, data))
    if choice == "openai":
        from evals.judge import OpenAIJudge

        judge = OpenAIJudge(model=cfg.eval.judge_model, base_url=base_url,
                            cache_dir=str(cache_root(cfg.model.cache_dir) / "judge"),
                            order=cfg.eval.judge_order, template_path=cfg.eval.judge_template)
        judge.client.preflight()  # an unreachable endpoint or unserved model fails now, not after training
        return judge
    return None


def evaluate(cfg: RunConfig, models: Models, data: TaskData, judge, policy=None,
             runtime: Runtime | None = None) -> tuple[dict, list[dict]]:
    """The end-of-run evaluation of `policy` (default: the trained policy) on held-out prompts by the task's suite
    (evals.suites); with several processes every rank scores its share and rank 0 gets the metrics (the others get
    ({}, []))."""
    runtime = runtime or Runtime.single()
    with models.as_reference() as reference, runtime.gathered(models.policy):
        if policy is None:
            policy = models.policy
        metrics, samples = suite_of(cfg).evaluate(cfg, policy, reference, models, held_out(cfg, data), data, judge,
                                                  runtime)
    bad = runtime.broadcast([k for k in ("rm_score", "kl", "kl_exact") if k in metrics
                             and not math.isfinite(metrics[k])])
    if bad:  # never written into a summary or the SFT-baseline cache
        raise TrainingDiverged(f"evaluation gave non-finite {', '.join(bad)}: check the reward model's outputs "
                               f"and the policy's weights")
    return metrics, samples


# the modules whose code computes an SFT baseline's numbers, part of its cache key (harness/store.code_fingerprint)
BASELINE_CODE = ("evals.tldr", "evals.math", "evals.reward", "evals.pass_at_k", "evals.gold_judge", "harness.core.scoring",
                 "harness.core.rollout", "harness.tasks.verifier", "harness.core.examples:eval_examples")


def sft_baseline(cfg: RunConfig, models: Models, data: TaskData, judge, console: Console,
                 runtime: Runtime | None = None) -> dict:
    """The SFT policy's numbers on the same prompts, computed once per (models, data, eval settings) and cached."""
    runtime = runtime or Runtime.single()
    key = config_hash({"models": {k: v for k, v in models.origin.items()}, "recipe": cfg.model.tiny.model_dump(),
                       "source": data.source, "eval": cfg.eval.model_dump(), "generation": cfg.generation.model_dump(),
                       "max_prompt_tokens": cfg.task.max_prompt_tokens, "judge": getattr(judge, "name", None),
                       "prompts": config_hash([ex.record() | {"prompt": ex.prompt} for ex in held_out(cfg, data)]),
                       # the code that computes the numbers: a changed evaluation never reads an old baseline
                       "code": code_fingerprint(evaluate, held_out, type(judge), type(data.gold), type(data.reward),
                                                *BASELINE_CODE),
                       # a task file's data and reward code (harness/tasks/task_file.py), when it has them
                       **({"data": data.fingerprint} if data.fingerprint else {})})
    path = cache_root(cfg.model.cache_dir) / "sft_baselines" / f"{key}.json"
    cached = runtime.broadcast(read_json(path) if runtime.is_main and path.exists() else None)
    if cached is not None:
        return cached
    console.print("Evaluating the SFT policy once for this preset (cached afterwards)")
    with models.as_reference() as reference:
        metrics, _ = evaluate(cfg, models, data, judge, policy=reference, runtime=runtime)
    if runtime.is_main:
        write_json(path, metrics)
    return metrics


def checked_pairs(cfg: RunConfig, models: Models, data: TaskData, console: Console, runtime: Runtime) -> dict:
    """Offline pairs for a task with a checker (harness/tasks/checked_pairs.py): two SFT samples of each of the
    first iterations x prompts_per_iteration training prompts, a pair where the checker tells them apart; made once
    and cached. Returns the counts (pairs, ties)."""
    t = cfg.train
    counts = cached_pairs(data, models, n_prompts=min(len(data.sft_train), t.iterations * t.prompts_per_iteration),
                          max_prompt_tokens=cfg.task.max_prompt_tokens, max_new_tokens=cfg.generation.max_new_tokens,
                          temperature=cfg.generation.temperature, rule=score_rule(cfg), cache_dir=cfg.model.cache_dir,
                          write=runtime.is_main, log=console.print)
    console.print(f"[bold]pairs[/]      {counts['pairs']} checker-labelled SFT pairs from {counts['prompts']} prompts "
                  f"(ties, no pair: {counts['ties_correct']} both right, {counts['ties_wrong']} both wrong)")
    return counts


def run_id(cfg: RunConfig, resolved_hash: str) -> str:
    """Derived from the settings, so that the same command finds (and resumes) the same run directory."""
    return cfg.run_id or f"{cfg.algo}-{cfg.task.name}-{cfg.preset}-s{cfg.seed}-{resolved_hash[:8]}"


def describe(cfg: RunConfig, algo: Algorithm, models: Models, data: TaskData, judge, console: Console,
             runtime: Runtime) -> None:
    params = sum(p.numel() for p in models.policy.parameters())
    console.print(f"[bold]algorithm[/]  {algo.name} {algo.hyperparameters()}")
    console.print(f"[bold]model[/]      {cfg.model.policy} ({params / 1e6:.2f}M parameters) from {models.origin['policy']}"
                  + (f" - {escape(cfg.description)}" if cfg.description else ""))
    reward = models.origin["reward_model"] if data.reward is None else f"the task's {data.reward.name} (no reward model)"
    console.print(f"[bold]reward[/]     {reward}")
    offline = data.source in tasks.get(cfg.task.name).offline_sources
    source_note = " (generated offline: a stand-in, not the real data)" if offline else ""
    console.print(f"[bold]data[/]       {cfg.task.name} from {data.source}{source_note}: {len(data.sft_train)} training prompts, "
                  f"{len(held_out(cfg, data))} held-out prompts ({cfg.eval.selection} of {cfg.eval.split})")
    judge_note = "none: win rate not computed (configure eval.judge=openai)" if judge is None else judge.name
    if data.reward is not None and judge is None:
        judge_note = f"none: the {data.reward.name} grades every answer"
    if judge is not None and judge.name == "gold":
        judge_note += " (the stand-in's programmatic gold reward)"
    console.print(f"[bold]judge[/]      {judge_note}")
    console.print(f"[bold]compute[/]    {runtime.label}")


def open_run_dir(run_dir: RunDir, config: dict, runtime: Runtime) -> bool:
    """Create the run directory, or find the same run's earlier attempt; True when that attempt completed."""
    if runtime.is_main and run_dir.config.exists():
        earlier = read_json(run_dir.config).get("config_hash")
        if earlier != config["config_hash"]:
            raise UserError(f"{run_dir.path} holds a run with other settings (config hash {earlier}, this one "
                            f"{config['config_hash']}); choose another --run-id")
    done = runtime.broadcast(run_dir.is_complete())
    if runtime.is_main and not done:
        run_dir.create(config)
    runtime.barrier()
    return done


def run(cfg: RunConfig, console: Console | None = None, runtime: Runtime | None = None) -> Path:
    """Train and evaluate one run; started again after a crash or kill, it resumes from its last checkpoint."""
    runtime = runtime or Runtime.from_environment()
    console = console or Console(stderr=True, quiet=not runtime.is_main)
    algo = make(cfg.algo, cfg.algo_args)
    tasks.get(cfg.task.name)
    writable_cache_root(cfg.model.cache_dir)
    torch.manual_seed(cfg.seed)
    preflight_run(cfg, log=console.print)  # every hub model and data set here (or fetchable), before any loads
    source, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset, cfg.task.preference_dataset)
    judge = make_judge(cfg, data)
    resolved = cfg.model_dump()
    resolved["task"]["resolved_source"] = source
    chash = config_hash({k: v for k, v in resolved.items() if k not in ("output_dir", "run_id", "log")})
    run_dir = RunDir(Path(cfg.output_dir) / run_id(cfg, chash))
    if open_run_dir(run_dir, {**resolved, "config_hash": chash, "code_version": code_version()}, runtime):
        console.print(f"{run_dir.path} is already complete (same settings); its summary follows. To train again, "
                      f"pass another --run-id or delete that directory.")
        console.print(summary_table(read_json(run_dir.summary)))
        return run_dir.path
    paths = resolve_paths(cfg.model, log=console.print, needs_reward_model=data.reward is None)
    models = load_models(cfg.model, paths, needs_critic=algo.needs_critic, device=runtime.device)
    runtime.prepare_models(models)
    if runtime.is_main:
        write_json(run_dir.config, {**read_json(run_dir.config), "model_origin": models.origin})
    describe(cfg, algo, models, data, judge, console, runtime)
    console.print(f"[bold]run dir[/]    {run_dir.path}")
    trackers = open_trackers(cfg.log.trackers, run_dir.path, run_dir.path.name, resolved, runtime.is_main)
    if trackers.names:
        console.print(f"[bold]trackers[/]   {', '.join(trackers.names)} (metrics.jsonl stays the record)")
    sft = sft_baseline(cfg, models, data, judge, console, runtime)
    pairs = None
    if algo.data == PREFERENCE_PAIRS and data.reward is not None and not data.pref_train and cfg.train.iterations:
        pairs = checked_pairs(cfg, models, data, console, runtime)
    budget = Budget()
    trainer = Trainer(cfg, algo, models, training_examples(algo, data), budget, runtime, gold=data.gold,
                      reward=data.reward)
    start = checkpoint.restore(run_dir.checkpoints, trainer, runtime)
    if runtime.is_main:
        run_dir.begin_attempt(start, code_version())
    if start:
        console.print(f"[bold]resumed[/]    from the checkpoint of iteration {start} in {run_dir.checkpoints}")
    started = dt.datetime.now().isoformat(timespec="seconds")
    iteration = start
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[status]}"), console=console, disable=not runtime.is_main) as bar:
            task = bar.add_task(f"{algo.name}", total=cfg.train.iterations, completed=start, status="")
            for iteration in range(start + 1, cfg.train.iterations + 1):
                line = trainer.iteration(iteration)
                if cfg.eval.due(iteration, cfg.train.iterations):
                    metrics, _ = evaluate(cfg, models, data, judge, runtime=runtime)
                    line.update({f"eval/{k}": metrics[k] for k in suite_of(cfg).metric_keys if k in metrics})
                if runtime.is_main:
                    run_dir.log(line)
                    trackers.log(line)
                every = cfg.train.checkpoint_every
                if every and (iteration % every == 0 or iteration == cfg.train.iterations):
                    checkpoint.save(run_dir.checkpoints, iteration, trainer, runtime)
                bar.update(task, advance=1, status=_status(line))
        final, samples = evaluate(cfg, models, data, judge, runtime=runtime)
    except BaseException as e:
        trackers.finish()
        last = checkpoint.latest(run_dir.checkpoints)
        kept = (f"the last good checkpoint (iteration {last['iteration']}) is kept in {run_dir.checkpoints}: the same "
                f"command resumes from it" if last else "no checkpoint was written (train.checkpoint_every)")
        if runtime.is_main:
            write_json(run_dir.failed, {"iteration": iteration, "error": f"{type(e).__name__}: {e}",
                                                      "checkpoint": last, "traceback": traceback.format_exc()})
        if isinstance(e, (TrainingDiverged, UserError)):  # e.g. a reward function that raised mid-run
            raise type(e)(f"{e}; {kept}") from None
        if isinstance(e, KeyboardInterrupt):
            console.print(f"interrupted at iteration {iteration}; {kept}")
        raise
    counters = trainer.counters()  # collectives: every rank takes part
    save_policy(models, run_dir.checkpoints / "final", runtime)
    if not runtime.is_main:
        return run_dir.path
    if cfg.train.iterations:
        last_line = {"iteration": iteration, **counters, "final": True,
                     **{f"eval/{k}": final[k] for k in suite_of(cfg).metric_keys if k in final}}
        run_dir.log(last_line)
        trackers.log(last_line)
    trackers.finish()
    write_jsonl(run_dir.samples, samples)
    write_json(run_dir.evals / suite_of(cfg).file_name(cfg.task.name), final)  # what `harness eval` writes
    settings = changed_settings(cfg)  # what --set or a sweep grid changed against the preset
    summary = {"run_id": run_dir.path.name, "status": "completed", "algorithm": algo.name,
               "algorithm_config": algo.hyperparameters(),
               "objective": algo.objective(cfg.train.kl_coef), "task": cfg.task.name, "suite": suite_of(cfg).name,
               "data_source": source,
               "preset": cfg.preset, "seed": cfg.seed, "config_hash": chash,
               "code_version": code_version(), "started_at": started, "resumed_from": start or None,
               "processes": runtime.world_size,
               "finished_at": dt.datetime.now().isoformat(timespec="seconds"), "eval": final, "sft": sft,
               "budget": {**counters, "peak_memory_mb": round(peak_memory_mb(), 1)},
               "settings": settings,
               "reward": data.reward.name if data.reward is not None else f"reward model {models.origin['reward_model']}",
               "comparison_key": {"task": cfg.task.name, "data_source": source, "preset": cfg.preset,
                                  "judge": final["win_rate_judge"], "eval_temperature": cfg.eval.temperature,
                                  "kl_definition": KL_DEFINITION}}
    other_setup = {k: v for k, v in settings.items() if k.split(".")[0] in TABLE_SECTIONS}
    if other_setup:  # another model or data set than the preset's: never pooled with the preset's runs
        summary["comparison_key"]["settings"] = other_setup
    if pairs is not None:
        summary["offline_pairs"] = pairs
    write_json(run_dir.summary, summary)
    if not cfg.train.keep_checkpoints:
        checkpoint.remove_all(run_dir.checkpoints)
    console.print(summary_table(summary))
    return run_dir.path


def save_policy(models: Models, path: Path, runtime: Runtime | None = None) -> None:
    """The trained policy (or its LoRA adapter) and tokenizer, safetensors only; `harness eval` loads it."""
    runtime = runtime or Runtime.single()
    checkpoint.save_weights(models.policy, path, runtime)
    if runtime.is_main:
        models.tokenizer.save_pretrained(path)


def _status(line: dict) -> str:
    parts = [f"loss {line['loss']:.3g}"] if "loss" in line else []
    parts += [f"{k} {line[k]:.3f}" for k in ("score", "kl", "gold") if k in line]
    return "  ".join(parts)


def summary_table(summary: dict) -> Table:
    """A run's summary as its suite's table (a summary written before suites were named: its task's suite)."""
    return suites.get(summary.get("suite") or tasks.get(summary["task"]).suite).summary_table(summary)
