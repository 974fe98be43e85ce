"""Result tables of `harness report`: built from loaded runs, rendered as Markdown, CSV, LaTeX and HTML.

Why a cell carries its sources: every printed number must be traceable to the runs it pools (run id, config_hash,
code_version, and the file and field it came from); report.py writes them out as provenance.json / .csv.
A cell never pools runs from different rows (preset x algorithm x algorithm_config) and a table never mixes
comparison groups (evals/runs.py decides both).
"""
from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field
from typing import Callable

from evals import stats
from evals.runs import Run


@dataclass
class Cell:
    text: str
    mark: str = ""  # "best" (bold) | "second" (underlined) | ""
    sources: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str
    label_columns: int = 2
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    """One numeric column: where its value lives, how it is scaled and shown, whether higher is better
    (None: not ranked, e.g. KL, where lower is not better per se)."""
    key: str
    header: str
    get: Callable[[dict], float | None]
    scale: float = 1.0
    decimals: int = 2
    higher_is_better: bool | None = True


def field_getter(*path: str) -> Callable[[dict], float | None]:
    """A reader of one number at `path` in a summary dict (None when absent or not a number)."""
    def get(d: dict) -> float | None:
        for p in path:
            d = d.get(p) if isinstance(d, dict) else None
        return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None
    return get


TLDR_METRICS = [Metric("win_rate", "Win rate (%)", field_getter("win_rate"), 100, 1),
                Metric("rm_score", "RM score", field_getter("rm_score"), 1, 2),
                Metric("kl", "KL(π‖π_ref)", field_getter("kl"), 1, 1, None)]


def _open_llm_average(d: dict) -> float | None:
    """Mean of the six tasks when all are present (computed, not trusted), else the file's own average."""
    tasks = [field_getter("open_llm", "tasks", t)(d) for t in OPEN_LLM_TASKS]
    if all(v is not None for v in tasks):
        return sum(tasks) / len(tasks)
    return field_getter("open_llm", "average")(d)


OPEN_LLM_TASKS = ("mmlu", "gsm8k", "arc_challenge", "winogrande", "truthfulqa_mc2", "hellaswag")
CHAT_METRICS = [Metric("mmlu", "MMLU", field_getter("open_llm", "tasks", "mmlu"), 100, 1),
                Metric("mt1", "MT-Bench turn 1", field_getter("chat", "mt_bench", "turn_1"), 1, 2),
                Metric("mt2", "MT-Bench turn 2", field_getter("chat", "mt_bench", "turn_2"), 1, 2),
                Metric("mt_avg", "MT-Bench avg", field_getter("chat", "mt_bench", "average"), 1, 2),
                Metric("lc", "AlpacaEval LC (%)", field_getter("chat", "alpaca_eval", "lc_win_rate"), 100, 1),
                Metric("wr", "AlpacaEval WR (%)", field_getter("chat", "alpaca_eval", "win_rate"), 100, 1)]
OPEN_LLM_METRICS = [Metric(t, h, field_getter("open_llm", "tasks", t), 100, 1) for t, h in
                    zip(OPEN_LLM_TASKS, ("MMLU", "GSM8K", "ARC", "Winogrande", "TruthfulQA", "HellaSwag"))] + [
                    Metric("average", "Average", _open_llm_average, 100, 1)]


# ---------------------------------------------------------------------------------------------------------------
# rows: (label, [(observation dict, provenance dict)]) where an observation holds one seed's metric values

Row = tuple[str, list[tuple[dict, dict]]]


def _per_seed_baseline(runs: list[Run], block: Callable[[Run], dict | None], source: str) -> list[tuple[dict, dict]]:
    """A baseline (SFT, base model) is evaluated inside every run; runs of one seed evaluate the same policy on
    the same prompts, so they are averaged per seed and n counts seeds, not the runs that repeated it."""
    by_seed: dict[str, list[tuple[dict, Run]]] = {}
    for run in runs:
        b = block(run)
        if isinstance(b, dict):
            by_seed.setdefault(str(run.seed), []).append((b, run))
    out = []
    for _, items in sorted(by_seed.items()):
        merged = _average_dicts([b for b, _ in items])
        out.append((merged, {"runs": [r.provenance(source) for _, r in items]}))
    return out


