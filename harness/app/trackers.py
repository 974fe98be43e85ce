"""Metrics to the experiment trackers people use, through accelerate's tracking API (accelerate.tracking).

Chosen by one setting, `log.trackers`: a list or a comma string of accelerate's tracker names (tensorboard, wandb,
mlflow, aim, comet_ml, clearml, dvclive, swanlab, trackio), "auto" (TensorBoard when it is installed, else none)
or "none" (the default: a run writes only its own files). Every metrics line the run appends to metrics.jsonl is
also sent to each tracker with the iteration as its step; metrics.jsonl stays the source of truth (trackers may
drop or round values, and are never read back by the harness). Files go under the run directory:
<run>/tensorboard/<run id>/ and <run>/wandb/ (W&B runs offline unless WANDB_MODE says otherwise).
Secrets: the configuration sent to a tracker drops every key that names a credential and every value that looks
like one; nothing from the environment is sent.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path

from harness.core.errors import UserError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "aim": "aim", "comet_ml": "comet_ml",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|credential|auth|(^|_)token$)", re.I)
SECRET_VALUE = re.compile(r"^(sk-|hf_|ghp_|xox[bp]-)[A-Za-z0-9_-]{8,}")


def tracker_names(spec) -> list[str]:
    """`log.trackers` as a list of tracker names; a one-line error for an unknown or uninstalled one."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(s).strip().lower() for s in items if str(s).strip()]
    if names in ([], ["none"]):
        return []
    if names == ["auto"]:
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    for name in names:
        if name not in PACKAGES:
            raise UserError(f"unknown tracker {name!r} in log.trackers; valid: {', '.join(PACKAGES)}, auto or none")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(f"log.trackers asks for {name} but it is not installed: pip install {PACKAGES[name]} "
                            f"(or pip install 'harness[tracking]' for TensorBoard)")
    return list(dict.fromkeys(names))


def flat_config(config: dict, prefix: str = "") -> dict:
    """Nested settings as flat `a.b` keys of str/int/float/bool (what tracker hyperparameters take), secrets out."""
    out: dict = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if SECRET_KEY.search(str(key)):
            continue
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, str) and SECRET_VALUE.match(value):
            continue
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = "none" if value is None else value
        else:
            out[name] = str(value)
    return out


def scalars(line: dict) -> dict:
    """The numeric entries of a metrics line (the step, strings and lists stay in the JSONL only)."""
    return {k: float(v) for k, v in line.items() if k != "iteration" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class Trackers:
    """The run's trackers (none: every call does nothing). Create on the main process only."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, config: dict):
        self.trackers = []
        if names:
            from accelerate import PartialState

            # accelerate's trackers log through its logger, which needs a state; a multi-process run (Runtime)
            # has made one already, a single process gets its trivial one here
            if not PartialState._shared_state:
                PartialState()
        for name in names:
            from accelerate.tracking import LOGGER_TYPE_TO_CLASS

            cls = LOGGER_TYPE_TO_CLASS[name]
            if name == "tensorboard":
                tracker = cls(run_name, logging_dir=str(run_dir / "tensorboard"))
            elif name == "wandb":
                (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
                tracker = cls("harness", name=run_name, dir=str(run_dir),
                              mode=os.environ.get("WANDB_MODE", "offline"))
            elif getattr(cls, "requires_logging_directory", False):
                tracker = cls(run_name, logging_dir=str(run_dir / name))
            else:
                tracker = cls(run_name)
            tracker.main_process_only = False  # the runner creates trackers on its main process only
            tracker.start()
            tracker.store_init_configuration(flat_config(config))
            self.trackers.append(tracker)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def log(self, line: dict) -> None:
        values = scalars(line)
        for tracker in self.trackers:
            tracker.log(values, step=int(line.get("iteration", 0)))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def open_trackers(spec, run_dir: Path, run_name: str, config: dict, is_main: bool = True) -> Trackers:
    return Trackers(tracker_names(spec) if is_main else [], run_dir, run_name, config)
