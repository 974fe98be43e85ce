"""`harness prepare`: fetch every asset a preset, a suite or a run config needs (on a machine with the hub), so that
the run or evaluation itself works offline (HF_HUB_OFFLINE=1). The catalogue and the checks are harness/core/assets.py."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer

from harness.core.errors import UserError, invalid


def resolve_assets(config: str | None, preset: str | None, suites: list[str], models: list[str], sets: list[str],
                   tasks: list[str] | None = None, include_path: str | None = None) -> list:
    """The assets of everything named on the command line, in order, without duplicates."""
    from evals import suites as registry
    from harness.core import assets
    from harness.app import catalogue
    from harness.app.config import parse_overrides, resolve

    chosen = [registry.get(s) for s in suites]  # an unknown name: the registry's one line
    if config and preset:
        raise UserError("give a run config or --preset, not both (a run config names its preset)")
    if not (config or preset or suites or models):
        raise UserError("say what to prepare: --preset NAME, --suite NAME, --model NAME or a run directory / its "
                        "config.json (see `harness list` for presets and suites)")
    cfg = None
    if config:
        cfg = load_run_config(config)
    elif preset:
        cfg = resolve(preset, parse_overrides(sets))
    out = catalogue.for_config(cfg) if cfg is not None else []
    for suite in chosen:
        if isinstance(suite, registry.TaskSuite):
            out += catalogue.suite_data(suite, cfg)
        else:
            out += suite.assets({"tasks": tasks, "include_path": include_path})
    for name in models:
        out += assets.model_asset("model", name)
    return assets.unique(out)


def load_run_config(path: str):
    """A run directory's config.json (or the file itself) as a RunConfig; written before any model loads, so a run
    that stopped on a missing asset has one."""
    from pydantic import ValidationError

    from harness.app.evaluate import RUN_CONFIG_EXTRAS
    from harness.app.config import RunConfig
    from harness.core.store import read_json

    p = Path(path)
    if not p.exists():
        raise UserError(f"no such run directory or config.json: {path} (or give --preset / --suite)")
    p = p / "config.json" if p.is_dir() else p
    try:
        saved = read_json(p)
    except (OSError, ValueError) as e:
        raise UserError(f"{p} is not a run's config.json ({type(e).__name__}); pass a run directory or --preset") \
            from None
    data = {k: v for k, v in saved.items() if k not in RUN_CONFIG_EXTRAS}
    data["task"] = {k: v for k, v in (data.get("task") or {}).items() if k != "resolved_source"}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise invalid(e, f"{p} is not a run config this code reads") from None


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[dict], title: str):
    """One row per asset; a data set's many configs (MMLU's 57 subjects) share one row."""
    from rich.table import Table
    from rich.text import Text

    grouped: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["role"], r["name"]) if r["kind"] == "dataset" else (r["role"], r["label"])
        grouped.setdefault(key, []).append(r)
    t = Table(title=title)
    for col in ("role", "asset", "status", "size", "where"):
        t.add_column(col, overflow="fold")
    for (role, _), group in grouped.items():
        first = group[0]
        label = first["label"] if len(group) == 1 else f"{first['name']} ({len(group)} configs)"
        statuses = sorted({r["status"] for r in group})
        sizes = [r["bytes"] for r in group if r["bytes"] is not None]
        wheres = sorted({str(Path(r["path"]).parent) if len(group) > 1 else r["path"] for r in group if r["path"]})
        cells = (role, label, ", ".join(statuses), _human(sum(sizes)) if sizes else "-", "\n".join(wheres) or "-")
        t.add_row(*map(Text, cells))  # Text: "[ARC-Challenge]" is a config name, not rich markup
    return t


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare_command(
        config: Optional[str] = typer.Argument(None, help="a run directory or its config.json"),
        preset: Optional[str] = typer.Option(None, "--preset", "-p", help="a preset (see `harness list`)"),
        suite: list[str] = typer.Option([], "--suite", "-s", help="a suite's assets: tldr | chat | open-llm | math or a "
                                                      "plugin's (`harness list`; repeatable)"),
        model: list[str] = typer.Option([], "--model", help="another hub model to fetch (e.g. one to evaluate)"),
        set_: list[str] = typer.Option([], "--set", help="preset overrides, as for `harness run`"),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="open-llm: comma-separated subset of the six"),
        include_path: Optional[str] = typer.Option(None, "--include-path", help="open-llm: local task YAMLs"),
        dir_: Optional[Path] = typer.Option(None, "--dir", help="fetch into DIR/hub and DIR/datasets (then "
                                            "export HF_HOME=DIR where it runs); default: the standard caches"),
        manifest: Optional[Path] = typer.Option(None, "--manifest", help="where the manifest JSON goes (default "
                                                "DIR/manifest.json, else ./prepare_manifest.json)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list the assets and whether they are here; fetch "
                                     "nothing"),
    ) -> None:
        """Fetch the models, data sets and evaluation files a preset, suite or run needs, into the Hugging Face
        caches, so that the run works offline; prints what is where and writes a manifest."""
        from rich.console import Console

        from harness.app.fetch import fetch
        from harness.core import assets
        from harness.core.store import write_json

        task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        wanted = resolve_assets(config, preset, suite, model, set_, task_list, include_path)
        caches = assets.Caches.under(dir_)
        console = Console()
        if not console.is_terminal:
            console.width = 200  # a log file gets whole repo ids, not 80-column fragments
        rows, failed = [], []
        for a in wanted:
            path = assets.locate(a, caches)
            status = "present" if path else "local: missing" if a.kind == "local" else "missing"
            if path is None and not dry_run and a.kind != "local":
                console.print(f"fetching {a.role}: {a.label}")
                try:
                    path, status = fetch(a, caches), "fetched"
                except UserError:
                    raise
                except Exception as e:  # keep fetching the rest; the summary says what failed
                    status = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                    failed.append(a)
            rows.append({"role": a.role, "kind": a.kind, "name": a.name, "label": a.label, "filename": a.filename,
                         "config": a.config, "splits": list(a.splits), "repo_type": a.repo_type, "status": status,
                         "path": path, "bytes": assets.size_bytes(path), "hint": a.hint or None})
        what = config or preset or ", ".join(suite + model)
        if not rows:
            console.print(f"{what} needs nothing from the hub (builtin models, synthetic or local data)")
            return
        console.print(table(rows, f"assets for {what}" + (" (dry run: nothing fetched)" if dry_run else "")))
        for r in rows:
            if r["status"] == "local: missing":
                console.print(f"{r['role']} {r['name']}: {r['hint']}", markup=False, highlight=False)
        env = (f"export HF_HOME={Path(dir_).resolve()} HF_HUB_OFFLINE=1" if dir_ else "export HF_HUB_OFFLINE=1")
        if not dry_run:
            path = manifest or (Path(dir_) / "manifest.json" if dir_ else Path("prepare_manifest.json"))
            write_json(path, {"created": dt.datetime.now().isoformat(timespec="seconds"), "for": what,
                              "hub_cache": caches.hub or "default (HF_HUB_CACHE)",
                              "datasets_cache": caches.datasets or "default (HF_DATASETS_CACHE)",
                              "offline_env": env, "assets": rows})
            console.print(f"manifest: {path}")
        if failed:
            raise UserError(f"{len(failed)} of {len(rows)} assets could not be fetched (first: {failed[0].role} "
                            f"{failed[0].label}); see the table above")
        if not dry_run:
            console.print(f"offline from here on: {env}", markup=False, highlight=False)
