"""AlpacaEval 2.0 through the `alpaca_eval` package: length-controlled and raw win rate against reference outputs.

How it is driven (see EVALS.md for why each point matters):
- reference outputs are always handed over as a .json list of {instruction, output, generator} (its default hub
  loader is broken with datasets >= 4, and it rejects .jsonl); without a path, the plain JSON file is fetched once
  from the hub data set tatsu-lab/alpaca_eval;
- the annotator is a copy of a built-in annotator config (AlpacaEval 2.0's default unless asked otherwise) whose
  judge model and client-config YAML point at the configured OpenAI-compatible endpoint; the YAML holds the base URL
  only, the key reaches the client through OPENAI_API_KEY set for the duration of the call, so it is never written;
- caching_path and save_weights_dir are explicit (otherwise it writes into site-packages), and the annotator's name
  carries the judge model so that cached annotations of one judge are never reused for another;
- the LC metric always fetches df_gamed.csv through hf_hub_download, which offline reads the hub cache
  (`harness prepare --suite chat` fills it; `hub_cache_dir` points at another one): both hub files are checked
  before anything is judged, and a missing one is one line naming the prepare command.
All rates are reported as fractions in [0, 1], like every other win rate in the harness (alpaca_eval prints percent).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path
from typing import Callable

import yaml

from evals.judge import Endpoint, client_defaults
from harness.core.errors import UserError
from harness.core.store import write_json, write_jsonl

HUB_REPO = "tatsu-lab/alpaca_eval"
HUB_REFERENCE_FILE = "alpaca_eval_gpt4_baseline.json"  # AlpacaEval 2.0: GPT-4 Turbo's outputs on the 805 instructions
LC_WEIGHTS_FILE = "df_gamed.csv"  # alpaca_eval.metrics.glm_winrate fits the length-controlled win rate on it
DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"  # AlpacaEval 2.0's default annotator (needs logprobs)


def load_reference_outputs(path: str | Path | None = None, hub_cache_dir: str | Path | None = None) -> list[dict]:
    """Reference outputs from a .json list or .jsonl file, or (path None) the AlpacaEval 2.0 file from the hub."""
    if path is None:
        from huggingface_hub import hf_hub_download
        _require_hub_file(HUB_REFERENCE_FILE, "AlpacaEval reference outputs", hub_cache_dir)
        path = hf_hub_download(HUB_REPO, HUB_REFERENCE_FILE, repo_type="dataset", cache_dir=hub_cache_dir)
    text = Path(path).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if str(path).endswith(".jsonl") \
        else json.loads(text)
    bad = [i for i, r in enumerate(rows) if not {"instruction", "output"} <= set(r)]
    if bad:
        raise UserError(f"{path}: rows {bad[:5]} lack 'instruction' or 'output'")
    return [{"generator": "reference", **r} for r in rows]


def generate_outputs(references: list[dict], generate: Callable[[list[list[dict]]], list[str]],
                     generator: str) -> list[dict]:
    """The model's answers to the reference instructions, one single-turn chat each, in reference order."""
    answers = generate([[{"role": "user", "content": r["instruction"]}] for r in references])
    return [{"instruction": r["instruction"], "output": a, "generator": generator} for r, a in zip(references, answers)]


def run_alpaca_eval(model_outputs: list[dict], reference_outputs_path: str | Path | None, output_dir: Path | str,
                    endpoint: Endpoint | None = None, annotator: str = DEFAULT_ANNOTATOR,
                    max_concurrency: int | None = None, hub_cache_dir: str | Path | None = None) -> dict:
    """Judge `model_outputs` ({instruction, output[, generator]}) against the references; write the summary
    `alpaca_eval.json`, the per-instruction `alpaca_eval_samples.jsonl`, and alpaca_eval's own files under
    `alpaca_eval/` (annotation cache, leaderboard, annotations) into output_dir."""
    import alpaca_eval
    import alpaca_eval.constants

    endpoint = endpoint or Endpoint.resolve()
    work = Path(output_dir) / "alpaca_eval"
    work.mkdir(parents=True, exist_ok=True)
    generator = model_outputs[0].get("generator", "model") if model_outputs else "model"
    model_outputs = [{"instruction": o["instruction"], "output": o["output"], "generator": generator}
                     for o in model_outputs]
    references = _matching_references(load_reference_outputs(reference_outputs_path, hub_cache_dir), model_outputs)
    reference_json = work / "reference_outputs.json"
    reference_json.write_text(json.dumps(references, indent=1), encoding="utf-8")
    config_path = _write_annotator_config(work, annotator, endpoint, max_concurrency)
    _require_hub_file(LC_WEIGHTS_FILE, "AlpacaEval LC weights", hub_cache_dir)  # before any judge call

    with _env("OPENAI_API_KEY", endpoint.api_key), _attr(alpaca_eval.constants, "DEFAULT_CACHE_DIR", hub_cache_dir), \
            _no_verdict_is_a_user_error(work / "annotations_cache.json", annotator, endpoint, config_path):
        leaderboard, annotations = alpaca_eval.evaluate(
            model_outputs=model_outputs, reference_outputs=str(reference_json), annotators_config=str(config_path),
            name=generator, output_path=work, is_return_instead_of_print=True, precomputed_leaderboard=None,
            is_cache_leaderboard=False, caching_path=str(work / "annotations_cache.json"),
            metric_kwargs={"save_weights_dir": None})
    row = leaderboard.loc[generator]
    records = [_record(a) for a in annotations]
    summary = {
        "lc_win_rate": _frac(row["length_controlled_winrate"]), "lc_standard_error": _frac(row["lc_standard_error"]),
        "win_rate": _frac(row["win_rate"]), "standard_error": _frac(row["standard_error"]),
        "n_wins": int(row["n_wins"]), "n_draws": int(row["n_draws"]), "n_total": int(row["n_total"]),
        "n_missing": sum(r["preference"] is None for r in records), "avg_length": int(row["avg_length"]),
        "n": len(model_outputs), "full_set": len(references) == 805, "generator": generator,
        "judge": endpoint.model, "annotator": annotator,
        "reference": str(reference_outputs_path or f"hf://datasets/{HUB_REPO}/{HUB_REFERENCE_FILE}"),
    }
    write_json(Path(output_dir) / "alpaca_eval.json", summary)
    write_jsonl(Path(output_dir) / "alpaca_eval_samples.jsonl", records)
    return summary


