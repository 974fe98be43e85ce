"""What `harness eval` evaluates (a run's checkpoint or any model), where the results go, and the evaluation of a
task suite (evals.suites.TaskSuite) on a saved policy: the runner's own evaluation, so a run's final policy gets
the numbers of its own final evaluation. A model suite (chat, open-llm, ...) runs itself (ModelSuite.run).

A task suite writes <file>.json (tldr.json; the math suite: <task>.json) and <stem>_samples.jsonl into the output
directory; a model suite its own evals/<key>.json, which the report reads with the keys of docs/report.md.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from evals import suites
from evals.suites import Target
from harness.core.errors import UserError, invalid
from harness.core.store import is_run_dir, read_json, write_json, write_jsonl

RUN_CONFIG_EXTRAS = ("config_hash", "code_version", "model_origin")  # written by the runner beside the RunConfig
DEFAULT_OUT_ROOT = Path("results") / "evals"


# ---------------------------------------------------------------------------------------------------------------
# what is evaluated, and where the results go

def parse_suites(values: list[str]) -> list[suites.Suite]:
    """["tldr", "chat,open-llm"] -> unique suites in the order given; open_llm is accepted for open-llm."""
    out: list[suites.Suite] = []
    for value in values:
        for name in filter(None, (v.strip() for v in value.split(","))):
            suite = suites.get(name)
            if suite not in out:
                out.append(suite)
    if not out:
        raise UserError(f"no suite given: pass --suite {' | '.join(suites.names())} (repeatable)")
    return out


def sanitise(name: str) -> str:
    """A hub name or path as one directory name: EleutherAI/pythia-1b -> EleutherAI_pythia-1b."""
    name = re.sub(r"^(\./|/)+", "", name.strip().rstrip("/"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def resolve_target(target: str, checkpoint: str | None = None, out: str | Path | None = None) -> Target:
    path = Path(target).expanduser()
    if is_run_dir(path):
        name = checkpoint or "final"
        ckpt = path / "checkpoints" / name
        if not ckpt.is_dir():
            found = sorted(p.name for p in (path / "checkpoints").glob("*") if p.is_dir())
            hint = f"it has: {', '.join(found)}" if found else "the run did not finish (no policy was saved)"
            raise UserError(f"run {path} has no checkpoints/{name}; {hint}")
        # another checkpoint must not overwrite the final policy's results, which are the run's numbers
        default_out = path / "evals" if name == "final" else path / "evals" / "checkpoints" / name
        label = path.resolve().name + ("" if name == "final" else f"@{name}")
        return Target(str(ckpt), Path(out) if out else default_out, sanitise(label), path, name)
    if checkpoint is not None:
        raise UserError(f"--checkpoint needs a run directory; {target} is not one")
    if not path.exists() and (target.startswith(("/", "./", "../", "~")) or target in (".", "..")):
        raise UserError(f"no such directory: {target}")
    if path.is_dir() and not (path / "config.json").exists():
        raise UserError(f"{target} is neither a run directory nor a model directory (no config.json)")
    return Target(target, Path(out) if out else DEFAULT_OUT_ROOT / sanitise(target), sanitise(target))


# ---------------------------------------------------------------------------------------------------------------
# a task suite: the runner's held-out evaluation on a saved policy

def run_config(run_dir: Path):
    """(RunConfig, model_origin) of a run, rebuilt from its config.json."""
    from pydantic import ValidationError

    from harness.app.config import RunConfig

    try:
        saved = read_json(run_dir / "config.json")
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir}/config.json is missing or not valid JSON ({type(e).__name__})") from None
    origin = saved.get("model_origin")
    data = {k: v for k, v in saved.items() if k not in RUN_CONFIG_EXTRAS}
    data["task"] = {k: v for k, v in (data.get("task") or {}).items() if k != "resolved_source"}
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise invalid(e, f"{run_dir}/config.json is not a run config this code reads") from None
    if not origin:
        raise UserError(f"{run_dir}/config.json has no model_origin: cannot tell which reference and reward model "
                        f"the run used")
    return cfg, origin, (saved.get("task") or {}).get("resolved_source")


def _settings(cfg, **update):
    return cfg.model.model_copy(update=update)


def load_eval_models(settings, policy_path: str | None, log: Callable = print, needs_reward_model: bool = True):
    """The run's reference, reward model and tokenizer through harness.core.models.load_models (`settings` name the
    reference policy), with the policy replaced by the one at `policy_path`. Loading the checkpoint as
    `settings.policy` instead would make the frozen reference a copy of the trained policy (KL = 0).
    needs_reward_model False: a task with a checker, which loads none."""
    from harness.core.models import load_models, load_policy
    from harness.tasks import resolve_paths

    models = load_models(settings, resolve_paths(settings, log=log, needs_reward_model=needs_reward_model))
    if policy_path is None:
        return models
    if (Path(policy_path) / "adapter_config.json").exists():
        if settings.lora is None:
            raise UserError(f"{policy_path} holds a LoRA adapter but the run config has no model.lora")
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(models.policy, load_peft_weights(policy_path, device="cpu"))
    else:
        if settings.lora is not None:
            raise UserError(f"the run config has model.lora but {policy_path} holds no adapter_config.json")
        # float32 as load_models loads a full model
        policy = load_policy(policy_path, models.tokenizer)
        models.policy = policy  # the reference stays the one load_models made from `settings`
    models.policy.eval()
    models.origin = {**models.origin, "policy": str(policy_path), "reference": str(settings.policy)}
    return models


def run_task_suite(suite: suites.TaskSuite, target: Target, *, prompts: int | None = None,
                   judge: str | None = None, judge_model: str | None = None, judge_base_url: str | None = None,
                   temperature: float | None = None, reward_model: str | None = None, reference: str | None = None,
                   source: str | None = None, preset: str | None = None, task: str | None = None,
                   log: Callable = print) -> dict:
    """The suite's metrics of the target on its task's held-out prompts: the runner's own `evaluate` and judge.
    A run dir brings its config (task, prompts, temperatures, judge, data source, reference and reward model). A
    model takes `task` (default: the suite's first), `source`, `preset` (default: the task's own), `reward_model`
    (needed by a task without a checker) and measures KL against `reference` (default: itself, so KL is 0)."""
    from harness import tasks
    from harness.app import catalogue
    from harness.app.runner import evaluate, make_judge

    if target.run_dir is not None:
        _refuse_on_a_run(**{"--reward-model": reward_model, "--reference": reference, "--source": source,
                            "--preset": preset, "--task": task})
        cfg, origin, resolved_source = run_config(target.run_dir)
        _check_run_suite(target, cfg, suite)
        cfg.task.source = resolved_source or cfg.task.source
        settings = _run_settings(cfg, origin, log)
    else:
        cfg = _model_config(suite, task, source, preset)
        if not tasks.get(cfg.task.name).checker and reward_model is None:
            raise UserError(f"--suite {suite.name} on a model directory or hub name needs --reward-model (task "
                            f"{cfg.task.name} is scored by a reward model; a run directory brings its own)")
        # with a reference, both share the evaluated model's tokenizer (it was trained from the reference)
        settings = _settings(cfg, policy=reference or target.model, reward_model=reward_model,
                             tokenizer=target.model if reference else None)
        if reference is None:
            log("no --reference: KL is measured against the model itself (0); pass the SFT model as --reference")
    _override_eval(cfg, prompts=prompts, temperature=temperature, judge=judge,
                   judge_model=judge_model or os.environ.get("HARNESS_JUDGE_MODEL") or None)
    data_assets = [a for a in catalogue.for_config(cfg) if a.kind == "dataset"]
    sets = (f"task.name={cfg.task.name}", f"task.source={cfg.task.source}") if target.run_dir is None else ()
    _check_assets(target, settings, data_assets, preset or cfg.preset, log, sets=sets)  # before anything loads
    source, data = tasks.load(cfg.task.name, cfg.task.source, cfg.task.dataset, cfg.task.preference_dataset)
    judge_obj = make_judge(cfg, data, judge_base_url)  # a bad key or endpoint fails here, before loading models
    models = load_eval_models(settings, None if target.model == settings.policy else target.model, log=log,
                              needs_reward_model=data.reward is None)
    metrics, samples = evaluate(cfg, models, data, judge_obj)
    metrics.update({"task": cfg.task.name, "checkpoint": target.model,
                    "reference": models.origin.get("reference", settings.policy),
                    "reward_model": models.origin.get("reward_model"), "data_source": source,
                    "run_dir": str(target.run_dir) if target.run_dir else None})
    name = suite.file_name(cfg.task.name)  # the file name the run itself writes
    write_json(target.out_dir / name, metrics)
    write_jsonl(target.out_dir / f"{Path(name).stem}_samples.jsonl", samples)
    return metrics


def _refuse_on_a_run(**flags) -> None:
    """Options that describe a model's setting are an error on a run directory, which brings its own."""
    for flag, value in flags.items():
        if value is not None:
            raise UserError(f"{flag} is for a model directory; a run directory brings its own (config.json)")


