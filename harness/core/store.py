"""Run directories: resolved config, per-iteration metrics, evaluation samples, summary. Every write is atomic.

Layout of one run directory (the format `harness report` reads; see docs/run_format.md):
  config.json      the resolved RunConfig (no secrets), with its hash
  metrics.jsonl    one JSON object per training iteration (cumulative budget counters + training stats)
  samples.jsonl    end-of-run evaluation samples
  summary.json     written last, only when the run completed: algorithm, task, data source, preset, seed,
                   eval metrics, the SFT baseline's, budget, status
  attempts.jsonl   one line per start of the run (fresh or resumed) and per failure
  checkpoints/     resume checkpoints while the run is going (harness/core/checkpoint.py), the final policy at the end
  evals/<suite>.json  results of `harness eval` suites
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable


def cache_root(cache_dir: str | None = None) -> Path:
    """Where built presets, baselines, judge answers and prepared assets live: `cache_dir`, else $HARNESS_CACHE,
    else ~/.cache/harness."""
    return Path(cache_dir or os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


def writable_cache_root(cache_dir: str | None = None) -> Path:
    """cache_root, created now: a location that cannot be created is a one-line error before any work starts."""
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-")
        probe.close()
    except OSError as e:
        from harness.core.errors import UserError

        raise UserError(f"the cache directory {root} cannot be created or written ({e.strerror or e}); set "
                        f"HARNESS_CACHE or model.cache_dir to a writable directory") from None
    return root


def is_run_dir(path: Path) -> bool:
    """The one rule for "this is a run directory" (`harness report` and `harness eval`): a summary.json, metrics or
    checkpoints, or a config.json carrying a config_hash (a model directory's config.json has none)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "summary.json").is_file() or (path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir():
        return True
    try:
        return "config_hash" in read_json(path / "config.json")
    except FileNotFoundError:
        return False
    except (OSError, ValueError, TypeError, AttributeError):
        return True  # a corrupt config.json beside nothing else: still a run the user should hear about


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line and fsync; a crash can at worst leave a truncated last line, which readers skip (a line
    appended after such a fragment starts on a line of its own, so it is not lost with it)."""
    path = Path(path)
    torn = path.exists() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(record, sort_keys=True, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """Records of a JSONL file and a list of problems (e.g. a truncated last line) instead of an exception."""
    records, problems = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            problems.append(f"{Path(path).name}:{n} is not valid JSON (truncated write?)")
    return records, problems


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in records))


def _now() -> str:
    import datetime as dt

    return dt.datetime.now().isoformat(timespec="seconds")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _source_text(obj: Any) -> str:
    """The source of a function or class as its syntax tree with docstrings removed (comments, docstrings and
    layout do not count); the raw text where it does not parse alone (a lambda inside an expression)."""
    import ast
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(obj))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _fingerprint_parts(obj: Any, owner: str | None = None, depth: int = 0) -> list[str]:
    """What `code_fingerprint` hashes for one object. A module or class is walked member by member (not read from
    its file), so a member replaced at run time (a monkeypatch, a plugin) changes the fingerprint too."""
    import inspect
    import types

    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        return [p for f in (obj.fget, obj.fset, obj.fdel) if f is not None for p in _fingerprint_parts(f, owner, depth)]
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    if isinstance(obj, types.ModuleType):
        return [f"module {obj.__name__}"] + [p for key, value in sorted(vars(obj).items()) if not key.startswith("__")
                                             for p in _member_parts(key, value, obj.__name__, depth)]
    if owner is not None and getattr(obj, "__module__", None) != owner:
        return [f"ref {name}"]  # imported from elsewhere: which object it is, not its code
    if inspect.isclass(obj):
        parts = [f"class {name} bases {[f'{b.__module__}.{b.__qualname__}' for b in obj.__bases__]}"]
        if depth > 3:
            return parts
        return parts + [p for key, value in sorted(vars(obj).items())
                        if key not in ("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__")
                        for p in _member_parts(key, value, obj.__module__, depth + 1)]
    if callable(obj):
        obj = inspect.unwrap(obj)
        try:
            return [f"code {name} {_source_text(obj)}"]
        except (OSError, TypeError):  # a builtin or C function: its name is all there is
            return [f"builtin {name}"]
    return [f"value {name} {obj!r}"]


def _member_parts(key: str, value: Any, owner: str, depth: int) -> list[str]:
    import inspect
    import types

    if isinstance(value, (types.FunctionType, types.ModuleType, staticmethod, classmethod, property)) \
            or inspect.isclass(value) or callable(value) and hasattr(value, "__qualname__"):
        if isinstance(value, types.ModuleType):
            return [f"{key} = module {value.__name__}"]
        return [f"{key} = {p}" for p in _fingerprint_parts(value, owner, depth)]
    try:  # a constant: its value counts when it is plain data
        return [f"{key} = {json.dumps(value, sort_keys=True)}"]
    except (TypeError, ValueError):
        return [f"{key} : {type(value).__module__}.{type(value).__qualname__}"]


def code_fingerprint(*objects: Any) -> str:
    """A hash of the code that computes a cached value, for the cache's key: functions, classes, modules, or module
    names ("evals.tldr") and "module:attribute" strings, resolved now. Docstrings, comments and layout do not
    count; any change to a statement, a default, a module constant or a member swapped at run time does."""
    import importlib

    parts = []
    for obj in objects:
        if isinstance(obj, str):
            module_name, _, attr = obj.partition(":")
            obj = importlib.import_module(module_name)
            for piece in filter(None, attr.split(".")):
                obj = getattr(obj, piece)
        parts.extend(_fingerprint_parts(obj))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def code_version() -> str:
    """Git commit of the harness checkout (with '+dirty' for local changes), or the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version
        return f"harness-{version('harness')}"


class RunDir:
    """One run's directory. Paths are properties so every module agrees on the file names."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    samples = property(lambda self: self.path / "samples.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    evals = property(lambda self: self.path / "evals")
    failed = property(lambda self: self.path / "failed.json")  # the last failure, until the run starts again
    superseded = property(lambda self: self.path / "metrics.superseded.jsonl")

    def create(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config, config)

    attempts = property(lambda self: self.path / "attempts.jsonl")

    def log(self, record: dict) -> None:
        append_jsonl(self.metrics, record)

    def begin_attempt(self, resumed_from: int, code: str) -> None:
        """A (re)start from iteration `resumed_from`: metrics lines logged after it are redone, so they move to
        metrics.superseded.jsonl; an earlier failure record moves into attempts.jsonl. Nothing is deleted."""
        failed = self.failed
        if failed.exists():
            append_jsonl(self.attempts, {"event": "failed", **{k: v for k, v in read_json(failed).items()
                                                               if k != "traceback"}})
            failed.unlink()
        torn: list[str] = []
        if self.metrics.exists():
            records, torn = read_jsonl(self.metrics)  # torn: a line cut by the crash; it would sit mid-file
            stale = [r for r in records if r.get("iteration", 0) > resumed_from or r.get("final")]
            if stale or torn:
                for r in stale:
                    append_jsonl(self.superseded, r)
                write_jsonl(self.metrics, [r for r in records if r not in stale])
        append_jsonl(self.attempts, {"event": "started", "resumed_from": resumed_from, "code_version": code,
                                     "at": _now(), **({"dropped": torn} if torn else {})})

    def is_complete(self) -> bool:
        return self.summary.exists()
