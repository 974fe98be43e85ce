"""One update does not depend on how its batch is cut: every registered optimizer, on fixed rollouts and a tiny
random model, gives the one-process gradient when the batch is split over 2 gloo processes (`accelerate launch`
with configs/accelerate/ddp.yaml) and under micro-batching, on one process or on both (tests/distributed/invariance.py
computes them with harness/core/train.py's arithmetic; one launch loops over all optimizers).

Tolerance: 1e-5 of the largest gradient entry, in float32. Measured (2026-12-07, CPU): at most 4.2e-7 of it (cispo
1.1e-7, dpo 4.2e-7, grpo 4.2e-7, ppo 1.2e-7, rloo_k4 3.6e-7, ...): summation order. Before the statistics were made
the whole batch's, ppo differed by 0.51 of it (local whitening, local token means; 0.24 on one process in
micro-batches), reinforce by 0.19 (local mean reward), dr_grpo by 0.12 and reinforce_pp with seq_mean_token_sum_norm
by 0.24 (each rank's own Lr), iterative_dpo by 0.25 (local count of labelled pairs).
"""
import json

import pytest

from algorithms.base import names
from tests.distributed.launch import launch

TOLERANCE = 1e-5  # of the largest entry of the one-process gradient


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("invariance")
    done = launch("ddp", "-m", "tests.distributed.invariance", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"invariance-{r}.json").read_text()) for r in (0, 1)]


def _differences(row: dict) -> dict[str, float]:
    return {k: v / row["scale"] for k, v in row.items() if k not in ("scale", "width")}


def test_every_optimizer_gives_the_one_process_gradient_on_two_processes_and_in_micro_batches(ranks):
    assert set(names()) <= set(ranks[0]["invariant"])  # every registered optimizer, at its defaults
    worst = 0.0
    for rank in ranks:
        for label, row in rank["invariant"].items():
            # a real gradient to compare (A*-PO's is beta2 = 1e-3 times its regression residual: ~4e-4 here)
            assert row["scale"] > 1e-4, label
            diffs = _differences(row)
            assert len(diffs) == 5 and all(d < TOLERANCE for d in diffs.values()), (label, diffs)
            worst = max(worst, *diffs.values())
    print(f"largest difference from the one-process gradient: {worst:.1e} of its largest entry")
    # the shards were padded to their own widths (as harness/core/experience.py pads them): Lr differs by rank
    assert ranks[0]["invariant"]["dr_grpo"]["width"] < ranks[1]["invariant"]["dr_grpo"]["width"]


def test_per_process_statistics_depend_on_the_number_of_processes_only(ranks):
    """The REBEL authors' per-process whitening (and a per-process REINFORCE baseline) is kept as an option: it
    changes with the number of processes, and with nothing else (micro-batches on one process)."""
    for label, row in ranks[0]["per_process"].items():
        diffs = _differences(row)
        for cut, d in diffs.items():
            assert (d > 100 * TOLERANCE) if cut.startswith("2 processes") else (d < TOLERANCE), (label, cut, d)


def test_maxima_over_ranks(ranks):
    for rank, result in enumerate(ranks):
        checks = result["checks"]
        assert checks["world_size"] == 2
        assert checks["max_over_ranks"] == 4.0  # ranks contribute 3 and 4
        assert checks["max_over_ranks local"] == 3.0 + rank  # `local` sums: no reduction
        assert checks["sum_norm_length"] == 6.0  # widths 5 and 6: Lr is the widest rank's
        assert checks["sum_norm_length set"] == 9.0  # a set length_normaliser is used as it is
