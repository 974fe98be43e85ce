"""The optimizer registry: every module of algorithms/ registers its optimizers by name (one file each).

The contract an optimizer implements is harness/core/contract.py (the backbone runs it without knowing any optimizer);
the loss math optimizers share (masked means, whitening, reward-to-go, GAE, the clipped surrogate) is
harness/core/objective.py.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from harness.core.contract import OBJECTIVE_SETTINGS, Algorithm
from harness.core.errors import UserError
from harness.core.objective import KL_ESTIMATORS

__all__ = ["Algorithm", "REGISTRY", "make", "names", "register"]

REGISTRY: dict[str, type[Algorithm]] = {}


def register(name: str):
    def add(cls: type[Algorithm]) -> type[Algorithm]:
        if name in REGISTRY:
            raise ValueError(f"algorithm {name!r} is registered twice ({REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def _discover() -> None:
    import algorithms

    for info in pkgutil.iter_modules(algorithms.__path__):
        if info.name != "base":
            importlib.import_module(f"algorithms.{info.name}")


def names() -> list[str]:
    _discover()
    return sorted(REGISTRY)


def make(name: str, args: dict | None = None) -> Algorithm:
    """The named optimizer with `args` overriding its defaults; one-line errors for unknown names and keys."""
    valid = names()
    if name not in REGISTRY:
        raise UserError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(valid)}")
    cls = REGISTRY[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(args or {}) - known)
    if unknown:
        raise UserError(f"algorithm {name!r} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}")
    objective = sorted(set(args or {}) & set(OBJECTIVE_SETTINGS))
    if objective and not cls.kl_placements:
        raise UserError(f"{name!r} samples nothing and has no reward to put a KL in: {', '.join(objective)} do not "
                        f"apply (its pull toward the reference is its own beta)")
    try:
        algo = cls(**(args or {}))
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid settings for {name!r}: {e}") from None
    if algo.kl_placements:
        if algo.kl_placement not in algo.kl_placements:
            raise UserError(f"{name!r}: kl_placement must be one of {', '.join(algo.kl_placements)}, "
                            f"not {algo.kl_placement!r}")
        if algo.kl_estimator not in KL_ESTIMATORS:
            raise UserError(f"{name!r}: kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, not {algo.kl_estimator!r}")
        if algo.kl_coef is not None and not algo.kl_coef >= 0:
            raise UserError(f"{name!r}: kl_coef must be >= 0 (or null for train.kl_coef), not {algo.kl_coef!r}")
    return algo