def _average_dicts(ds: list[dict]) -> dict:
    """Leaf-wise mean of nested dicts of numbers (non-numeric leaves keep the first value)."""
    out: dict = {}
    for k in ds[0]:
        vals = [d.get(k) for d in ds]
        if all(isinstance(v, dict) for v in vals):
            out[k] = _average_dicts(vals)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = sum(vals) / len(vals)
        else:
            out[k] = vals[0]
    return out


def _fmt(x: float, d: int, sign: bool = False) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:+.{d}f}" if sign else f"{x:.{d}f}"


def numeric_table(name: str, title: str, caption: str, preset_rows: dict[str, list[Row]],
                   metrics: list[Metric], with_iqm: bool, level: float, reps: int, seed: int,
                   baseline_label: str | None = None) -> Table:
    """Shared body of Tables 1, 2, 6 and the matched-KL tables: per row and metric, mean (std) across seeds,
    optional IQM [CI], optional difference to a baseline row of the same preset; marks per preset and column."""
    pct = f"{level:.0%}"
    columns = ["Preset", "Algorithm", "n"]
    for m in metrics:
        columns += [m.header] + ([f"{m.header} IQM [{pct} CI]"] if with_iqm else [])
    table_rows = []
    for preset, rows in sorted(preset_rows.items()):
        base = dict(rows).get(baseline_label) if baseline_label else None
        block = []
        for label, obs in rows:
            cells = [Cell(preset), Cell(label), Cell(str(len(obs)))]
            for m in metrics:
                vals = [m.get(o) for o, _ in obs]
                vals = [v * m.scale if v is not None else None for v in vals]
                mean, std, n = stats.mean_std(vals)
                srcs = [dict(p, source=p["source"] + ":" + m.key) for o, prov in obs if m.get(o) is not None
                        for p in prov["runs"]]
                text = _fmt(mean, m.decimals) + (f" ({_fmt(std, m.decimals)})" if n > 1 else "")
                st = {"mean": mean, "std": std, "n": n}
                if base is not None and label != baseline_label:
                    bmean = stats.mean_std([m.get(o) * m.scale for o, _ in base if m.get(o) is not None])[0]
                    if not math.isnan(bmean) and not math.isnan(mean):
                        st["diff_to_base"] = mean - bmean
                        text = _fmt(mean, m.decimals) + f" ({_fmt(mean - bmean, m.decimals, sign=True)})"
                cells.append(Cell(text if n else "–", sources=srcs, stats=st))
                if with_iqm:
                    q, lo, hi = stats.iqm_ci(vals, level, reps, seed)
                    ci = f"[{_fmt(lo, m.decimals)}, {_fmt(hi, m.decimals)}]" if n > 1 else "[n/a: 1 seed]"
                    cells.append(Cell(f"{_fmt(q, m.decimals)} {ci}" if n else "–", sources=srcs,
                                      stats={"iqm": q, "ci_low": lo, "ci_high": hi, "n": n}))
            block.append(cells)
        col = 3
        for m in metrics:
            if m.higher_is_better is not None:
                marks = stats.rank_marks([r[col].stats.get("mean") for r in block], m.decimals, m.higher_is_better)
                for r, mark in zip(block, marks):
                    r[col].mark = mark
            col += 2 if with_iqm else 1
        table_rows += block
    return Table(name, title, columns, table_rows, caption)


def sft_and_optimizer_rows(runs: list[Run], labels: dict,
                           observations: dict[str, tuple[dict, str]]) -> dict[str, list[Row]]:
    """Per preset: the SFT row (each run's summary `sft` block, averaged per seed), then one row per optimizer
    row label with one observation per run (`observations`: run_id -> (values, the source they came from))."""
    preset_rows: dict[str, list[Row]] = {}
    for preset in sorted({r.preset for r in runs}):
        members = [r for r in runs if r.preset == preset]
        rows: list[Row] = []
        sft = _per_seed_baseline(members, lambda r: r.summary.get("sft"), "summary.json:sft")
        if sft:
            rows.append(("SFT", sft))
        by_row: dict[str, list[tuple[dict, dict]]] = {}
        for r in members:
            if r.run_id in observations:
                obs, source = observations[r.run_id]
                by_row.setdefault(labels[r.row_key], []).append((obs, {"runs": [r.provenance(source)]}))
        rows += sorted(by_row.items())
        preset_rows[preset] = rows
    return preset_rows


