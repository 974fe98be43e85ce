"""The suites `harness eval` dispatches to: what to evaluate (a run's checkpoint or any model), where the results go,
and one function per suite that runs the evaluation modules and writes the files `harness report` reads (chat and
open-llm: harness/app/evaluate_chat.py).

| suite    | writes into the output dir                                   | reads                                   |
|----------|--------------------------------------------------------------|-----------------------------------------|
| tldr     | tldr.json, tldr_samples.jsonl                                 | the run's config, reward model, data    |
| chat     | chat.json (+ alpaca_eval.json, mt_bench.json, their samples)  | a chat model, a judge endpoint          |
| open-llm | open_llm.json, open_llm_samples.jsonl                         | lm-eval tasks (built-in or shadowed)    |
| math     | <task>.json (arith.json, gsm8k.json), <task>_samples.jsonl    | the run's config, task data, reference  |

The report reads chat.json, open_llm.json and a math run's <task>.json with the keys of docs/report.md (rates as
fractions); the per-suite files the modules write stay beside them with everything else.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.errors import UserError, invalid
from harness.store import is_run_dir, read_json, write_json, write_jsonl

SUITES = ("tldr", "chat", "open-llm")  # suites with assets of their own: `harness prepare --suite` takes these
# math (a task with a checker) needs only its run's or preset's assets (`harness prepare RUN`); kept out of SUITES
# because prepare reads any suite it does not name as open-llm
EVAL_SUITES = SUITES + ("math",)  # what `harness eval --suite` takes
RUN_CONFIG_EXTRAS = ("config_hash", "code_version", "model_origin")  # written by the runner beside the RunConfig
DEFAULT_OUT_ROOT = Path("results") / "evals"


# ---------------------------------------------------------------------------------------------------------------
# what is evaluated, and where the results go

@dataclass
class Target:
    """A run's checkpoint (run_dir set) or a model directory / hub name (run_dir None)."""
    model: str  # the directory or hub name the policy loads from
    out_dir: Path
    name: str  # a file-name-safe label (AlpacaEval's generator name)
    run_dir: Path | None = None
    checkpoint: str | None = None


def parse_suites(values: list[str]) -> list[str]:
    """["tldr", "chat,open-llm"] -> unique suite names in the order given; open_llm is accepted for open-llm."""
    out = []
    for value in values:
        for name in filter(None, (v.strip() for v in value.split(","))):
            name = name.replace("_", "-")
            if name not in EVAL_SUITES:
                raise UserError(f"unknown suite {name!r}; valid suites: {', '.join(EVAL_SUITES)}")
            if name not in out:
                out.append(name)
    if not out:
        raise UserError(f"no suite given: pass --suite {' | '.join(EVAL_SUITES)} (repeatable)")
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


def keep_base(path: Path) -> dict:
    """An existing `base` block (the starting model's numbers, docs/report.md) survives a re-evaluation."""
    try:
        base = read_json(path).get("base")
    except (OSError, ValueError, AttributeError):
        return {}
    return {"base": base} if base is not None else {}


# ---------------------------------------------------------------------------------------------------------------
# tldr: the runner's held-out evaluation on a saved policy

def run_config(run_dir: Path):
    """(RunConfig, model_origin) of a run, rebuilt from its config.json."""
    from pydantic import ValidationError

    from harness.config import RunConfig

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
    """The run's reference, reward model and tokenizer through harness.models.load_models (`settings` name the
    reference policy), with the policy replaced by the one at `policy_path`. Loading the checkpoint as
    `settings.policy` instead would make the frozen reference a copy of the trained policy (KL = 0).
    needs_reward_model False: a task with a checker, which loads none."""
    from harness.models import load_models, load_policy
    from harness.tasks.tiny import resolve_paths

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


