"""The math table of `harness report`: runs of a task with a checker (arith, gsm8k, math), whose evaluation is the math
suite's (evals/math.py: pass@k, greedy pass@1, KL, response length, no-answer share) instead of TL;DR's.

Why a module of its own: the rows, the seeds, the IQM and its bootstrap CI, the marks and the provenance are
Table 1's (evals/tables.py builds them); only the columns, the caption and where a run's values come from differ.
A run writes its math numbers twice, identically: summary.json `eval` and evals/<task>.json. `harness eval RUN
--suite math` rewrites the file, so the file is read when it is there and the report says when it differs from the
summary (a re-evaluation).
"""
from __future__ import annotations

from evals.runs import Run, suite_file
from evals.tables import Metric, Row, Table, field_getter, few_seeds_note, numeric_table, sft_and_optimizer_rows

# pass@k is ranked (higher is better); KL, length and the no-answer share are what a policy paid or how it answers,
# not better or worse per se, so they are not ranked
MATH_METRICS = [Metric("pass@1", "pass@1 (%)", field_getter("pass@1"), 100, 1),
                Metric("pass@4", "pass@4 (%)", field_getter("pass@4"), 100, 1),
                Metric("pass@8", "pass@8 (%)", field_getter("pass@8"), 100, 1),
                Metric("greedy_pass@1", "Greedy pass@1 (%)", field_getter("greedy_pass@1"), 100, 1),
                Metric("kl", "KL(π‖π_ref)", field_getter("kl"), 1, 2, None),
                Metric("response_length", "Length (tokens)", field_getter("response_length"), 1, 1, None),
                Metric("no_answer_frac", "No answer (%)", field_getter("no_answer_frac"), 100, 1, None)]
SETTINGS = ("n", "samples_per_problem", "temperature")  # what makes two evaluations comparable


def math_observations(runs: list[Run], observations: dict[str, tuple[dict, str]],
                      notes: list[str]) -> dict[str, tuple[dict, str]]:
    """Final values (no equal-budget cut): each run's evals/<task>.json in place of its summary's eval block when
    the file is there; a note names the runs whose file holds another evaluation than the summary."""
    out, rewritten = dict(observations), []
    for r in runs:
        values = r.evals.get("math")
        if r.run_id not in observations or values is None:
            continue
        out[r.run_id] = (values, suite_file(r))
        if any(values.get(m.key) != r.summary["eval"].get(m.key) for m in MATH_METRICS):
            rewritten.append(r.run_id)
    if rewritten:  # one task per group, so one file name
        notes.append(f"{', '.join(rewritten)}: {suite_file(runs[0])} differs from summary.json eval (re-evaluated "
                     f"with `harness eval RUN --suite math`); the tables use the file.")
    return out


def _settings_text(preset_rows: dict[str, list[Row]]) -> str:
    """One clause on the evaluation behind the cells: the problems, samples and temperature when every cell
    shares them, else each setting with the rows that used it (cells evaluated differently are not comparable)."""
    used: dict[tuple, list[str]] = {}
    for preset, rows in preset_rows.items():
        for label, obs in rows:
            for values, _ in obs:
                key = tuple(values.get(k) for k in SETTINGS)
                if key != (None,) * len(SETTINGS) and f"{preset}/{label}" not in used.setdefault(key, []):
                    used[key].append(f"{preset}/{label}")

    def describe(key: tuple) -> str:
        n, samples, temperature = (f"{v:g}" if isinstance(v, (int, float)) else "?" for v in key)
        return f"{n} held-out problems x {samples} samples at temperature {temperature}"

    if not used:
        return ""
    if len(used) == 1:
        return f" Evaluated on {describe(next(iter(used)))} (greedy: one argmax response per problem)."
    parts = "; ".join(f"{describe(k)} ({', '.join(rows)})" for k, rows in used.items())
    return f" The cells were NOT evaluated alike, compare with care: {parts}."


def math_table(runs: list[Run], labels: dict, observations: dict[str, tuple[dict, str]], task: str, level: float,
               reps: int, seed: int, name: str, budget_note: str = "") -> Table:
    """The math counterpart of Table 1: SFT row and one row per preset x algorithm, each metric as mean (std) and
    IQM [CI] across seeds, from `observations` (run_id -> (values, source))."""
    preset_rows = sft_and_optimizer_rows(runs, labels, observations)
    caption = (f"Task {task}, scored by its exact-match checker. pass@k: Chen et al.'s unbiased estimator over the "
               f"samples of each problem (pass@1: mean correctness); greedy pass@1: one argmax response per "
               f"problem; KL(π‖π_ref): masked sequence sum of log π - log π_ref over the samples; length: mean "
               f"tokens per sampled response; no answer: share of sampled responses with no number to check. "
               f"Each cell: mean (standard deviation, ddof=1) across seeds; n = seeds. IQM: interquartile mean with "
               f"a {level:.0%} stratified-bootstrap percentile CI (rliable, {reps} resamples, seed {seed}). Bold: "
               f"best, underlined: second best per preset and column among all rows including SFT, for pass@k and "
               f"greedy pass@1 only (higher is better); KL, length and no-answer share are not ranked. The SFT row "
               f"is the SFT policy evaluated inside each run (summary `sft` block), averaged per seed.")
    caption += _settings_text(preset_rows) + few_seeds_note(preset_rows)
    caption += (" " + budget_note if budget_note else
                f" Values are each run's final evaluation (evals/{task}.json, else summary.json).")
    return numeric_table(name, f"{task}: pass@k with the exact-match checker", caption, preset_rows, MATH_METRICS,
                         True, level, reps, seed)