def few_seeds_note(preset_rows: dict[str, list[Row]]) -> str:
    """The caption's warning when no row has the 4 seeds an IQM needs to trim anything."""
    n_max = max((len(o) for rows in preset_rows.values() for _, o in rows), default=0)
    if n_max >= 4:
        return ""
    return (f" With at most {n_max} seeds per row the IQM trims nothing and equals the mean, and the CI is "
            f"about [min, max] of the seeds: read it as their spread, not a population interval.")


def table1(runs: list[Run], labels: dict, observations: dict[str, tuple[dict, str]], judge: str,
           level: float, reps: int, seed: int, name: str = "table1", budget_note: str = "") -> Table:
    """Table 1 (TL;DR): SFT row and one row per preset x algorithm; `observations` maps run_id to the run's
    eval dict and the source it came from (summary.json or an equal-budget cut of metrics.jsonl)."""
    preset_rows = sft_and_optimizer_rows(runs, labels, observations)
    caption = (f"Each cell: mean (standard deviation, ddof=1) across seeds; n = seeds. IQM: interquartile mean with "
               f"a {level:.0%} stratified-bootstrap percentile CI (rliable, {reps} resamples, seed {seed}). "
               f"Win rate judged by {judge}. Bold: best, underlined: second best per preset and column, among all "
               f"rows including SFT (higher is better for win rate and RM score). KL is not ranked: a lower KL is "
               f"not better per se, it is what the policy paid for its reward. The SFT row is the SFT policy "
               f"evaluated inside each run (summary `sft` block), averaged per seed.")
    caption += few_seeds_note(preset_rows)
    caption += " " + budget_note if budget_note else " Values are each run's final evaluation (summary.json)."
    return numeric_table(name, "Table 1: TL;DR summarization", caption, preset_rows, TLDR_METRICS, True,
                          level, reps, seed)


def suite_table(runs: list[Run], labels: dict, metrics: list[Metric], name: str, title: str,
                level: float, reps: int, seed: int) -> Table | None:
    """Tables 2 (chat) and 6 (Open LLM): from evals/chat.json and evals/open_llm.json; a `base` block in those
    files (the starting model on the same suite) becomes the Base row and the reference of the differences."""
    preset_rows: dict[str, list[Row]] = {}
    for preset in sorted({r.preset for r in runs}):
        members = [r for r in runs if r.preset == preset and any(m.get(r.evals) is not None for m in metrics)]
        if not members:
            continue
        base = _per_seed_baseline(members, lambda r: {s: d["base"] for s, d in r.evals.items()
                                                      if isinstance(d.get("base"), dict)} or None,
                                  "evals/*.json:base")
        rows: list[Row] = [("Base", base)] if base else []
        by_row: dict[str, list[tuple[dict, dict]]] = {}
        for r in members:
            by_row.setdefault(labels[r.row_key], []).append((r.evals, {"runs": [r.provenance("evals/*.json")]}))
        preset_rows[preset] = rows + sorted(by_row.items())
    if not preset_rows:
        return None
    caption = ("Each cell: mean across seeds (n), in parentheses the difference to the Base row of the same preset "
               "(the starting model evaluated on the same suite, the `base` block of the suite files); without a "
               "Base row the parenthesis is the standard deviation across seeds. Accuracies and win rates in %. "
               "The Base row shows mean (standard deviation). Bold: best, underlined: second best per preset and column (higher is better).")
    return numeric_table(name, title, caption, preset_rows, metrics, False, level, reps, seed, "Base")