def run_tldr(target: Target, *, prompts: int | None = None, judge: str | None = None, judge_model: str | None = None,
             judge_base_url: str | None = None, temperature: float | None = None, reward_model: str | None = None,
             reference: str | None = None, source: str | None = None, preset: str | None = None,
             log: Callable = print) -> dict:
    """Win rate, RM score and KL of the target on the TL;DR held-out prompts: the runner's own `evaluate` and judge.
    A run dir brings its config (prompts, temperatures, judge, data source, reference and reward model); a model
    needs `reward_model`, and measures KL against `reference` (default: itself, so KL is 0)."""
    from harness.config import RunConfig, resolve
    from harness.app import catalogue
    from harness.app.runner import evaluate, make_judge
    from harness.tasks.tldr import load_task, resolve_source

    if target.run_dir is not None:
        _refuse_on_a_run(**{"--reward-model": reward_model, "--reference": reference, "--source": source,
                            "--preset": preset})
        cfg, origin, resolved_source = run_config(target.run_dir)
        if cfg.task.name != "tldr":
            from harness import tasks

            other = "use --suite math" if tasks.get(cfg.task.name).checker else "use --suite chat"
            raise UserError(f"run {target.run_dir} trained on task {cfg.task.name!r}: --suite tldr evaluates TL;DR "
                            f"runs ({other})")
        source = resolved_source or resolve_source(cfg.task.source)
        settings = _run_settings(cfg, origin, log)
    else:
        if reward_model is None:
            raise UserError("--suite tldr on a model directory or hub name needs --reward-model (a run directory "
                            "brings its own)")
        cfg = resolve(preset) if preset else RunConfig()
        source = resolve_source(source or cfg.task.source)
        # with a reference, both share the evaluated model's tokenizer (it was trained from the reference)
        settings = _settings(cfg, policy=reference or target.model, reward_model=reward_model,
                             tokenizer=target.model if reference else None)
        if reference is None:
            log("no --reference: KL is measured against the model itself (0); pass the SFT model as --reference")
    _override_eval(cfg, prompts=prompts, temperature=temperature, judge=judge,
                   judge_model=judge_model or os.environ.get("HARNESS_JUDGE_MODEL") or None)
    data_assets = catalogue.tldr_data(cfg.task.dataset, cfg.task.preference_dataset) if source == "hub" else []
    _check_assets(target, settings, data_assets, preset, log, suites=("tldr",))  # before the data or models load
    data = load_task(source, cfg.task.dataset, cfg.task.preference_dataset)
    judge_obj = make_judge(cfg, data, judge_base_url)  # a bad key or endpoint fails here, before loading models
    models = load_eval_models(settings, None if target.model == settings.policy else target.model, log=log)
    metrics, samples = evaluate(cfg, models, data, judge_obj)
    metrics.update({"checkpoint": target.model, "reference": models.origin.get("reference", settings.policy),
                    "reward_model": models.origin["reward_model"], "data_source": source,
                    "run_dir": str(target.run_dir) if target.run_dir else None})
    write_json(target.out_dir / "tldr.json", metrics)
    write_jsonl(target.out_dir / "tldr_samples.jsonl", samples)
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
    from harness import assets

    need = assets.model_asset("policy", target.model) + assets.model_asset("reference", settings.policy) + \
        assets.model_asset("reward model", settings.reward_model) + \
        assets.model_asset("tokenizer", settings.tokenizer) + data_assets
    if target.run_dir is not None:
        command = assets.prepare_command(config=target.run_dir, suites=suites)
    else:
        command = assets.prepare_command(preset=preset, suites=suites, sets=sets,
                                         models=list(dict.fromkeys(a.name for a in need if a.kind == "model")))
    assets.require(need, command, log=log)


# ---------------------------------------------------------------------------------------------------------------
# math: the runner's pass@k evaluation (evals/math.py) of a task with a checker, on a saved policy

