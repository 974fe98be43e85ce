import json

from harness.core.store import RunDir, append_jsonl, read_jsonl, write_json


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
    from harness.core.store import RunDir, read_jsonl

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


def test_code_fingerprint_follows_the_code_not_its_docstrings_or_comments(tmp_path, monkeypatch):
    import sys

    from harness.core.store import code_fingerprint

    def double(x):
        return 2 * x

    def double_documented(x):
        """Another docstring."""
        # another comment
        return 2 * x

    def triple(x):
        return 3 * x

    # names aside, the hash is of the statements: docstrings, comments and layout do not count
    assert code_fingerprint(double) != code_fingerprint(triple)
    strip = code_fingerprint.__globals__["_source_text"]
    assert strip(double).replace("double_documented", "double") == strip(double_documented).replace(
        "double_documented", "double")
    # a module is walked member by member: a function swapped at run time changes it, as does a constant
    (tmp_path / "fingerprinted_module.py").write_text("K = 1\n\ndef f(x):\n    return x + K\n\n"
                                                      "class C:\n    def g(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fingerprinted_module as module

    before = code_fingerprint("fingerprinted_module")
    assert code_fingerprint(module) == before == code_fingerprint("fingerprinted_module")
    assert code_fingerprint("fingerprinted_module:f") != before
    monkeypatch.setattr(module, "K", 2)
    assert code_fingerprint(module) != before
    monkeypatch.setattr(module, "K", 1)
    assert code_fingerprint(module) == before
    monkeypatch.setattr(module, "f", triple)
    assert code_fingerprint(module) != before
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert code_fingerprint(module) == before
    monkeypatch.setattr(module.C, "g", lambda self: 2)  # a method swapped in a class
    assert code_fingerprint(module) != before
    sys.modules.pop("fingerprinted_module", None)
