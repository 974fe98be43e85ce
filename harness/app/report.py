"""The report (`harness report`): read run directories (never train or evaluate) and write tables, figures and provenance.

Why this shape: loading and validation (evals/runs.py), statistics (evals/stats.py), tables (evals/tables.py) and
figures (evals/plots.py) are separate so each can be tested on hand-made runs; this module only wires them,
hands them to harness/app/report_output.py, which writes the files and prints the terminal rendering;
harness/commands/report.py holds the options. Conventions are in docs/report.md.
"""
from __future__ import annotations

import math
from pathlib import Path

from harness.app.report_output import Options, Section, render_terminal, write
from harness.core.errors import UserError
from harness.core.experience import Budget

BUDGET_CHOICES = Budget.COUNTERS


def task_suites() -> list:
    """The task suites, in registry order (evals.suites)."""
    from evals import suites

    return [s for s in (suites.get(n) for n in suites.names()) if isinstance(s, suites.TaskSuite)]


def verdict_units() -> dict[str, tuple]:
    """The metrics pairwise statements may be about (--poi-metric): name in sentences, scale, unit and decimals."""
    return {k: v for s in task_suites() for k, v in s.verdict_units.items()}


def group_suite(members):
    """The task suite of a comparison group (a group holds one task, so one suite)."""
    from evals import suites
    from evals.runs import suite_of

    return suites.get(suite_of(members[0]))


def _observations(runs, opts: Options, skipped: list, notes: list[str]) -> dict[str, tuple[dict, str]]:
    """Per run: the eval values Table 1, the P(improvement) and the final verdicts use, and where they came from."""
    from evals.runs import Skipped, budget_cut, cut_keys
    if opts.budget_metric is None:
        return {r.run_id: (r.summary["eval"], "summary.json:eval") for r in runs}
    obs, lag = {}, 0
    counter = opts.budget_metric
    for r in runs:
        spent = [m[counter] for m in r.metrics if isinstance(m.get(counter), (int, float))]
        if spent and max(spent) == 0:  # e.g. offline DPO samples no responses: "never reached" would mislead
            skipped.append(Skipped(str(r.path), f"{r.run_id}: left out of the equal-budget table: it spends no "
                                                 f"{counter} (0 over the whole run), so no cut on this axis"))
            continue
        cut, reason = budget_cut(r, counter, opts.budget)
        if cut is None:
            skipped.append(Skipped(str(r.path), f"{r.run_id}: left out of the equal-budget table: {reason}"))
            continue
        evals = [k for k in cut_keys() if k in cut]
        at = ", ".join(f"{k}@{cut[k + '_iteration']}" for k in evals)
        lag = max([lag] + [cut["iteration"] - cut[k + "_iteration"] for k in evals
                           if isinstance(cut["iteration"], int) and isinstance(cut[k + "_iteration"], int)])
        obs[r.run_id] = (cut, f"metrics.jsonl:cut at iteration {cut['iteration']} "
                              f"({counter}={cut['counter']:g}; eval iterations {at})")
    if lag:
        notes.append(f"Equal-budget cut: evaluations are periodic, so the eval values lag the cut iteration by up "
                     f"to {lag} iterations (the latest evaluation at or before it; provenance names each). A "
                     f"smaller eval.every makes the cut sharper.")
    return obs


def _primary_metric(members, obs, opts: Options) -> tuple[str, str]:
    """(metric, note) of P(improvement) and the verdicts: --poi-metric where the group's suite offers it, else the
    suite's own first metric (win_rate, the option's default, means "the suite's own"); then the suite's fallback
    (TL;DR: rm_score when no run has a win rate)."""
    suite = group_suite(members)
    default = next(iter(suite.verdict_units))
    chosen, note = opts.poi_metric, ""
    if chosen not in suite.verdict_units:
        if chosen != "win_rate":
            note = (f"--poi-metric {chosen} does not apply to the {suite.name} suite's runs: "
                    f"{suite.verdict_units[default][0]} is used.")
        chosen = default
    metric, fallback = suite.verdict_metric(chosen, members, obs)
    return metric, " ".join(n for n in (note, fallback) if n)