def poi_table(preset: str, scores: dict[str, list[float]], sources: dict[str, list[dict]], metric: str,
              level: float, reps: int, seed: int, name: str, budget_note: str = "") -> Table:
    """P(row > column) between optimizers of one preset on one metric, and a plain sentence per pair."""
    names = list(scores)
    pm = stats.poi_matrix(scores, level, reps, seed)
    rows, notes = [], []
    for a in names:
        cells = [Cell(a)]
        for b in names:
            if a == b:
                cells.append(Cell("–"))
                continue
            p, lo, hi = pm[(a, b)]
            ci = f"[{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else "[n/a]"
            cells.append(Cell(f"{p:.2f} {ci}", sources=sources[a] + sources[b],
                              stats={"p": p, "ci_low": lo, "ci_high": hi}))
        rows.append(cells)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p, lo, hi = pm[(a, b)]
            sig = stats.significant(lo, hi)
            head = f"{a} vs {b}: P({a} > {b}) = {p:.2f}"
            if sig is None:
                notes.append(f"{head}; not testable: one side has a single seed.")
            elif sig:
                notes.append(f"{head} [{lo:.2f}, {hi:.2f}]: the seeds order these two (the {level:.0%} CI excludes "
                             f"0.5; uncorrected: whether the difference is significant is the pairwise verdicts' call).")
            else:
                notes.append(f"{head} [{lo:.2f}, {hi:.2f}]: the seeds do not order these two (the {level:.0%} CI "
                             f"contains 0.5).")
    caption = (f"Probability of improvement P(row > column) on {metric} across seeds (rliable; ties count one half), "
               f"with a {level:.0%} stratified-bootstrap CI ({reps} resamples, seed {seed}). Preset {preset}. "
               f"One CI per pair with no multiple-comparison correction: it says how often one side's seeds beat the "
               f"other's, not whether the difference is significant; the pairwise verdicts (Holm-corrected) say that.")
    if min(len(v) for v in scores.values()) < 5:
        caption += (" With fewer than 5 seeds per side the percentile CI is optimistic: when every seed of one side "
                    "beats every seed of the other it collapses to a single point, although e.g. 3 vs 3 seeds can "
                    "never give an exact two-sided Mann-Whitney p below 0.1. More seeds make these statements firm.")
    if budget_note:
        caption += " " + budget_note
    return Table(name, f"Probability of improvement ({preset}, {metric})", ["P(row > column)"] + names, rows,
                 caption, label_columns=1, notes=notes)


# ---------------------------------------------------------------------------------------------------------------
# renderers

def to_markdown(t: Table) -> str:
    def cell(c: Cell) -> str:
        s = c.text.replace("|", "\\|")
        return f"**{s}**" if c.mark == "best" else f"<u>{s}</u>" if c.mark == "second" else s
    lines = [f"### {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    lines += ["", f"*{t.caption}*"] + ([""] + [f"- {n}" for n in t.notes] if t.notes else [])
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(t.columns)
    w.writerows([[c.text for c in row] for row in t.rows])
    return buf.getvalue()


_LATEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\~{}",
          "^": r"\^{}", "\\": r"\textbackslash{}", "π": r"$\pi$", "‖": r"$\|$", "–": "--", ">": r"$>$"}


def _tex(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    def cell(c: Cell) -> str:
        s = _tex(c.text)
        return rf"\textbf{{{s}}}" if c.mark == "best" else rf"\underline{{{s}}}" if c.mark == "second" else s
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * t.label_columns + "r" * (len(t.columns) - t.label_columns) + "}",
             r"\toprule", " & ".join(_tex(c) for c in t.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in t.rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(t.title)}. {_tex(t.caption)}}}",
              rf"\label{{tab:{t.name}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(t: Table) -> str:
    def cell(c: Cell) -> str:
        s = html.escape(c.text)
        s = f"<b>{s}</b>" if c.mark == "best" else f"<u>{s}</u>" if c.mark == "second" else s
        runs = ", ".join(sorted({p["run_id"] for p in c.sources}))
        return f'<td title="runs: {html.escape(runs)}">{s}</td>' if runs else f"<td>{s}</td>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in t.rows)
    notes = "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>" if t.notes else ""
    return (f"<h3>{html.escape(t.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f"<caption>{html.escape(t.caption)}</caption></table>{notes}")


def metric_table(suite, runs: list[Run], labels: dict, observations: dict[str, tuple[dict, str]], task: str,
                 level: float, reps: int, seed: int, name: str, budget_note: str = "") -> Table:
    """Table 1 of a suite that brings none of its own: one column per metric key (its rates ranked, higher is
    better; the rest not ranked), SFT and optimizer rows as Table 1's."""
    metrics = [Metric(k, k.replace("_", " "), field_getter(k), 1.0, 3, True if k in suite.rate_keys else None)
               for k in suite.metric_keys]
    rows = sft_and_optimizer_rows(runs, labels, observations)
    caption = (f"The {suite.name} suite's metrics. Each cell: mean (standard deviation, ddof=1) across seeds; n = "
               f"seeds. IQM: interquartile mean with a {level:.0%} stratified-bootstrap percentile CI (rliable, {reps} "
               f"resamples, seed {seed}).") + few_seeds_note(rows)
    caption += " " + budget_note if budget_note else " Values are each run's final evaluation (summary.json)."
    return numeric_table(name, f"{task}: {suite.summary}", caption, rows, metrics, True, level, reps, seed)