def _require_hub_file(filename: str, role: str, hub_cache_dir: str | Path | None) -> None:
    from harness.core.assets import Asset, Caches, require

    require([Asset(role, "file", HUB_REPO, filename, repo_type="dataset")], "python -m harness prepare --suite chat",
            Caches(hub=str(hub_cache_dir) if hub_cache_dir else None))


def _matching_references(references: list[dict], model_outputs: list[dict]) -> list[dict]:
    """The references of the instructions answered, in reference order. Pairs are matched by instruction text, and the
    LC fit looks instruction difficulty up by position, so it is only calibrated on the full 805-instruction set."""
    wanted = {o["instruction"] for o in model_outputs}
    missing = wanted - {r["instruction"] for r in references}
    if missing:
        raise UserError(f"{len(missing)} model outputs have no reference output, e.g. {sorted(missing)[0][:80]!r}")
    return [r for r in references if r["instruction"] in wanted]


def _write_annotator_config(work: Path, annotator: str, endpoint: Endpoint, max_concurrency: int) -> Path:
    from alpaca_eval import constants

    builtin_dir = Path(constants.EVALUATORS_CONFIG_DIR)
    builtin = builtin_dir / annotator / "configs.yaml"
    if not builtin.exists():
        names = sorted(p.name for p in builtin_dir.iterdir() if (p / "configs.yaml").exists())
        raise UserError(f"unknown alpaca_eval annotator {annotator!r}; valid: {', '.join(names)}")
    config = next(iter(yaml.safe_load(builtin.read_text()).values()))
    if config.get("fn_completions") != "openai_completions":
        raise UserError(f"alpaca_eval annotator {annotator!r} does not call an OpenAI-compatible endpoint")
    client_config = work / "client_config.yaml"  # base URL only: the key is never written
    concurrency, timeout = client_defaults(endpoint.base_url, max_concurrency)  # a local server: 1 at a time
    client_config.write_text(yaml.safe_dump({"default": [{"base_url": endpoint.base_url, "max_retries": 6,
                                                          "timeout": timeout}]}))
    config["prompt_template"] = str(builtin_dir / config["prompt_template"])
    config["completions_kwargs"].update(model_name=endpoint.model, client_config_path=str(client_config),
                                        num_procs=concurrency, requires_chatml=True)
    name = f"{annotator}@{re.sub(r'[^A-Za-z0-9._-]+', '_', endpoint.model)}"
    path = work / "annotators" / name / "configs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({name: config}, sort_keys=False))
    return path


@contextlib.contextmanager
def _no_verdict_is_a_user_error(cache: Path, annotator: str, endpoint: Endpoint, config_path: Path):
    """alpaca_eval's metrics crash (a pandas TypeError) when no annotation has a verdict: say that instead, and say
    when the reason is likely the server's (no log-probabilities: transformers serve ignores `logprobs` silently)."""
    try:
        yield
    except (TypeError, ValueError, ZeroDivisionError):
        try:
            rows = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"AlpacaEval failed before writing any annotation with annotator {annotator}") from None
        if rows and not any(_is_verdict(r.get("preference")) for r in rows):
            config = next(iter(yaml.safe_load(config_path.read_text()).values()))
            why = (f"annotator {annotator} reads the verdict from log-probabilities, which this server may not "
                   f"return: serve the judge where logprobs work (OpenAI, vLLM) or pass --annotator "
                   f"alpaca_eval_gpt4 (a written verdict, not AlpacaEval 2.0's protocol)"
                   if config["completions_kwargs"].get("logprobs") else "use a stronger judge")
            raise UserError(f"AlpacaEval: judge {endpoint.model!r} at {endpoint.base_url} gave no readable verdict "
                            f"for any of the {len(rows)} pairs (annotations in {cache}); {why}") from None
        raise


def _is_verdict(preference) -> bool:
    return isinstance(preference, (int, float)) and not math.isnan(preference) and 1 <= preference <= 2


def _record(annotation: dict) -> dict:
    raw = {k: v for k, v in annotation.items() if k.endswith("raw_completion")}
    preference = annotation.get("preference")
    return {"instruction": annotation["instruction"], "output": annotation["output_2"],
            "reference_output": annotation["output_1"], "generator": annotation["generator_2"],
            # 1 = reference preferred, 2 = model preferred, fractional = judge's probability; None = no verdict
            "preference": None if preference is None or math.isnan(preference) else float(preference),
            "annotator": annotation.get("annotator"),
            "raw_completion": json.loads(json.dumps(next(iter(raw.values()), None), default=str))}


def _frac(percent) -> float | None:
    return None if percent is None or math.isnan(percent) else float(percent) / 100


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _attr(obj, name: str, value):
    """Set obj.name for the duration of the block, only when a value is given."""
    if value is None:
        yield
        return
    old = getattr(obj, name)
    setattr(obj, name, str(value))
    try:
        yield
    finally:
        setattr(obj, name, old)