def _poi_tables(runs, labels, obs, opts: Options, suffix: str, notes: list[str], budget_note: str = "") -> list:
    """One P(improvement) matrix per preset between optimizers (SFT is a baseline, not an optimizer)."""
    from evals.tables import poi_table
    out = []
    for preset in sorted({r.preset for r in runs}):
        members = [r for r in runs if r.preset == preset and r.run_id in obs]
        metric, note = _primary_metric(members, obs, opts)
        if note:
            notes.append(f"{preset}: {note}")
        scores: dict[str, list[float]] = {}
        sources: dict[str, list[dict]] = {}
        for r in members:
            v = obs[r.run_id][0].get(metric)
            if isinstance(v, (int, float)):
                scores.setdefault(labels[r.row_key], []).append(float(v))
                sources.setdefault(labels[r.row_key], []).append(r.provenance(obs[r.run_id][1] + ":" + metric))
        if len(scores) < 2:
            notes.append(f"{preset}: fewer than two optimizers with {metric}: no P(improvement) matrix.")
            continue
        scores = dict(sorted(scores.items()))
        out.append(poi_table(preset, scores, sources, metric, opts.level, opts.reps, opts.seed,
                             f"poi_{_slug(preset)}{suffix}", budget_note))
    return out


def _matched_kl_tables(runs, labels, obs, opts: Options, suffix: str, notes: list[str],
                       budget_note: str = "") -> tuple[list, dict]:
    """Per preset and metric with periodic evaluations: the matched-KL table; also returns the matched values
    ({(preset, metric): MatchedValues}) for the matched verdicts."""
    from evals.matched_kl import matched_table, matched_values
    tables, matched = [], {}
    for preset in sorted({r.preset for r in runs}):
        members = [r for r in runs if r.preset == preset and r.run_id in obs]
        for metric, header, scale, decimals in (m for suite in task_suites() for m in suite.matched_metrics):
            mv = matched_values(members, metric, opts.budget_metric, opts.budget)
            if mv is None:
                continue
            if not mv.values:
                notes += [f"{preset}: no matched-KL table for {metric}: {n}" for n in mv.notes]
                continue
            matched[(preset, metric)] = mv
            tables.append(matched_table(preset, members, labels, mv, header, scale, decimals, opts.level,
                                        opts.reps, opts.seed, f"matched_kl_{_slug(metric)}_{_slug(preset)}{suffix}",
                                        budget_note))
    if runs and not matched:
        notes.append("No matched-KL tables: no run logged periodic evaluations (eval/kl with eval/* in "
                     "metrics.jsonl); set eval.every so each run evaluates several times.")
    return tables, matched


def _verdict_tables(runs, labels, obs, matched: dict, opts: Options, suffix: str, budget_note: str = "",
                    matched_note: str = "") -> list:
    """Per preset, pairwise verdicts on the primary metric twice: its final (or equal-budget) value, the one
    Table 1 shows, and its mean over the common KL range, the matched-KL comparison."""
    from evals.verdicts import verdict_table
    out = []
    for preset in sorted({r.preset for r in runs}):
        members = [r for r in runs if r.preset == preset and r.run_id in obs]
        metric = _primary_metric(members, obs, opts)[0]
        what, scale, unit, decimals = verdict_units()[metric]
        mv = matched.get((preset, metric))
        families = [("final", "at the equal-budget cut" if opts.budget_metric else "final evaluation",
                     lambda r: obs[r.run_id][0].get(metric), lambda r: obs[r.run_id][1] + ":" + metric, budget_note)]
        if mv is not None:
            families.append(("matched_kl", f"mean over KL {mv.low:.3g}-{mv.high:.3g}",
                             lambda r: mv.values.get(r.run_id, {}).get("area"),
                             lambda r: mv.sources[r.run_id] + ":area", matched_note))
        for key, when, value, source, note in families:
            scores: dict[str, dict] = {}
            sources: dict[str, list[dict]] = {}
            for r in members:
                v = value(r)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    scores.setdefault(labels[r.row_key], {})[r.seed] = float(v) * scale
                    sources.setdefault(labels[r.row_key], []).append(r.provenance(source(r)))
            if opts.verdict_pairs:
                missing = sorted({x for pair in opts.verdict_pairs for x in pair} - set(scores))
                if missing:
                    raise UserError(f"--verdict-pairs: no row {'; '.join(missing)} in preset {preset}; its rows "
                                    f"are {'; '.join(sorted(scores))}")
                note = (f"Family fixed with --verdict-pairs: only these {len(opts.verdict_pairs)} pairs are tested "
                        f"and corrected for. " + note).strip()
            if opts.verdict_family:
                missing = sorted(set(opts.verdict_family) - set(scores))
                if missing:
                    raise UserError(f"--verdict-family: no row {', '.join(missing)} in preset {preset}; its rows "
                                    f"are {', '.join(sorted(scores))}")
                scores = {k: v for k, v in scores.items() if k in opts.verdict_family}
                note = (f"Family chosen with --verdict-family: only the pairs among {', '.join(sorted(scores))} "
                        f"are tested and corrected for. " + note).strip()
            if len(scores) >= 2:
                out.append(verdict_table(preset, dict(sorted(scores.items())), sources, f"{what}, {when}", unit,
                                         decimals, opts.level, opts.reps, opts.seed,
                                         f"verdicts_{key}_{_slug(preset)}{suffix}", note, opts.test,
                                         opts.verdict_pairs))
    return out


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """A YAML list of [row label, row label] pairs: the family of verdicts fixed before the runs."""
    from harness.core.errors import read_yaml
    data = read_yaml(path, "verdict pairs file")
    if not isinstance(data, list) or not data or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) and p[0] != p[1] for p in data):
        raise UserError(f"{path}: a verdict pairs file is a YAML list of two different row labels each, e.g. "
                        f"- [rebel, ppo]")
    return list(dict.fromkeys(tuple(sorted(p)) for p in data))  # a pair listed twice, in either order, counts once


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in s)


