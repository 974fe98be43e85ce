"""A builder of synthetic run directories (docs/run_format.md) with known numbers, in tmp_path."""
from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from harness.core.store import append_jsonl, write_json


@pytest.fixture(autouse=True)
def _frozen_heap():
    """statsmodels' multipletests (evals/compare.holm) runs gc.collect() on every call, ~0.1 s with torch's objects
    on the heap: frozen for the test, a collection only scans what the test itself made."""
    gc.freeze()
    yield
    gc.unfreeze()

COMPARISON = {"task": "tldr", "data_source": "synthetic", "preset": "tiny", "judge": "gold",
              "eval_temperature": 0.01, "kl_definition": "masked_sequence_sum"}


def default_metrics(n_iter: int = 6, final_score: float = 1.0, final_kl: float = 10.0,
                    final_win: float = 0.5, eval_every: int = 2) -> list[dict]:
    """Cumulative counters (64 prompts, 128 responses per iteration) and linearly rising score/kl/eval columns;
    the last iteration always carries eval/* equal to the final values."""
    out = []
    for i in range(1, n_iter + 1):
        f = i / n_iter
        rec = {"iteration": i, "prompts": 64 * i, "responses": 128 * i, "rm_queries": 128 * i,
               "optimizer_steps": 4 * i, "wall_time_s": 10.0 * i, "loss": 1.0 / i, "score": final_score * f,
               "kl": final_kl * f, "reward": final_score * f - 0.05 * final_kl * f, "response_length": 30 + i,
               "eos_rate": 0.9, "time/generation_s": 1.0, "time/scoring_s": 0.5, "time/update_s": 0.3}
        if i % eval_every == 0 or i == n_iter:
            rec.update({"eval/rm_score": final_score * f, "eval/kl": final_kl * f, "eval/win_rate": final_win * f,
                        "eval/gold_reward": f})
        out.append(rec)
    return out


def write_run(root: Path, run_id: str, algorithm: str = "rebel", seed: int = 0, preset: str = "tiny",
              win_rate: float | None = 0.5, rm_score: float = 1.0, kl: float = 10.0, sft: dict | None = None,
              algorithm_config: dict | None = None, comparison: dict | None = None, status: str = "completed",
              metrics: list[dict] | None = None, summary: bool = True, chat: dict | None = None,
              open_llm: dict | None = None, response_length: float = 40.0, settings: dict | None = None) -> Path:
    """One run directory with known numbers; `summary=False` leaves it incomplete (as after a crash)."""
    path = Path(root) / "runs" / run_id
    algorithm_config = {"eta": 1.0} if algorithm_config is None else algorithm_config
    config = {"algorithm": algorithm, "algorithm_config": algorithm_config, "seed": seed, "preset": preset,
              "config_hash": f"h-{run_id}", "code_version": "abc1234"}
    write_json(path / "config.json", config)
    for rec in metrics if metrics is not None else default_metrics(final_score=rm_score, final_kl=kl,
                                                                     final_win=win_rate or 0.0):
        append_jsonl(path / "metrics.jsonl", rec)
    if summary:
        ck = dict(COMPARISON, preset=preset, **(comparison or {}))
        write_json(path / "summary.json", {
            "run_id": run_id, "status": status, "algorithm": algorithm, "algorithm_config": algorithm_config,
            "task": ck["task"], "data_source": ck["data_source"], "preset": preset, "seed": seed,
            "config_hash": f"h-{run_id}", "code_version": "abc1234", "started_at": "2026-11-22T10:00:00",
            "finished_at": f"2026-11-22T11:{seed:02d}:00",
            "eval": {"rm_score": rm_score, "kl": kl, "kl_exact": kl * 0.9, "win_rate": win_rate,
                     "win_rate_judge": "gold", "gold_reward": 0.3, "response_length": response_length, "n": 64,
                     "temperature": 0.01},
            "sft": sft if sft is not None else {"rm_score": -0.5, "kl": 0.0, "win_rate": 0.25, "response_length": 35.0},
            "budget": {"prompts": 384, "responses": 768, "rm_queries": 768, "optimizer_steps": 24,
                       "wall_time_s": 60.0, "peak_memory_mb": 900.0},
            "comparison_key": ck, **({"settings": settings} if settings is not None else {})})
    if chat is not None:
        write_json(path / "evals" / "chat.json", chat)
    if open_llm is not None:
        write_json(path / "evals" / "open_llm.json", open_llm)
    return path


def chat_json(mt: float = 6.0, lc: float = 0.2, wr: float = 0.18, base: bool = True) -> dict:
    d = {"alpaca_eval": {"lc_win_rate": lc, "win_rate": wr},
         "mt_bench": {"turn_1": mt + 0.5, "turn_2": mt - 0.5, "average": mt,
                      "per_category": {c: mt for c in ("writing", "roleplay", "reasoning", "math")}}}
    if base:
        d["base"] = {"alpaca_eval": {"lc_win_rate": 0.1, "win_rate": 0.08},
                     "mt_bench": {"turn_1": 5.5, "turn_2": 4.5, "average": 5.0,
                                  "per_category": {c: 5.0 for c in ("writing", "roleplay", "reasoning", "math")}}}
    return d


def open_llm_json(acc: float = 0.5, base: bool = True) -> dict:
    tasks = ("mmlu", "gsm8k", "arc_challenge", "winogrande", "truthfulqa_mc2", "hellaswag")
    d = {"tasks": {t: acc for t in tasks}, "average": acc}
    if base:
        d["base"] = {"tasks": {t: 0.4 for t in tasks}, "average": 0.4}
    return d


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """An empty results root; tests add runs with write_run(results, ...)."""
    root = tmp_path / "results"
    root.mkdir()
    return root


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
