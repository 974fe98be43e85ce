"""Writing and printing a built report: report.md, report.html, tables/ (CSV, LaTeX), provenance.json/.csv and the
terminal rendering. harness/app/report.py builds the sections; this module only turns them into files and text."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Options:
    out: Path
    budget_metric: str | None = None
    budget: float | None = None
    level: float = 0.95
    poi_metric: str = "win_rate"
    x_metric: str = "prompts"
    bench: Path | None = None
    reps: int = 2000
    seed: int = 0
    plots: bool = True
    test: str = "sign-flip"  # the pairwise verdicts' test (evals.compare.TESTS)
    verdict_family: list[str] | None = None  # row labels whose pairs the verdicts test; None = every row
    verdict_pairs: list[tuple[str, str]] | None = None  # or exactly these pairs of row labels (pre-registered)


@dataclass
class Section:
    """One comparison group: its tables, figures and notes."""
    heading: str
    tables: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def provenance(sections: list[Section]) -> list[dict]:
    """Every numeric cell with the runs it pools (run id, config_hash, code_version, file and field)."""
    cells = []
    for sec in sections:
        for t in sec.tables:
            for row in t.rows:
                label = " / ".join(c.text for c in row[:t.label_columns])
                for col, c in zip(t.columns[t.label_columns:], row[t.label_columns:]):
                    if c.sources:
                        cells.append({"table": t.name, "row": label, "column": col, "text": c.text,
                                      "mark": c.mark, "stats": c.stats, "runs": c.sources})
    return _nan_to_none(cells)


def write(sections: list[Section], skipped: list, notes: list[str], opts: Options, inputs: list[Path]) -> None:
    from evals import tables
    out = opts.out
    (out / "tables").mkdir(parents=True, exist_ok=True)
    md = ["# harness report", "", f"Inputs: {', '.join(str(p) for p in inputs)}", ""]
    page = [f"<h1>harness report</h1><p>Inputs: {html.escape(', '.join(str(p) for p in inputs))}</p>"]
    for sec in sections:
        md += [f"## {sec.heading}", ""]
        page.append(f"<h2>{html.escape(sec.heading)}</h2>")
        for t in sec.tables:
            (out / "tables" / f"{t.name}.csv").write_text(tables.to_csv(t), encoding="utf-8")
            (out / "tables" / f"{t.name}.tex").write_text(tables.to_latex(t), encoding="utf-8")
            md.append(tables.to_markdown(t))
            page.append(tables.to_html(t))
        for f in sec.figures:
            if f.path is None:
                continue
            md += [f"![{f.name}](plots/{f.path.name})", "", f"*{f.caption}*", ""]
            data = base64.b64encode(f.path.read_bytes()).decode("ascii")
            page.append(f'<figure><img alt="{f.name}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
        sec_notes = sec.notes + [f.caption for f in sec.figures if f.path is None]
        md += [f"- {n}" for n in sec_notes] + [""]
        page.append(_html_list(sec_notes))
    md += ["## Notes", ""] + [f"- {n}" for n in notes] + ["", "## Skipped", ""]
    md += [f"- `{s.path}`: {s.reason}" for s in skipped] or ["None."]
    page += ["<h2>Notes</h2>", _html_list(notes), "<h2>Skipped</h2>",
             _html_list([f"{s.path}: {s.reason}" for s in skipped]) or "<p>None.</p>"]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}caption{caption-side:bottom;"
             "text-align:left;font-size:90%;color:#444}img{max-width:100%}")
    (out / "report.html").write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>harness report"
                                     f"</title><style>{style}</style></head><body>{''.join(page)}</body></html>\n",
                                     encoding="utf-8")
    cells = provenance(sections)
    doc = {"inputs": [str(p) for p in inputs], "options": {k: str(v) for k, v in vars(opts).items()},
           "cells": cells, "skipped": [vars(s) for s in skipped], "notes": notes,
           "figures": [{"name": f.name, "file": str(f.path) if f.path else None, "caption": f.caption}
                       for sec in sections for f in sec.figures]}
    (out / "provenance.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "row", "column", "text", "run_id", "config_hash", "code_version", "seed", "source"])
    for c in cells:
        for r in c["runs"]:
            w.writerow([c["table"], c["row"], c["column"], c["text"], r["run_id"], r["config_hash"],
                        r["code_version"], r["seed"], r["source"]])
    (out / "provenance.csv").write_text(buf.getvalue(), encoding="utf-8")


def _html_list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>" if items else ""


def render_terminal(sections: list[Section], skipped: list, notes: list[str], out: Path | None) -> None:
    """Rich rendering: the same tables with bold/underline, then notes, skipped runs and where the files are."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text
    console = Console()
    for sec in sections:
        console.rule(Text(sec.heading))
        for t in sec.tables:
            rt = RichTable(title=Text(t.title), caption=Text(t.caption), caption_justify="left")
            for c in t.columns:
                rt.add_column(c, justify="left" if c in t.columns[:t.label_columns] else "right")
            for row in t.rows:
                rt.add_row(*[Text(c.text, style={"best": "bold", "second": "underline"}.get(c.mark, ""))
                             for c in row])
            console.print(rt)
            for n in t.notes:
                console.print(f"  - {n}", markup=False, soft_wrap=True)
        for n in sec.notes + [f.caption for f in sec.figures if f.path is None]:
            console.print(f"- {n}", markup=False, soft_wrap=True)
    for n in notes:
        console.print(f"note: {n}", markup=False, soft_wrap=True)
    for s in skipped:
        console.print(f"skipped {s.path}: {s.reason}", markup=False, soft_wrap=True)
    if out is not None:
        console.print(f"report written to {out}/ (report.md, report.html, tables/, plots/, provenance.json/.csv)",
                      markup=False)


