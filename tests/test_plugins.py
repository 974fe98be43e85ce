"""A task and a suite that live only under tests/plugins register through entry points, as a user's own package
would, and run through `harness run` with no edit to the harness (issue 27: a new task is one file, a new suite
one file)."""
import json
import sys

import pytest

from evals import suites
from harness import tasks
from harness.cli import main
from harness.core.store import read_jsonl

ENTRY_POINTS = """[harness.tasks]
echo = tests.plugins.echo_task

[harness.suites]
length = tests.plugins.length_suite
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """An installed distribution's metadata (what `pip install` of a plugin package writes), on sys.path."""
    dist = tmp_path / "site" / "harness_test_plugins-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-test-plugins\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(dist.parent))
    tasks.discover()  # the registries look entry points up once per process: look again now
    suites.discover()
    yield
    for registry, name in ((tasks.REGISTRY, "echo"), (suites.REGISTRY, "length")):
        registry.pop(name, None)
    tasks._LOADED.discard("tests.plugins.echo_task")
    suites._LOADED.discard("tests.plugins.length_suite")
    for module in ("tests.plugins.echo_task", "tests.plugins.length_suite"):
        sys.modules.pop(module, None)


def test_plugins_register_from_entry_points(plugins):
    assert "echo" in tasks.names() and "length" in suites.names()
    assert tasks.get("echo").suite == "length" and suites.get("length").metric_keys == ("reward", "response_length")


def test_a_plugin_task_and_suite_run_end_to_end(plugins, tiny_test_models, harness_cache, tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as done:
        main(["run", "--algo", "rloo", "--task", "echo", "--preset", "tiny-test", "--iterations", "2", "-o", str(out),
              "--run-id", "e", "--set", f"model.cache_dir={harness_cache}", "--set", "eval.prompts=16",
              "--set", "eval.every=1"])
    assert done.value.code in (0, None)
    run = out / "e"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "echo" and summary["suite"] == "length" and summary["data_source"] == "generated"
    assert json.loads((run / "evals" / "length.json").read_text()) == summary["eval"]
    samples, _ = read_jsonl(run / "samples.jsonl")
    assert len(samples) == 16 and all(len(s["words"]) == 3 for s in samples)
    # the suite's numbers are the task's scorer over its samples, recounted here by hand
    for s in samples:
        said = set(s["response"].lower().split())
        assert s["reward"] == sum(w in said for w in s["words"]) / 3
    assert summary["eval"]["reward"] == pytest.approx(sum(s["reward"] for s in samples) / 16)
    assert summary["sft"]["response_length"] > 0 and 0 < summary["sft"]["reward"] < 1
    records, _ = read_jsonl(run / "metrics.jsonl")
    lines = [r for r in records if "iteration" in r]
    assert "eval/reward" in lines[0] and lines[-1]["final"] and "eval/reward" in lines[-1]  # the suite's keys
    config = json.loads((run / "config.json").read_text())
    assert config["model_origin"]["reward_model"] is None  # the task's scorer, no reward model loaded

    # `harness eval RUN --suite length` re-evaluates the saved policy with the suite's own evaluation
    with pytest.raises(SystemExit) as done:
        main(["eval", str(run), "--suite", "length", "--out", str(tmp_path / "again")])
    assert done.value.code in (0, None)
    again = json.loads((tmp_path / "again" / "length.json").read_text())
    assert again["reward"] == pytest.approx(summary["eval"]["reward"]) and again["task"] == "echo"
    with pytest.raises(SystemExit) as done:  # an option the suite does not read is refused, not ignored
        main(["eval", str(run), "--suite", "length", "--judge", "gold"])
    assert done.value.code == 2

    # `harness report` builds the suite's table (its metric keys as columns) and verdicts on its first metric
    with pytest.raises(SystemExit) as done:
        main(["report", str(out), "--out", str(tmp_path / "report"), "--no-plots"])
    assert done.value.code in (0, None)
    csv = (tmp_path / "report" / "tables" / "length.csv").read_text()
    header = csv.splitlines()[0]
    assert "reward" in header and "response length" in header and "rloo" in csv and "SFT" in csv
