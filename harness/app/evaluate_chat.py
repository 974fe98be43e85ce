"""The chat suite (AlpacaEval 2.0 and MT-Bench through an OpenAI-compatible judge) and the open-llm suite (the six
leaderboard tasks through lm-eval) for `harness eval`, and the offline check of their assets before anything loads.
The TL;DR and math suites, and what every suite shares (targets, run settings), are in harness/app/evaluate.py."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.app.evaluate import Target, keep_base
from harness.errors import UserError
from harness.store import write_json


def mt_bench_for_report(summary: dict) -> dict:
    """evals/mt_bench.py's summary under the keys docs/report.md reads (turn_1, turn_2, average, per_category)."""
    renamed = {"score_turn1": "turn_1", "score_turn2": "turn_2", "score": "average"}
    return {renamed.get(k, k): v for k, v in summary.items()}


def run_chat(target: Target, *, judge_model: str | None = None, judge_base_url: str | None = None,
             alpaca_reference: str | None = None, mt_bench_questions: str | None = None,
             mt_bench_references: str | None = None, limit: int | None = None, annotator: str | None = None,
             hub_cache_dir: str | None = None, max_new_tokens: int = 1024, device: str | None = None,
             cache_dir: str | Path | None = None, log: Callable = print) -> dict:
    """Answer AlpacaEval's instructions and MT-Bench's questions with the target's chat template, judge them, and
    write chat.json ({"alpaca_eval": {...}, "mt_bench": {...}}) beside the modules' own files."""
    from evals.alpaca_eval import DEFAULT_ANNOTATOR, generate_outputs, load_reference_outputs, run_alpaca_eval
    from evals.answer_cache import CachedAnswers, model_fingerprint
    from evals.chat_generate import chat_generator
    from evals.judge import CompletionClient, Endpoint
    from evals.mt_bench import HUB_DATASET, load_questions, run_mt_bench

    endpoint = Endpoint.resolve(judge_model, judge_base_url)  # a missing key for a remote judge stops here
    client = CompletionClient(endpoint, cache_dir=cache_dir, max_tokens=2048)
    client.preflight()
    for flag, path in (("--alpaca-reference", alpaca_reference), ("--mt-bench-questions", mt_bench_questions),
                       ("--mt-bench-references", mt_bench_references)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag}: no such file {path}")
    check_suite_assets("chat", target, alpaca_reference=alpaca_reference, mt_bench_questions=mt_bench_questions,
                       hub_cache_dir=hub_cache_dir, log=log)  # before any model loads or answer is generated
    references = load_reference_outputs(alpaca_reference, hub_cache_dir)[:limit]
    questions = load_questions(mt_bench_questions or HUB_DATASET, mt_bench_references)[:limit]
    generate = CachedAnswers(target.out_dir / "chat_answers.jsonl", model_fingerprint(target.model, max_new_tokens),
                             lambda: chat_generator(target.model, device=device, max_new_tokens=max_new_tokens))
    log(f"AlpacaEval 2.0: {len(references)} instructions, judge {endpoint.model} at {endpoint.base_url}")
    alpaca = run_alpaca_eval(generate_outputs(references, generate, target.name), alpaca_reference, target.out_dir,
                             endpoint=endpoint, annotator=annotator or DEFAULT_ANNOTATOR, hub_cache_dir=hub_cache_dir)
    log(f"MT-Bench: {len(questions)} questions, 2 turns each")
    mt_bench = run_mt_bench(questions, generate, client, target.out_dir)
    if generate.reused:
        log(f"reused {generate.reused} answers kept in {generate.path} (same model files and settings)")
    path = target.out_dir / "chat.json"
    chat = {"alpaca_eval": alpaca, "mt_bench": mt_bench_for_report(mt_bench), "model": target.model,
            "limit": limit, **keep_base(path)}
    write_json(path, chat)
    return chat


# ---------------------------------------------------------------------------------------------------------------
# open-llm: the six leaderboard tasks through lm-eval

def run_open_llm_suite(target: Target, *, include_path: str | None = None, limit: int | None = None,
                       tasks: list[str] | None = None, device: str | None = None, log: Callable = print) -> dict:
    """evals/open_llm.py's run; it writes open_llm.json in the report's shape ({"tasks": {name: score}, "average"})."""
    from evals.open_llm import run_open_llm

    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"--include-path: no such directory {include_path}")
    check_suite_assets("open-llm", target, include_path=include_path, tasks=tasks, log=log)
    path = target.out_dir / "open_llm.json"
    base = keep_base(path)
    summary = run_open_llm(target.model, target.out_dir, tasks=tasks, include_path=include_path, limit=limit,
                           device=device)
    if base:
        summary = {**summary, **base}
        write_json(path, summary)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# offline: what the chat and open-llm suites need, checked before anything loads

def check_suite_assets(suite: str, target: Target, *, alpaca_reference: str | None = None,
                       mt_bench_questions: str | None = None, hub_cache_dir: str | None = None,
                       include_path: str | None = None, tasks: list[str] | None = None, log: Callable = print) -> None:
    """One line naming a missing asset of the chat or open-llm suite and the `harness prepare` command for it."""
    from harness import assets
    from harness.app import catalogue

    model = assets.model_asset("evaluated model", target.model) if target.run_dir is None else []
    fetch_models = [a.name for a in model if a.kind == "model"]
    if suite == "chat":
        command = assets.prepare_command(suites=["chat"], models=fetch_models)
        assets.require(model, command, log=log)
        into = f" --dir {Path(hub_cache_dir).parent}" if hub_cache_dir and Path(hub_cache_dir).name == "hub" else ""
        assets.require(catalogue.chat_assets(alpaca_reference, mt_bench_questions), command + into,
                       assets.Caches(hub=hub_cache_dir), log=log)  # prepare --dir D fills D/hub
    elif suite == "open-llm":
        if include_path is not None and not Path(include_path).is_dir():
            raise UserError(f"--include-path: no such directory {include_path}")
        command = assets.prepare_command(suites=["open-llm"], models=fetch_models) + \
            (f" --tasks {','.join(tasks)}" if tasks else "") + \
            (f" --include-path {include_path}" if include_path else "")
        assets.require(model + catalogue.open_llm_assets(tasks, include_path), command, log=log)
