"""The chat suite: AlpacaEval 2.0 and MT-Bench answered with the model's chat template and judged through an
OpenAI-compatible endpoint. Writes chat.json ({"alpaca_eval": {...}, "mt_bench": {...}}) beside the modules' own
files (evals/alpaca_eval.py, evals/mt_bench.py); the report builds the paper's Table 2 from it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from evals.suites import ModelSuite, Target, keep_base, num, pct, register
from harness.core.assets import Asset
from harness.core.errors import UserError
from harness.core.store import write_json

FILE_OPTIONS = (("--alpaca-reference", "alpaca_reference"), ("--mt-bench-questions", "mt_bench_questions"),
                ("--mt-bench-references", "mt_bench_references"))


def mt_bench_for_report(summary: dict) -> dict:
    """evals/mt_bench.py's summary under the keys docs/report.md reads (turn_1, turn_2, average, per_category)."""
    renamed = {"score_turn1": "turn_1", "score_turn2": "turn_2", "score": "average"}
    return {renamed.get(k, k): v for k, v in summary.items()}


def chat_assets(alpaca_reference: str | None = None, mt_bench_questions: str | None = None) -> list[Asset]:
    """AlpacaEval 2.0 (reference outputs unless a file is given, and the LC weights) and MT-Bench's questions with
    their reference answers (the hub set carries them) unless a file is given."""
    from evals.alpaca_eval import HUB_REFERENCE_FILE, HUB_REPO, LC_WEIGHTS_FILE
    from evals.mt_bench import HUB_DATASET

    out = [] if alpaca_reference else [Asset("AlpacaEval reference outputs", "file", HUB_REPO, HUB_REFERENCE_FILE,
                                             repo_type="dataset")]
    out.append(Asset("AlpacaEval LC weights", "file", HUB_REPO, LC_WEIGHTS_FILE, repo_type="dataset"))
    if not mt_bench_questions:
        out.append(Asset("MT-Bench questions and reference answers", "dataset", HUB_DATASET, splits=("train",)))
    return out


class ChatSuite(ModelSuite):
    name = "chat"
    key = "chat"
    summary = "AlpacaEval 2.0 (LC and raw win rate) and MT-Bench (turns 1, 2) through an OpenAI-compatible judge"
    options = ("alpaca_reference", "annotator", "mt_bench_questions", "mt_bench_references", "hub_cache_dir",
               "max_new_tokens", "limit", "device", "judge_model", "judge_base_url")
    needs_judge_key = True  # a missing judge key is cheaper to fix than a missing asset: said first

    def assets(self, options):
        return chat_assets(options.get("alpaca_reference"), options.get("mt_bench_questions"))

    def check(self, target: Target, options: dict, log: Callable = print) -> None:
        from harness.core import assets

        for flag, key in FILE_OPTIONS:
            if options.get(key) is not None and not Path(options[key]).is_file():
                raise UserError(f"{flag}: no such file {options[key]}")
        model = assets.model_asset("evaluated model", target.model) if target.run_dir is None else []
        command = assets.prepare_command(suites=["chat"], models=[a.name for a in model if a.kind == "model"])
        assets.require(model, command, log=log)
        hub = options.get("hub_cache_dir")
        into = f" --dir {Path(hub).parent}" if hub and Path(hub).name == "hub" else ""
        assets.require(self.assets(options), command + into, assets.Caches(hub=hub), log=log)  # prepare --dir D: D/hub

    def run(self, target: Target, options: dict, log: Callable = print) -> dict:
        """Answer AlpacaEval's instructions and MT-Bench's questions, judge them, write chat.json."""
        from evals.alpaca_eval import DEFAULT_ANNOTATOR, generate_outputs, load_reference_outputs, run_alpaca_eval
        from evals.answer_cache import CachedAnswers, model_fingerprint
        from evals.chat_generate import chat_generator
        from evals.judge import CompletionClient, Endpoint
        from evals.mt_bench import HUB_DATASET, load_questions, run_mt_bench

        o = {"max_new_tokens": 1024, **{k: v for k, v in options.items() if v is not None}}
        endpoint = Endpoint.resolve(o.get("judge_model"), o.get("judge_base_url"))  # a missing key stops here
        client = CompletionClient(endpoint, cache_dir=o.get("cache_dir"), max_tokens=2048)
        client.preflight()
        self.check(target, o, log)  # before any model loads or answer is generated
        limit, hub = o.get("limit"), o.get("hub_cache_dir")
        references = load_reference_outputs(o.get("alpaca_reference"), hub)[:limit]
        questions = load_questions(o.get("mt_bench_questions") or HUB_DATASET, o.get("mt_bench_references"))[:limit]
        generate = CachedAnswers(target.out_dir / "chat_answers.jsonl",
                                 model_fingerprint(target.model, o["max_new_tokens"]),
                                 lambda: chat_generator(target.model, device=o.get("device"),
                                                        max_new_tokens=o["max_new_tokens"]))
        log(f"AlpacaEval 2.0: {len(references)} instructions, judge {endpoint.model} at {endpoint.base_url}")
        alpaca = run_alpaca_eval(generate_outputs(references, generate, target.name), o.get("alpaca_reference"),
                                 target.out_dir, endpoint=endpoint, annotator=o.get("annotator") or DEFAULT_ANNOTATOR,
                                 hub_cache_dir=hub)
        log(f"MT-Bench: {len(questions)} questions, 2 turns each")
        mt_bench = run_mt_bench(questions, generate, client, target.out_dir)
        if generate.reused:
            log(f"reused {generate.reused} answers kept in {generate.path} (same model files and settings)")
        path = target.out_dir / "chat.json"
        chat = {"alpaca_eval": alpaca, "mt_bench": mt_bench_for_report(mt_bench), "model": target.model,
                "limit": limit, **keep_base(path)}
        write_json(path, chat)
        return chat

    def describe(self, result):
        a, m = result["alpaca_eval"], result["mt_bench"]
        return (f"chat: AlpacaEval LC {pct(a['lc_win_rate'])}, WR {pct(a['win_rate'])} ({a['n']} instructions); "
                f"MT-Bench {num(m['average'])} (turn 1 {num(m['turn_1'])}, turn 2 {num(m['turn_2'])})")

    def rates(self, data):
        return [("alpaca_eval." + k, (data.get("alpaca_eval") or {}).get(k)) for k in ("lc_win_rate", "win_rate")]

    def report_tables(self):
        from evals.tables import CHAT_METRICS

        return [("table2", "Table 2: chat benchmarks", CHAT_METRICS)]


register(ChatSuite())
