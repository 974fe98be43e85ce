"""The application: what the commands do (run, eval, report, bench, sweep, plan, build-start, prepare), on top of
the backbone (harness/), the tasks (harness/tasks/), the optimizers (algorithms/) and the evaluations (evals/)."""
