"""Do the ours/TRL ratios reproduce? Runs `harness bench --trl-only` N times, each in a fresh process, and writes
the ratios of every run and their spread (max/min - 1) to OUT/repeats.json.

  python benchmarks/repeat_bench.py --runs 3 --out results/bench -- --iterations 2 --warmup 1 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("bench_args", nargs="*", help="passed to `harness bench` (after --)")
    args = parser.parse_args()
    runs, setups = [], []
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix=f"repeat-bench-{i}-"))
        subprocess.run([sys.executable, "-m", "harness", "bench", "--trl-only", "--out", str(out), *args.bench_args],
                       check=True, stdout=subprocess.DEVNULL)
        result = json.loads((out / "bench.json").read_text())
        runs.append({k: {"time": r["time"], "memory": r["memory"], "time_by_round": r["time_by_round"],
                         "ours_total_s": r["ours"]["total_s"], "trl_total_s": result["trl"][k]["total_s"]}
                     for k, r in result["ratios"].items()})
        print(json.dumps(runs[-1]))
        setups.append({"machine": result["machine"], "setup": result["setup"]})  # versions, CPU, peaks of each run
    spread = {k: {m: round(max(r[k][m] for r in runs) / min(r[k][m] for r in runs) - 1, 3) for m in ("time", "memory")}
              for k in runs[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "repeats.json").write_text(json.dumps({"command_args": args.bench_args, "runs": runs,
                                                       "spread_max_over_min_minus_1": spread, "setups": setups},
                                                      indent=1) + "\n")
    print(json.dumps(spread))