def run_math(target: Target, *, prompts: int | None = None, temperature: float | None = None,
             reference: str | None = None, source: str | None = None, preset: str | None = None,
             task: str | None = None, log: Callable = print) -> dict:
    """pass@1/4/8, greedy pass@1, KL, length and no-answer share of the target on its math task's held-out
    problems: the runner's own `evaluate`, so a run's final policy gets the numbers of its own final evaluation.
    A run dir brings its config (task, data, problems, temperatures, reference); a model takes `task` (default
    arith), `source`, `preset` (default the task's) and measures KL against `reference` (default: itself, 0)."""
    from harness import tasks
    from harness.app import catalogue
    from harness.app.runner import evaluate

    if target.run_dir is not None:
        _refuse_on_a_run(**{"--reference": reference, "--source": source, "--preset": preset, "--task": task})
        cfg, origin, resolved_source = run_config(target.run_dir)
        if not tasks.get(cfg.task.name).checker:
            raise UserError(f"run {target.run_dir} trained on task {cfg.task.name!r}, which has no checker: --suite "
                            f"math evaluates runs of {_checker_tasks()} (use --suite tldr or chat)")
        source = resolved_source or cfg.task.source
        settings = _run_settings(cfg, origin, log)
    else:
        cfg = _model_config(task or "arith", source, preset)
        settings = _settings(cfg, policy=reference or target.model, reward_model=None,
                             tokenizer=target.model if reference else None)
        source = cfg.task.source
        if reference is None:
            log("no --reference: KL is measured against the model itself (0); pass the SFT model as --reference")
    _override_eval(cfg, prompts=prompts, temperature=temperature)
    data_assets = [a for a in catalogue.for_config(cfg) if a.kind == "dataset"]  # gsm8k from the hub
    sets = (f"task.name={cfg.task.name}", f"task.source={source}") if target.run_dir is None else ()
    _check_assets(target, settings, data_assets, preset or cfg.preset, log, sets=sets)  # before anything loads
    source, data = tasks.load(cfg.task.name, source, cfg.task.dataset, cfg.task.preference_dataset)
    models = load_eval_models(settings, None if target.model == settings.policy else target.model, log=log,
                              needs_reward_model=False)
    metrics, samples = evaluate(cfg, models, data, None)
    metrics.update({"task": cfg.task.name, "checkpoint": target.model,
                    "reference": models.origin.get("reference", settings.policy), "data_source": source,
                    "run_dir": str(target.run_dir) if target.run_dir else None})
    write_json(target.out_dir / f"{cfg.task.name}.json", metrics)  # the file name the run itself writes
    write_jsonl(target.out_dir / f"{cfg.task.name}_samples.jsonl", samples)
    return metrics


def _checker_tasks() -> str:
    from harness import tasks

    return " | ".join(n for n in tasks.names() if tasks.get(n).checker)


def _model_config(task: str, source: str | None, preset: str | None):
    """A model's evaluation settings: the preset's (default: the task's own) with `task`, which needs a checker.
    Without `source`, the preset's data source when the preset is for `task`, else the task's `auto` (gsm8k: the
    hub; the arith preset's `synthetic` would not name gsm8k rows)."""
    from harness import tasks
    from harness.config import resolve

    if not tasks.get(task).checker:
        raise UserError(f"--task {task} has no checker: --suite math evaluates {_checker_tasks()}")
    name = preset or tasks.get(task).preset
    if source is None:
        base = resolve(name)
        source = base.task.source if base.task.name == task else "auto"
    return resolve(name, {"task": {"name": task, "source": source}})


def describe(suite: str, result: dict) -> str:
    """One line per suite for the terminal."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "n/a" if x is None else f"{x:.3f}"

    if suite == "tldr":
        return (f"tldr: win rate {pct(result['win_rate'])} ({result['win_rate_judge'] or 'no judge'}), RM score "
                f"{num(result['rm_score'])}, KL {num(result['kl'])}, {result['n']} prompts")
    if suite == "chat":
        a, m = result["alpaca_eval"], result["mt_bench"]
        return (f"chat: AlpacaEval LC {pct(a['lc_win_rate'])}, WR {pct(a['win_rate'])} ({a['n']} instructions); "
                f"MT-Bench {num(m['average'])} (turn 1 {num(m['turn_1'])}, turn 2 {num(m['turn_2'])})")
    if suite == "math":
        return (f"math ({result.get('task')}): pass@1 {pct(result['pass@1'])}, pass@4 {pct(result.get('pass@4'))}, "
                f"pass@8 {pct(result.get('pass@8'))}, greedy pass@1 {pct(result['greedy_pass@1'])}, KL "
                f"{num(result['kl'])}, {result['response_length']:.1f} tokens, no answer "
                f"{pct(result['no_answer_frac'])}; {result['n']} problems x {result['samples_per_problem']} "
                f"samples at temperature {result['temperature']:g}")
    tasks = ", ".join(f"{t} {pct(v)}" for t, v in result["tasks"].items())
    return f"open-llm: average {pct(result['average'])} ({tasks})"
