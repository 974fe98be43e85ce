"""`harness report`: the options; the report itself is harness/app/report.py."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.core.experience import Budget

BUDGET_CHOICES = Budget.COUNTERS


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        paths: Optional[list[Path]] = typer.Argument(None, help="Run directories or a results root "
                                                                "(default: results/)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Report directory (default: <results root>/report, "
                                                               "or ./report for several inputs)."),
        budget_metric: Optional[str] = typer.Option(None, "--budget-metric",
                                                    help=f"Equal-budget counter: {'|'.join(BUDGET_CHOICES)}; "
                                                         "the TL;DR tables are cut there, captions say so."),
        budget: Optional[float] = typer.Option(None, "--budget", help="Budget value for --budget-metric."),
        level: float = typer.Option(0.95, "--level", help="Confidence level of CIs and significance statements."),
        poi_metric: str = typer.Option("win_rate", "--poi-metric", help="win_rate|rm_score (TL;DR), "
                                     "pass@1|pass@4|pass@8|greedy_pass@1 (math tasks) for P(improvement) and the "
                                     "pairwise verdicts."),
        x_metric: str = typer.Option("prompts", "--x-metric", help="Budget counter on the learning curves' x axis."),
        bench: Optional[Path] = typer.Option(None, "--bench", help="harness bench JSON (default: "
                                                                   "<results root>/bench/bench.json)."),
        reps: int = typer.Option(2000, "--reps", help="Bootstrap resamples."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
        no_plots: bool = typer.Option(False, "--no-plots", help="Tables only."),
        test: str = typer.Option("sign-flip", "--test", help="Pairwise test: sign-flip (exact, no assumption; "
                                 "needs >= 11 seeds to pass Holm over 36 pairs) or t (paired t-test: assumes "
                                 "normal per-seed differences, no seed floor)."),
        verdict_family: Optional[str] = typer.Option(None, "--verdict-family", help="Comma-separated row labels "
                                                     "(e.g. rebel,ppo,rloo): the verdicts test only the pairs among "
                                                     "them, so Holm corrects over fewer pairs. Choose it before "
                                                     "looking at the results."),
        verdict_pairs: Optional[Path] = typer.Option(None, "--verdict-pairs", help="YAML list of [row label, row "
                                                     "label] pairs: the verdicts test exactly these pairs (e.g. each "
                                                     "optimizer against its own variant), Holm over them. Write it "
                                                     "before the runs (results/off_policy/verdict_pairs.yaml)."),
    ) -> None:
        """Tables (Markdown, CSV, LaTeX, HTML), figures and provenance from finished run directories."""
        from harness.app.report import report as make_report

        make_report(paths, out, budget_metric, budget, level, poi_metric, x_metric, bench, reps, seed, no_plots,
                    test, verdict_family.split(",") if verdict_family else None, verdict_pairs)