def _run_settings(cfg, origin: dict, log: Callable):
    """The model settings of a run: its own reference, reward model and tokenizer (config.json model_origin); a
    builtin preset whose cached build is gone is rebuilt from its recipe."""
    settings = _settings(cfg, policy=origin["policy"], reward_model=origin["reward_model"],
                         tokenizer=origin.get("tokenizer"))
    if cfg.model.policy.startswith("builtin:") and not Path(origin["policy"]).exists():
        log(f"{origin['policy']} is gone; rebuilding the run's {cfg.model.policy} preset from its recipe")
        settings = cfg.model
    return settings


def _override_eval(cfg, **values) -> None:
    """The eval settings given on the command line (None: the run's or preset's own), validated."""
    from pydantic import ValidationError

    try:
        for key, value in values.items():
            if value is not None:
                setattr(cfg.eval, key, value)
    except ValidationError as e:
        raise invalid(e, "invalid value for eval") from None


def _check_assets(target: Target, settings, data_assets: list, preset: str | None, log: Callable,
                  suites: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> None:
    """One line naming a missing model or data set of the evaluation and the `harness prepare` command for it."""
    from harness.core import assets

    need = assets.model_asset("policy", target.model) + assets.model_asset("reference", settings.policy) + \
        assets.model_asset("reward model", settings.reward_model) + \
        assets.model_asset("tokenizer", settings.tokenizer) + data_assets
    if target.run_dir is not None:
        command = assets.prepare_command(config=target.run_dir, suites=suites)
    else:
        command = assets.prepare_command(preset=preset, suites=suites, sets=sets,
                                         models=list(dict.fromkeys(a.name for a in need if a.kind == "model")))
    assets.require(need, command, log=log)


def _tasks_of(suite: str) -> list[str]:
    """The tasks whose runs `suite` evaluates (Task.suite)."""
    from harness import tasks

    return [n for n in tasks.names() if tasks.get(n).suite == suite]


def _check_run_suite(target: Target, cfg, suite: suites.TaskSuite) -> None:
    """A run is evaluated by its task's suite only."""
    from harness import tasks

    own = tasks.get(cfg.task.name).suite
    if own != suite.name:
        raise UserError(f"run {target.run_dir} trained on task {cfg.task.name!r}: --suite {suite.name} evaluates "
                        f"runs of {' | '.join(_tasks_of(suite.name))} (use --suite {own})")


def _model_config(suite: suites.TaskSuite, task: str | None, source: str | None, preset: str | None):
    """A model's evaluation settings: the preset's (default: the task's own) with `task` (default: the preset's
    task when the suite evaluates it, else the suite's default task). Without `source`, the preset's data source
    when the preset is for `task`, else the task's `auto` (gsm8k: the hub; the arith preset's `synthetic` would not
    name gsm8k rows)."""
    from harness import tasks
    from harness.app.config import resolve

    own = _tasks_of(suite.name)
    if task is None and preset is not None and resolve(preset).task.name in own:
        task = resolve(preset).task.name  # the preset's own task
    task = task or suite.default_task or own[0]
    if task not in own:
        tasks.get(task)  # an unknown task: the registry's one line
        raise UserError(f"--task {task} is not evaluated by --suite {suite.name}: it evaluates {' | '.join(own)} "
                        f"(use --suite {tasks.get(task).suite})")
    name = preset or tasks.get(task).preset
    if source is None:
        base = resolve(name)
        source = base.task.source if base.task.name == task else "auto"
    return resolve(name, {"task": {"name": task, "source": source}})
