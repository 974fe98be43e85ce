"""Sweeps: algorithms x seeds x presets x a hyperparameter grid, each point one `harness run` in its own process.

A point's run id is derived from its settings, so re-running the same sweep skips what has finished (a
summary.json exists) and retries what failed: run it again until it reports nothing left.
Executors: a local process pool (default) or Slurm through submitit, an existing scheduler, never a home-made one.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.errors import UserError, invalid, read_yaml
from harness.core.store import config_hash


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithms: list[str]
    seeds: list[int] = [0]
    presets: list[str] = ["tiny"]
    grid: dict[str, list] = Field(default_factory=dict, description="dotted key -> values (e.g. algo.eta)")
    points: list[dict[str, object]] = Field(default_factory=list, description="explicit points (dotted key -> value), "
                                            "each crossed with the grid: a design that is not a full product")
    overrides: dict[str, object] = Field(default_factory=dict, description="dotted key -> value for every run")
    output_dir: str = "results/runs"
    workers: int = Field(1, gt=0)
    executor: str = Field("local", pattern="^(local|slurm)$")
    slurm: dict[str, object] = Field(default_factory=dict, description="submitit parameters (partition, gpus...)")


@dataclass
class Job:
    algo: str
    preset: str
    seed: int
    settings: dict[str, object] = field(default_factory=dict)  # grid point + common overrides, dotted keys

    @property
    def run_id(self) -> str:
        grid = f"-{config_hash(self.settings)[:8]}" if self.settings else ""
        return f"{self.algo}-{self.preset}-s{self.seed}{grid}"

    def command(self, output_dir: str) -> list[str]:
        cmd = [sys.executable, "-m", "harness", "run", "--algo", self.algo, "--preset", self.preset, "--seed",
               str(self.seed), "-o", output_dir, "--run-id", self.run_id]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
        return cmd


def load_spec(path: Path) -> SweepSpec:
    try:
        return SweepSpec.model_validate(read_yaml(path, "sweep file") or {})
    except ValidationError as e:
        raise invalid(e, f"{path}: invalid sweep") from None


def expand(spec: SweepSpec) -> list[Job]:
    keys = sorted(spec.grid)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))] or [{}]
    points = [{**point, **g} for point in spec.points or [{}] for g in grid]
    # seed-major: a sweep stopped early leaves whole seeds of every algorithm and point, not whole algorithms
    return [Job(algo, preset, seed, {**spec.overrides, **point})
            for preset in spec.presets for seed in spec.seeds for algo in spec.algorithms for point in points]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(workers: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one local worker: the cores shared out (cores // workers threads each, at least one)
    unless the user set the thread count. Why: torch takes every core in each process, and two processes each
    spinning two OpenMP threads on two cores ran 3-48x slower per iteration than one thread each (measured on the
    arith sweep, 2026-12-07)."""
    env = dict(os.environ if environ is None else environ)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in THREAD_VARIABLES:
        env.setdefault(name, threads)
    return env


def _run_local(job: Job, output_dir: str, log_dir: Path, env: dict[str, str]) -> tuple[Job, int]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{job.run_id}.log", "w") as log:
        return job, subprocess.run(job.command(output_dir), stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def run_sweep(spec: SweepSpec, echo=print) -> dict[str, list[str]]:
    """Runs what is not finished yet; returns run ids by outcome: finished, skipped (already done), failed."""
    from algorithms.base import names

    unknown = sorted(set(spec.algorithms) - set(names()))
    if unknown:
        raise UserError(f"unknown algorithm(s) {', '.join(unknown)} in the sweep; valid: {', '.join(names())}")
    out = Path(spec.output_dir)
    jobs = expand(spec)
    done = [j for j in jobs if (out / j.run_id / "summary.json").exists()]
    todo = [j for j in jobs if j not in done]
    outcome: dict[str, list[str]] = {"finished": [], "skipped": [j.run_id for j in done], "failed": []}
    echo(f"sweep: {len(jobs)} runs, {len(outcome['skipped'])} already finished, {len(todo)} to run "
         f"({spec.executor}, {spec.workers} at a time)")
    if spec.executor == "slurm":
        return _run_slurm(spec, todo, outcome, echo)
    env = worker_env(spec.workers)
    echo(f"  {env['OMP_NUM_THREADS']} thread(s) per run (OMP_NUM_THREADS)")
    with ThreadPoolExecutor(max_workers=spec.workers) as pool:  # each run is its own process
        for job, code in pool.map(lambda j: _run_local(j, spec.output_dir, out / "_logs", env), todo):
            outcome["finished" if code == 0 else "failed"].append(job.run_id)
            echo(f"  {'done  ' if code == 0 else 'FAILED'} {job.run_id}" +
                 ("" if code == 0 else f" (exit {code}; log: {out / '_logs' / (job.run_id + '.log')})"))
    return outcome


def _run_slurm(spec: SweepSpec, todo: list[Job], outcome: dict, echo) -> dict:
    try:
        import submitit
    except ImportError:
        raise UserError("executor: slurm needs submitit (pip install submitit)") from None
    executor = submitit.AutoExecutor(folder=str(Path(spec.output_dir) / "_slurm"))
    executor.update_parameters(**spec.slurm)
    jobs = executor.map_array(lambda cmd: subprocess.run(cmd, check=True).returncode,
                              [j.command(spec.output_dir) for j in todo])
    for job, handle in zip(todo, jobs):
        try:
            handle.result()
            outcome["finished"].append(job.run_id)
        except Exception as e:  # a failed array task: report it, the sweep can be re-run
            outcome["failed"].append(job.run_id)
            echo(f"  FAILED {job.run_id}: {e}")
    return outcome
