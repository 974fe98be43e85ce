"""The one home for turning bad input (and a library's error about it) into one line that says what to do."""
from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: printed as one line that says what to do, never as a traceback."""


def invalid(error, what: str, hint: str = "") -> UserError:
    """A pydantic ValidationError as one line: `what` at the first failing key, pydantic's message, a hint."""
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return UserError(f"{what} at {where}: {first['msg']}" + (f" ({hint})" if hint else ""))


def read_yaml(path: Path, what: str):
    """A YAML file's contents; a missing file or a syntax error is one line naming the file and the line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{what} {path} is not valid YAML ({problem} at{at or ' an unknown place'}); fix the "
                        f"file and run again") from None
