"""`harness eval TARGET --suite NAME`: evaluate a finished run's policy (or any model) and write the suite files
`harness report` reads. The suites are evals.suites' registry (`harness list` names them); this module only wires
options: each suite declares the options it reads, and an option no chosen suite reads is refused."""
from __future__ import annotations

from typing import Optional

import typer

from harness.core.errors import UserError


def check_suite_options(chosen: list, given: dict) -> None:
    """One line for the options that none of the chosen suites reads (they would be silently ignored)."""
    from evals import suites

    unread = [flag for flag, value in given.items() if value is not None
              and not any(_dest(flag) in s.options for s in chosen)]
    if unread:
        readers = dict.fromkeys(s.name for flag in unread for n in suites.names()
                                for s in [suites.get(n)] if _dest(flag) in s.options)
        raise UserError(f"{', '.join(unread)} only apply to --suite {' or --suite '.join(readers)}")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        target: str = typer.Argument(..., help="a run directory (evaluates checkpoints/final), a model directory or "
                                               "a hub name"),
        suite: list[str] = typer.Option(..., "--suite", "-s", help="tldr | math | reward | chat | open-llm "
                                        "(repeatable; `harness list`)"),
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="another directory under the run's "
                                                 "checkpoints/ (results go to evals/checkpoints/NAME/)"),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="output directory (default: RUN/evals, or "
                                          "results/evals/<model name> for a model)"),
        # tldr and math
        prompts: Optional[int] = typer.Option(None, "--prompts", min=1, help="tldr, math: held-out prompts or "
                                              "problems (default: the run's eval.prompts; the paper used 600)"),
        judge: Optional[str] = typer.Option(None, "--judge", help="tldr: gold | openai | none (default: the run's "
                                            "eval.judge)"),
        temperature: Optional[float] = typer.Option(None, "--temperature", help="tldr, math: sampling temperature of "
                                                    "the evaluated responses (default: the run's eval.temperature)"),
        reward_model: Optional[str] = typer.Option(None, "--reward-model", help="tldr on a model: reward model "
                                                   "directory or hub name (required)"),
        reference: Optional[str] = typer.Option(None, "--reference", help="tldr, math on a model: the KL reference "
                                                "(e.g. its SFT model; default: the model itself, KL 0)"),
        source: Optional[str] = typer.Option(None, "--source", help="tldr on a model: data auto | hub | synthetic | synthetic-hard | "
                                             "DIR; math on a model: gsm8k rows hub | DIR | FILE (default hub)"),
        preset: Optional[str] = typer.Option(None, "--preset", help="tldr, math on a model: take prompt/generation/"
                                             "eval settings from this preset (math: default the task's own)"),
        task: Optional[str] = typer.Option(None, "--task", help="math on a model: arith | gsm8k | math (default arith; a "
                                           "run directory brings its own)"),
        # judge endpoint (tldr with --judge openai, chat)
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help="judge model (else "
                                                  "HARNESS_JUDGE_MODEL, else the run's eval.judge_model / gpt-4o)"),
        judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="OpenAI-compatible endpoint "
                                                     "(else HARNESS_JUDGE_BASE_URL, OPENAI_BASE_URL); the key only "
                                                     "from HARNESS_JUDGE_API_KEY / OPENAI_API_KEY"),
        # chat
        alpaca_reference: Optional[str] = typer.Option(None, "--alpaca-reference", help="chat: AlpacaEval "
                                                       "reference outputs .json/.jsonl (default: the hub's GPT-4 "
                                                       "Turbo outputs)"),
        annotator: Optional[str] = typer.Option(None, "--annotator", help="chat: alpaca_eval annotator (default "
                                                "weighted_alpaca_eval_gpt4_turbo, needs logprobs)"),
        mt_bench_questions: Optional[str] = typer.Option(None, "--mt-bench-questions", help="chat: FastChat "
                                                         "question.jsonl (default: the hub's mt_bench_prompts)"),
        mt_bench_references: Optional[str] = typer.Option(None, "--mt-bench-references", help="chat: FastChat "
                                                          "reference_answer/gpt-4.jsonl"),
        hub_cache_dir: Optional[str] = typer.Option(None, "--hub-cache-dir", help="chat: hub cache holding "
                                                    "alpaca_eval's df_gamed.csv (offline LC win rate)"),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="chat: answer length cap"),
        # open-llm
        include_path: Optional[str] = typer.Option(None, "--include-path", help="open-llm: directory of task YAMLs "
                                                   "(local shadows of the leaderboard tasks)"),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="open-llm: comma-separated subset of the six "
                                            "tasks"),
        # chat and open-llm
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="chat: first N instructions and questions; "
                                            "open-llm: N documents per task (smoke tests, not benchmark numbers)"),
        device: Optional[str] = typer.Option(None, "--device", help="chat, open-llm: cpu | cuda (default: cuda when "
                                             "available)"),
    ) -> None:
        """Evaluate a run's saved policy (or any model) on TL;DR, chat (AlpacaEval 2.0 + MT-Bench), the Open LLM
        Leaderboard tasks or a math task's pass@k (arith, gsm8k, math); writes <suite>.json (math: <task>.json) and
        per-sample records into the run's evals/."""
        from rich.console import Console

        from evals.suites import TaskSuite
        from harness.app import evaluate
        from harness.core.store import cache_root

        console = Console(stderr=True)
        chosen = evaluate.parse_suites(suite)
        tgt = evaluate.resolve_target(target, checkpoint, out)
        given = {"--prompts": prompts, "--judge": judge, "--temperature": temperature, "--reward-model": reward_model,
                 "--reference": reference, "--source": source, "--preset": preset, "--task": task,
                 "--alpaca-reference": alpaca_reference, "--annotator": annotator,
                 "--mt-bench-questions": mt_bench_questions, "--mt-bench-references": mt_bench_references,
                 "--hub-cache-dir": hub_cache_dir, "--include-path": include_path, "--tasks": tasks,
                 "--limit": limit, "--device": device}
        check_suite_options(chosen, given)
        judge_cache = cache_root(evaluate.run_config(tgt.run_dir)[0].model.cache_dir if tgt.run_dir else None)
        options = {_dest(flag): value for flag, value in given.items()}
        options.update(tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else None,
                       judge_model=judge_model, judge_base_url=judge_base_url, max_new_tokens=max_new_tokens,
                       cache_dir=judge_cache / "judge")
        if any(getattr(s, "needs_judge_key", False) for s in chosen):  # the cheaper thing to fix: said first
            from evals.judge import Endpoint

            Endpoint.resolve(judge_model, judge_base_url)
        for s in chosen:  # every model suite's assets before a model loads (a task suite checks its own)
            if not isinstance(s, TaskSuite):
                s.check(tgt, options, log=console.print)
        console.print(f"[bold]evaluating[/] {tgt.model} -> {tgt.out_dir}")
        for s in chosen:
            console.print(f"[bold]suite[/] {s.name}")
            if isinstance(s, TaskSuite):
                result = evaluate.run_task_suite(s, tgt, log=console.print, judge_model=judge_model,
                                                 judge_base_url=judge_base_url,
                                                 **{k: options[k] for k in s.options if k in options})
            else:
                result = s.run(tgt, options, log=console.print)
            console.print(s.describe(result), markup=False, highlight=False)
        console.print(f"[bold]written[/] {tgt.out_dir}")
