"""Loading and validating run directories: skipped runs name their reason, nothing raises."""
import json

from evals.runs import budget_cut, comparison_groups, discover, group_difference, load_runs, row_labels

from .conftest import default_metrics, write_run


def _reasons(skipped):
    return {s.path.split("/")[-1]: s.reason for s in skipped}


def test_complete_run_loads(results):
    write_run(results, "a", seed=1)
    runs, skipped = load_runs([results])
    assert [r.run_id for r in runs] == ["a"] and skipped == []
    assert runs[0].config_hash == "h-a" and runs[0].code_version == "abc1234"
    assert len(runs[0].metrics) == 6


def test_bad_runs_are_skipped_with_reasons(results):
    write_run(results, "ok")
    write_run(results, "incomplete", summary=False)
    write_run(results, "failed", status="failed")
    (write_run(results, "corrupt", seed=2) / "summary.json").write_text('{"run_id": "corr', encoding="utf-8")
    (write_run(results, "noconfig", seed=3) / "config.json").unlink()
    bad_mid = write_run(results, "badmid", seed=4)
    lines = (bad_mid / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]
    (bad_mid / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    runs, skipped = load_runs([results])
    assert [r.run_id for r in runs] == ["ok"]
    reasons = _reasons(skipped)
    assert "no summary.json" in reasons["incomplete"]
    assert "'failed'" in reasons["failed"]
    assert "corrupt summary.json" in reasons["corrupt"]
    assert "missing config.json" in reasons["noconfig"]
    assert "corrupt metrics.jsonl" in reasons["badmid"]


def test_truncated_last_line_is_tolerated_and_noted(results):
    path = write_run(results, "trunc")
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 7, "prom')
    runs, skipped = load_runs([results])
    assert skipped == [] and len(runs[0].metrics) == 6
    assert any("metrics.jsonl:7" in n and "truncated" in n for n in runs[0].notes)


def test_corrupt_suite_file_drops_only_that_suite(results):
    path = write_run(results, "a", chat={"alpaca_eval": {"lc_win_rate": 45.0, "win_rate": 0.4}})
    (path / "evals" / "open_llm.json").write_text("{oops")
    runs, skipped = load_runs([results])
    assert len(runs) == 1 and runs[0].evals == {}
    reasons = [s.reason for s in skipped]
    assert any("not a fraction" in r for r in reasons) and any("corrupt open_llm.json" in r for r in reasons)


def test_discovery_does_not_descend_into_runs_and_ignores_model_dirs(results):
    path = write_run(results, "a")
    (path / "checkpoints" / "final").mkdir(parents=True)
    (path / "checkpoints" / "final" / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    (results / "sft_model").mkdir()
    (results / "sft_model" / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    assert discover([results]) == [path.resolve()]
    assert discover([path]) == [path.resolve()]


def test_duplicates_keep_the_latest(results):
    write_run(results, "first", seed=0)
    write_run(results, "rerun", seed=0)  # same row and seed
    import harness.core.store as store
    s = store.read_json(results / "runs" / "rerun" / "summary.json")
    s["finished_at"] = "2026-11-23T00:00:00"
    store.write_json(results / "runs" / "rerun" / "summary.json", s)
    runs, skipped = load_runs([results])
    assert [r.run_id for r in runs] == ["rerun"]
    assert "same row and seed" in skipped[0].reason


def test_groups_never_pool_differing_comparison_keys(results):
    write_run(results, "g1", seed=0)
    write_run(results, "g2", seed=1, comparison={"judge": "gpt-4"})
    write_run(results, "p2", seed=0, preset="other")  # another preset: same group, other rows
    runs, _ = load_runs([results])
    groups = comparison_groups(runs)
    assert sorted(len(m) for _, m in groups) == [1, 2]
    assert "judge" in group_difference(groups) and "preset" not in group_difference(groups)


def test_row_labels_name_the_differing_config(results):
    write_run(results, "k2", algorithm="rloo", algorithm_config={"k": 2, "lr": 1e-5})
    write_run(results, "k4", algorithm="rloo", algorithm_config={"k": 4, "lr": 1e-5})
    write_run(results, "r", algorithm="rebel", algorithm_config={"eta": 1.0})
    runs, _ = load_runs([results])
    labels = row_labels(runs)
    assert sorted(labels[r.row_key] for r in runs) == ["rebel", "rloo (k=2)", "rloo (k=4)"]


def test_a_changed_training_setting_is_a_row_of_its_own_and_a_changed_model_a_group(results):
    """A run at train.lr=1e-5 is not a seed of the preset's lr (before `settings` was recorded the report kept only
    the later of two such runs as 'same row and seed'); a run on another model is another comparison."""
    write_run(results, "base", seed=0)
    write_run(results, "slow", seed=0, settings={"train.lr": 1e-5})
    write_run(results, "slow1", seed=1, settings={"train.lr": 1e-5})
    write_run(results, "big", seed=0, settings={"model.tiny.hidden_size": 192},
              comparison={"settings": {"model.tiny.hidden_size": 192}})
    runs, skipped = load_runs([results])
    assert not skipped and len(runs) == 4
    groups = comparison_groups(runs)
    assert sorted(len(m) for _, m in groups) == [1, 3] and "settings" in group_difference(groups)
    main = next(m for _, m in groups if len(m) == 3)
    labels = row_labels(main)
    assert sorted({labels[r.row_key] for r in main}) == ["rebel (train.lr=1e-05)", "rebel (train.lr=default)"]
    assert len({r.row_key for r in main if r.run_id.startswith("slow")}) == 1  # two seeds of one row


def test_changed_settings_are_what_differs_from_the_preset():
    from harness.app.config import changed_settings, parse_overrides, resolve

    cfg = resolve("tiny", parse_overrides(["train.lr=1e-5", "model.cache_dir=/x", "eval.prompts=8", "algo.eta=2"]))
    assert changed_settings(cfg) == {"train.lr": 1e-5}  # cache dir changes no number; eval and algo have own homes
    assert changed_settings(resolve("tiny")) == {}
    assert changed_settings(resolve("arith", parse_overrides(["model.tiny.layers=4"]))) == {"model.tiny.layers": 4}


def test_budget_cut_picks_the_last_iteration_within_budget(results):
    metrics = default_metrics(n_iter=6, final_score=6.0, final_kl=60.0, final_win=0.6, eval_every=2)
    write_run(results, "a", metrics=metrics)
    (run,), _ = load_runs([results])
    cut, reason = budget_cut(run, "prompts", 64 * 3 + 10)  # iterations 1..3 fit; eval logged at 2 only
    assert reason is None
    assert cut["iteration"] == 3 and cut["counter"] == 192
    assert cut["rm_score"] == 2.0 and cut["rm_score_iteration"] == 2  # 6.0 * 2/6
    assert cut["win_rate"] == 0.6 * 2 / 6
    cut, _ = budget_cut(run, "prompts", 256)  # exactly iteration 4, which has an eval
    assert cut["iteration"] == 4 and cut["kl_iteration"] == 4


def test_budget_cut_reasons(results):
    write_run(results, "a")
    (run,), _ = load_runs([results])
    assert "never reached" in budget_cut(run, "prompts", 10_000)[1]
    assert "no periodic eval" in budget_cut(run, "prompts", 64)[1]  # iteration 1 has no eval columns
    assert "first logged iteration" in budget_cut(run, "prompts", 10)[1]
    assert "no 'gpu_hours' counter" in budget_cut(run, "gpu_hours", 1)[1]


def test_win_rate_in_percent_is_rejected(results):
    write_run(results, "pct", win_rate=55.0)
    runs, skipped = load_runs([results])
    assert runs == [] and "eval.win_rate = 55.0 is not a fraction" in skipped[0].reason


def test_budget_cut_prefers_the_final_line_at_equal_counters(results):
    """harness run appends the final evaluation as an extra line with the last iteration's counters."""
    metrics = default_metrics(n_iter=4, final_win=0.4, eval_every=100)[:-1]  # no eval on the last training line
    metrics.append({k: v for k, v in default_metrics(n_iter=4)[-1].items() if not k.startswith("eval/")})
    metrics.append({"iteration": 4, "prompts": 256, "final": True, "eval/win_rate": 0.9, "eval/rm_score": 2.0,
                    "eval/kl": 5.0})
    write_run(results, "a", metrics=metrics)
    (run,), _ = load_runs([results])
    cut, _ = budget_cut(run, "prompts", 256)
    assert cut["iteration"] == 4 and cut["win_rate"] == 0.9