def build(paths: list[Path], opts: Options) -> tuple[list[Section], list, list[str]]:
    """All sections of the report, the skipped runs/files and general notes. Raises UserError when nothing is
    usable; never raises on a bad run (it is listed as skipped)."""
    from evals import plots, tables
    from evals.runs import comparison_groups, group_difference, load_runs, row_labels
    runs, skipped = load_runs(paths)
    notes = [n for r in runs for n in r.notes]
    if not runs:
        return [], skipped, notes
    if opts.budget_metric and not any(isinstance(m.get(opts.budget_metric), (int, float))
                                      for r in runs for m in r.metrics):
        raise UserError(f"--budget-metric {opts.budget_metric}: no run's metrics.jsonl logs this counter "
                        f"(runs written before it was counted); choose another of {', '.join(BUDGET_CHOICES)}")
    groups = comparison_groups(runs)
    if len(groups) > 1:
        notes.append(group_difference(groups))
    sections = []
    budget_note = (f"Equal-budget cut: {opts.budget_metric} <= {opts.budget:g}; each run's last iteration within "
                   f"the budget and its latest eval/* values at or before it (metrics.jsonl)."
                   if opts.budget_metric else "")
    matched_note = (f"Equal-budget cut: {opts.budget_metric} <= {opts.budget:g}; trajectories hold only the "
                    f"evaluations logged within the budget (metrics.jsonl)." if opts.budget_metric else "")
    for i, (key, members) in enumerate(groups):
        suffix = f"_g{i + 1}" if len(groups) > 1 else ""
        heading = ", ".join(f"{k}={v}" for k, v in key.items())
        sec = Section(f"Group {i + 1}: {heading}" if len(groups) > 1 else f"Comparison: {heading}")
        labels = row_labels(members)
        obs = _observations(members, opts, skipped, sec.notes)
        suite = group_suite(members)  # its Table 1: TL;DR's win rate and RM score, a math task's pass@k, ...
        own = suite.main_table(members, labels, obs, key, opts, suffix, budget_note, sec.notes)
        table, obs = own or (tables.metric_table(suite, members, labels, obs, str(key.get("task")), opts.level,
                                                 opts.reps, opts.seed, suite.name + suffix, budget_note), obs)
        sec.tables.append(table)
        sec.tables += _suite_tables(members, labels, opts, suffix, sec.notes, quiet=not suite.model_suite_tables)
        matched_tables, matched = _matched_kl_tables(members, labels, obs, opts, suffix, sec.notes, matched_note)
        sec.tables += matched_tables
        sec.tables += _poi_tables(members, labels, obs, opts, suffix, sec.notes, budget_note)
        sec.tables += _verdict_tables(members, labels, obs, matched, opts, suffix, budget_note, matched_note)
        if opts.plots:
            sec.figures = [_safe(*figure) for figure in suite.figures(members, labels, opts, suffix)]
        sections.append(sec)
    if opts.plots:
        bench_file = opts.bench or _bench_default(paths)
        sections[0].figures.append(_safe(plots.bench, bench_file, opts.out / "plots" / "bench.png"))
    return sections, skipped, notes


