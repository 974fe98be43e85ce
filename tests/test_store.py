import json

from harness.store import RunDir, append_jsonl, read_jsonl, write_json


def test_truncated_last_line_is_reported_not_raised(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"iteration": 1})
    append_jsonl(path, {"iteration": 2})
    with open(path, "a") as f:
        f.write('{"iteration": 3, "lo')
    records, problems = read_jsonl(path)
    assert [r["iteration"] for r in records] == [1, 2]
    assert problems == ["metrics.jsonl:3 is not valid JSON (truncated write?)"]


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create({"a": 1})
    write_json(run.summary, {"x": 1})
    write_json(run.summary, {"x": 2})
    assert json.loads(run.summary.read_text()) == {"x": 2}
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "summary.json"]
    assert run.is_complete()


def test_a_restart_drops_a_torn_line_and_stale_lines_and_keeps_them_aside(tmp_path):
    from harness.store import RunDir, read_jsonl

    run = RunDir(tmp_path / "r")
    run.create({"config_hash": "h"})
    for i in (1, 2, 3):
        run.log({"iteration": i})
    with open(run.metrics, "a") as f:
        f.write('{"iteration": 4, "lo')  # killed mid-write
    run.begin_attempt(2, "abc")  # back to the checkpoint of iteration 2
    run.log({"iteration": 3, "again": True})
    records, problems = read_jsonl(run.metrics)
    assert [r["iteration"] for r in records] == [1, 2, 3] and records[-1]["again"] and not problems
    superseded, _ = read_jsonl(run.path / "metrics.superseded.jsonl")
    assert superseded == [{"iteration": 3}]
    attempt = read_jsonl(run.attempts)[0][-1]
    assert attempt["resumed_from"] == 2 and attempt["dropped"] == ["metrics.jsonl:4 is not valid JSON (truncated write?)"]
