"""`python -m harness VERB`: each verb lives in its own module under harness/commands/ and registers itself."""
from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

import harness.commands
from harness.core.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compare policy optimizers (REBEL, PPO, DPO, ...) on one shared training backbone.")


@app.callback()
def _root() -> None:
    """Keeps verbs as subcommands even when only one is registered."""


def _register_verbs() -> None:
    for info in sorted(pkgutil.iter_modules(harness.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"harness.commands.{info.name}")
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    _register_verbs()
    try:
        app(args=argv, standalone_mode=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
