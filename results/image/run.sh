#!/usr/bin/env bash
# The image stand-in's comparison (docs/image.md): REBEL and PPO x seeds 0-2 on preset image-tiny, seed-major so a
# stopped script leaves whole seeds; then the report (curves with IQM and 95% CI, before/after grids).
# Usage: bash results/image/run.sh [ITERATIONS]   (run from the repository root)
set -euo pipefail
n=${1:-9}
for seed in 0 1 2; do
  for algo in rebel ppo; do
    python -u -m harness run --algo "$algo" --task image --seed "$seed" -n "$n" --set eval.every=3 \
      --output-dir results/image/runs --run-id "$algo-image-tiny-s$seed" > "results/image/runs/_logs/$algo-s$seed.log" 2>&1
  done
done
python -m evals.image_plots results/image/runs/*-s* --out results/image/report