def _suite_tables(members, labels, opts: Options, suffix: str, notes: list[str], quiet: bool = False) -> list:
    """The model suites' report tables (Tables 2 and 6 from evals/chat.json and evals/open_llm.json); `quiet`: no
    note when absent (a group whose suite does not expect them)."""
    from evals import suites, tables
    out = []
    for name, title, metrics in (t for suite in suites.model_suites() for t in suite.report_tables()):
        t = tables.suite_table(members, labels, metrics, name + suffix, title, opts.level, opts.reps, opts.seed)
        if t is None:
            if not quiet:
                notes.append(f"{title} skipped: no run has the evals/*.json files it reads.")
            continue
        if opts.budget_metric:
            t.caption += (f" Not cut at {opts.budget_metric} <= {opts.budget:g}: evals/*.json evaluate "
                          f"each run's final policy.")
        out.append(t)
    return out


def _safe(fn, *args):
    """A figure that fails on unexpected data becomes a note: the tables are the report, figures are extras."""
    from evals.plots import Figure
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported in the report, not swallowed
        import matplotlib.pyplot as plt
        plt.close("all")
        return Figure(fn.__name__, None, f"Figure {fn.__name__} failed: {type(e).__name__}: {e}")


def _bench_default(paths: list[Path]) -> Path | None:
    for p in paths:
        if (Path(p) / "bench" / "bench.json").is_file():
            return Path(p) / "bench" / "bench.json"
    return None


def report(paths: list[Path] | None, out: Path | None = None, budget_metric: str | None = None,
           budget: float | None = None, level: float = 0.95, poi_metric: str = "win_rate", x_metric: str = "prompts",
           bench: Path | None = None, reps: int = 2000, seed: int = 0, no_plots: bool = False,
           test: str = "sign-flip", verdict_family: list[str] | None = None,
           verdict_pairs: Path | None = None) -> None:
    """`harness report`: check the options, build the sections, write the files, print the terminal rendering."""
    inputs = [Path(p) for p in (paths or [Path("results")])]
    for p in inputs:
        if not p.is_dir():
            raise UserError(f"{p} is not a directory: pass run directories or a results root")
    if (budget_metric is None) != (budget is None):
        raise UserError("--budget-metric and --budget go together: give both, or neither")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UserError(f"--budget must be a positive number of {budget_metric} (the equal-budget cut), not {budget:g}")
    from evals.compare import TESTS
    poi_metric = poi_metric.replace("_at_", "@")  # pass_at_1 spells pass@1 without a shell-unfriendly character
    for name, value, choices in (("--budget-metric", budget_metric, BUDGET_CHOICES),
                                 ("--x-metric", x_metric, BUDGET_CHOICES),
                                 ("--poi-metric", poi_metric, tuple(verdict_units())),
                                 ("--test", test, TESTS)):
        if value is not None and value not in choices:
            raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    if not 0 < level < 1:
        raise UserError(f"--level must be between 0 and 1 (e.g. 0.95), not {level}")
    if reps < 10:
        raise UserError("--reps must be at least 10")
    from harness.core.store import is_run_dir
    default_out = inputs[0] / "report" if len(inputs) == 1 and not is_run_dir(inputs[0]) else Path("report")
    family = [f.strip() for f in verdict_family or [] if f.strip()]
    if verdict_family is not None and len(set(family)) < 2:
        raise UserError("--verdict-family needs at least two row labels, comma-separated (e.g. rebel,ppo,rloo)")
    if verdict_pairs is not None and family:
        raise UserError("--verdict-pairs and --verdict-family both choose the family: pass one of them")
    opts = Options(out or default_out, budget_metric, budget, level, poi_metric, x_metric, bench, reps, seed,
                   not no_plots, test, family or None, read_pairs(verdict_pairs) if verdict_pairs else None)
    if bench is not None and not bench.is_file():
        raise UserError(f"--bench {bench} does not exist: pass the JSON written by `harness bench`")
    sections, skipped, notes = build(inputs, opts)
    if not sections:
        render_terminal([], skipped, notes, None)
        where = ", ".join(str(p) for p in inputs)
        if skipped:
            raise UserError(f"none of the {len(skipped)} runs under {where} is usable (reasons above)")
        raise UserError(f"no run directories under {where}: pass a results root or run directories "
                        f"(each with summary.json, config.json and metrics.jsonl)")
    write(sections, skipped, notes, opts, inputs)
    render_terminal(sections, skipped, notes, opts.out)
