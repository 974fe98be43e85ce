"""Bring your own task, without a model: TRL's dataset formats, task files and their errors, reward functions and
their errors (harness/tasks/formats.py, task_file.py, rewards.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import tasks
from harness.core.errors import UserError
from harness.tasks.formats import RowExample, detect, to_example
from harness.tasks.rewards import FunctionReward, RewardFunctionError, Term, make_terms

USER = [{"role": "user", "content": "What color is the sky?"}]


@pytest.fixture(autouse=True)
def _forget_task_files():
    """Each test's task files leave the registry with it (their names repeat across tests)."""
    tasks.names()  # the package's own tasks registered first (a module registers once, when first imported)
    before = dict(tasks.REGISTRY)
    yield
    tasks.REGISTRY.clear()
    tasks.REGISTRY.update(before)


def msg(role, content):
    return {"role": role, "content": content}


# ---------------------------------------------------------------- formats


def test_each_standard_format_reads_as_trl_defines_it():
    ex = to_example({"prompt": "The sky is", "id": 3}, "r")
    assert (ex.text, ex.messages, ex.reference, ex.chosen, ex.columns) == ("The sky is", None, None, None, {"id": 3})
    ex = to_example({"prompt": "The sky is", "completion": " blue."}, "r")
    assert ex.reference == " blue." and ex.prompt == "The sky is"
    ex = to_example({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}, "r")
    assert (ex.prompt, ex.chosen, ex.rejected) == ("The sky is", " blue.", " green.")


def test_implicit_preference_takes_trls_common_prefix():
    from trl.data_utils import extract_prompt

    row = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    ex = to_example(row, "r")
    want = extract_prompt(row)  # TRL's own split: the space before the difference goes to the completions
    assert (ex.prompt, ex.chosen, ex.rejected) == (want["prompt"], want["chosen"], want["rejected"])
    assert (ex.prompt, ex.chosen) == ("The sky is", " blue.")
    conv = {"chosen": USER + [msg("assistant", "Blue.")], "rejected": USER + [msg("assistant", "Green.")]}
    ex = to_example(conv, "r")
    assert ex.messages == USER and (ex.chosen, ex.rejected) == ("Blue.", "Green.") and ex.conversational


def test_each_conversational_format():
    ex = to_example({"prompt": USER}, "r")
    assert ex.messages == USER and ex.conversational and ex.prompt_value == USER
    assert ex.text == "user: What color is the sky?\n\nassistant:"  # for a tokenizer with no chat template
    ex = to_example({"prompt": USER, "completion": [msg("assistant", "Blue.")]}, "r")
    assert ex.reference == "Blue."
    ex = to_example({"prompt": USER, "chosen": [msg("assistant", "Blue.")], "rejected": [msg("assistant", "Red.")]},
                    "r")
    assert (ex.chosen, ex.rejected) == ("Blue.", "Red.")
    ex = to_example({"messages": [msg("system", "Be brief."), *USER, msg("assistant", "Blue.")]}, "r")
    assert ex.messages == [msg("system", "Be brief."), *USER] and ex.reference == "Blue."


def test_template_and_system_turn():
    ex = to_example({"prompt": "2+2", "topic": "sums"}, "r", template="Topic: {topic}\nQ: {prompt}\nA:")
    assert ex.text == "Topic: sums\nQ: 2+2\nA:" and ex.prompt_value == "2+2"
    ex = to_example({"prompt": "2+2"}, "r", system="Answer with a number.")
    assert ex.messages == [msg("system", "Answer with a number."), msg("user", "2+2")]
    with pytest.raises(UserError, match=r"r: prompt.template names \{topic\}"):
        to_example({"prompt": "2+2"}, "r", template="{topic}: {prompt}")


@pytest.mark.parametrize("row, message", [
    ({"text": "Once upon a time"}, "'text' column is language-modelling data"),
    ({"prompt": "p", "completion": "c", "label": True}, "unpaired preference"),
    ({"prompt": "p", "completions": ["a"], "labels": [True]}, "stepwise supervision"),
    ({"question": "p"}, r"columns \['question'\] match no TRL format .* dataset.columns"),
    ({"prompt": ""}, "'prompt' must be a non-empty string"),
    ({"prompt": [{"role": "user"}]}, "every message of 'prompt' needs a 'role' and a 'content'"),
    ({"messages": [msg("user", "hi")]}, "needs at least one turn before its last assistant turn"),
    ("just a string", "a row must be an object"),
])
def test_rows_that_match_no_format_are_refused_with_the_row(row, message):
    with pytest.raises(UserError, match=message) as e:
        to_example(row, "data.jsonl:7")
    assert str(e.value).startswith("data.jsonl:7")


def test_a_declared_format_must_match():
    assert detect(["prompt", "chosen", "rejected"], "r") == "preference"
    with pytest.raises(UserError, match="dataset.format is 'preference' but .* 'prompt-only'"):
        to_example({"prompt": "p"}, "r", fmt="preference")


# ---------------------------------------------------------------- reward functions


def term(fn, weight=1.0, name="f"):
    return Term(name, fn, weight)


def rows(*prompts, **columns):
    return [RowExample(text=p, prompt_value=p, columns={k: v[i] for k, v in columns.items()})
            for i, p in enumerate(prompts)]


def test_weighted_terms_none_and_columns_as_trl_passes_them():
    seen = {}

    def length(prompts, completions, **kw):
        seen.update(kw, prompts=prompts, completions=completions)
        return [float(len(c)) for c in completions]

    def only_even(prompts, completions, n, **kw):
        return [1.0 if x % 2 == 0 else None for x in n]

    def never(prompts, completions, **kw):
        return [None] * len(completions)

    reward = FunctionReward([term(length, 0.5, "length"), term(only_even, 2.0, "even")])
    assert reward.scores(["ab", "abcd", "x"], rows("p", "q", "r", n=[2, 3, 4])) == [0.5 * 2 + 2.0, 0.5 * 4, 0.5 + 2.0]
    assert seen["n"] == [2, 3, 4] and seen["prompts"] == ["p", "q", "r"] and seen["completion_ids"] is None
    assert reward.name == "0.5 x length + 2 x even"
    lone = FunctionReward([term(never)])
    assert lone.scores(["a", "b"], rows("p", "q")) == [0.0, 0.0] and lone.unscored == 2  # TRL's nansum: 0


def test_conversational_completions_are_messages():
    got = []

    def f(prompts, completions, **kw):
        got.extend(completions)
        return [1.0] * len(completions)

    ex = to_example({"prompt": USER}, "r")
    FunctionReward([term(f)]).scores(["Blue."], [ex])
    assert got == [[{"role": "assistant", "content": "Blue."}]]


@pytest.mark.parametrize("fn, message", [
    (lambda prompts, completions, **kw: 1 / 0, r"reward function f raised ZeroDivisionError: division by zero"),
    (lambda prompts, completions, **kw: [1.0], "returned 1 values for 2 completions"),
    (lambda prompts, completions, **kw: [1.0, math.nan], "returned nan for completion 1 .* return a finite number"),
    (lambda prompts, completions, **kw: [1.0, "good"], r"returned 'good' \(str\) for completion 1; return a number"),
    (lambda prompts, completions, **kw: 1.0, "returned float; it must return a list"),
])
def test_bad_reward_functions_are_one_line_errors(fn, message):
    with pytest.raises(RewardFunctionError, match=message) as e:
        FunctionReward([term(fn)]).scores(["a", "b"], rows("p", "q"))
    assert "\n" not in str(e.value)


def test_verifier_and_format_terms(tmp_path):
    terms = make_terms([{"verifier": "gsm8k", "answer": "solution"}, {"format": r"#### \d+$", "weight": 0.5}],
                       tmp_path, "t")
    reward = FunctionReward(terms)
    examples = rows("q1", "q2", "q3", solution=["He has 3.\n#### 72", 72, "#### 5"])
    # right and well-formed; right number but no marker; wrong number with the marker
    assert reward.scores(["So 70 + 2 = 72.\n#### 72", "The answer is 72", "#### 6"], examples) == [1.5, 1.0, 0.5]


# ---------------------------------------------------------------- task files

REWARD_PY = "def overlap(prompts, completions, **kwargs):\n    return [float(len(c) > 0) for c in completions]\n"


def write_task(folder: Path, text: str, data=None, rewards=REWARD_PY, name="task.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rewards.py").write_text(rewards)
    rows_ = data if data is not None else [{"prompt": f"Say {i}", "n": i} for i in range(20)]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_))
    path = folder / name
    path.write_text(text)
    return path


BASIC = "name: {name}\ndataset:\n  path: data.jsonl\nreward:\n  - function: rewards.py:overlap\n"


def test_a_task_file_loads_registers_and_holds_out_eval(tmp_path):
    path = write_task(tmp_path, BASIC.format(name="byo-basic") + "evaluation:\n  size: 4\n")
    task = tasks.get(str(path))
    assert task.name == "byo-basic" and task.file == str(path.resolve()) and task.suite == "reward" and task.checker
    assert tasks.get("byo-basic") is task and "byo-basic" in tasks.names()
    source, data = task.load("auto")
    assert len(data.sft_train) == 18 and len(data.sft_eval) == 2  # a tenth held out
    assert source.startswith("data.jsonl@") and data.fingerprint and data.sft_train[0].columns == {"n": 0}
    assert task.defaults == {"eval": {"prompts": 4}}
    # an edit to the data or the reward code is another data source (runs never pool or resume across it)
    (tmp_path / "rewards.py").write_text(REWARD_PY.replace("> 0", "> 1"))
    assert tasks.get(str(path)).load("auto")[0] != source


def test_every_local_file_kind_reads_the_same_rows(tmp_path):
    import pandas as pd

    rows_ = [{"prompt": f"Say {i}", "completion": f" {i}"} for i in range(10)]
    frame = pd.DataFrame(rows_)
    for suffix, write in ((".jsonl", lambda p: frame.to_json(p, orient="records", lines=True)),
                          (".json", lambda p: frame.to_json(p, orient="records")),
                          (".parquet", lambda p: frame.to_parquet(p)), (".csv", lambda p: frame.to_csv(p, index=False))):
        folder = tmp_path / suffix[1:]
        folder.mkdir()
        write(folder / f"train{suffix}")
        frame.head(3).to_json(folder / "test.jsonl", orient="records", lines=True)
        (folder / "t.yaml").write_text(f"name: byo-{suffix[1:]}\ndataset:\n  path: .\n  eval_size: 2\nreward:\n"
                                       f"  - format: '\\d'\n")
        _, data = tasks.get(str(folder / "t.yaml")).load("auto")
        assert [(e.prompt, e.reference) for e in data.sft_train + data.sft_eval] == \
            [(r["prompt"], r["completion"]) for r in rows_], suffix
        assert len(data.sft_test) == 3 and len(data.sft_eval) == 2


def test_column_mapping(tmp_path):
    text = "name: byo-mapped\ndataset:\n  path: data.jsonl\n  columns: {prompt: question}\nreward:\n  - format: x\n"
    path = write_task(tmp_path, text, data=[{"question": f"q{i}", "answer": i} for i in range(5)])
    _, data = tasks.get(str(path)).load("auto")
    assert data.sft_train[0].prompt == "q0" and data.sft_train[0].columns == {"answer": 0}


@pytest.mark.parametrize("text, message", [
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{function: 'rewards.py:overlap'}]\nmodles: {}\n",
     r"unknown key 'modles' \(valid keys: name, description, preset, dataset"),
    ("name: x\ndataset: {path: data.jsonl, colums: {}}\nreward: [{format: a}]\n",
     r"unknown key 'dataset.colums' \(valid keys: path, files, hub, config, splits, format, columns"),
    ("name: x\ndataset: {path: data.jsonl, format: chat}\nreward: [{format: a}]\n",
     r"dataset.format: Input should be 'auto', 'prompt-only', 'prompt-completion', 'preference'"),
    ("name: x\ndataset: {path: data.jsonl, hub: a/b}\nreward: [{format: a}]\n",
     "name exactly one of dataset.path, dataset.files, dataset.hub"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{format: a, verifier: math}]\n",
     r"reward\[0\].*exactly one of function, verifier, format"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{verifier: maths}]\n", r"reward\[0\].verifier: Input should be 'gsm8k' or 'math'"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: 3\n", "reward must be {model: NAME} or a list of terms"),
    ("name: x\ndataset: {path: nothere.jsonl}\nreward: [{format: a}]\n", "dataset .*nothere.jsonl does not exist"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{function: 'rewards.py:missing'}]\n",
     r"reward\[0\]: .*rewards.py has no function 'missing'; its functions: overlap"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{function: 'nope.py:f'}]\n",
     r"reward file .*nope.py does not exist"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{function: 'no_such_module_here:f'}]\n",
     "cannot import module 'no_such_module_here'"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{function: overlap}]\n", "'path/to/file.py:function'"),
    ("name: x\ndataset: {path: data.jsonl}\nreward: [{format: '(unclosed'}]\n", "not a valid regular expression"),
    ("name: tldr\ndataset: {path: data.jsonl}\nreward: [{format: a}]\n", "names task 'tldr', which a built-in"),
    ("name: [x\n", "is not valid YAML"),
])
def test_bad_task_files_are_one_line_errors_naming_file_and_key(tmp_path, text, message):
    path = write_task(tmp_path, text)
    with pytest.raises(UserError, match=message) as e:
        tasks.get(str(path)).load("auto")
    assert str(path.resolve()) in str(e.value) or str(path) in str(e.value) or "data.jsonl" in str(e.value)


def test_a_reward_module_that_fails_to_import(tmp_path):
    path = write_task(tmp_path, BASIC.format(name="byo-broken"), rewards="import not_a_module\n")
    with pytest.raises(UserError, match="importing .*rewards.py failed: ModuleNotFoundError"):
        tasks.get(str(path)).load("auto")


def test_resolve_applies_the_task_file_between_preset_and_command_line(tmp_path):
    from harness.app.config import RunConfig, changed_settings, resolve

    text = BASIC.format(name="byo-resolve") + "evaluation: {size: 5, samples: 2}\nmax_new_tokens: 7\n"
    path = write_task(tmp_path, text)
    cfg = resolve("tiny-test", {"task": {"name": str(path)}, "eval": {"samples": 3}, "train": {"lr": 0.5}})
    assert (cfg.task.name, cfg.task.file, cfg.task.source) == ("byo-resolve", str(path.resolve()), "auto")
    assert (cfg.eval.prompts, cfg.eval.samples, cfg.generation.max_new_tokens) == (5, 3, 7)  # the command line wins
    assert changed_settings(cfg) == {"train.lr": 0.5}  # the file's own settings are the base, not changes
    tasks.REGISTRY.pop("byo-resolve")
    again = RunConfig.model_validate(json.loads(json.dumps(cfg.model_dump())))  # a run directory's config
    assert again.task.file == cfg.task.file and tasks.get("byo-resolve").file == cfg.task.file
    # a task in code dumps no `file`, and no eval.samples unless set (config hashes of earlier runs unchanged)
    plain = resolve("tiny-test").model_dump()
    assert "file" not in plain["task"] and "samples" not in plain["eval"]


def test_the_llm_judge_as_a_reward_function(tmp_path, monkeypatch):
    """evals.judge_reward through a task file: the judge's verdicts (both orders) against the `reference` column."""
    from tests.openai_stub import OpenAIStub

    def longer_wins(body):  # prefers the longer of the two texts it is shown
        text = body["messages"][-1]["content"]
        a = text.split("Summary A:")[1].split("Summary B:")[0].strip()
        b = text.split("Summary B:")[1].split("\n\nFirst write")[0].strip()
        return "Preferred: A" if len(a) > len(b) else "Preferred: B" if len(b) > len(a) else "no idea"

    rows_ = [{"prompt": f"Post {i}", "reference": "a medium reference"} for i in range(4)]
    path = write_task(tmp_path, "name: judged\ndataset: {path: data.jsonl, eval_size: 1}\nreward:\n"
                                "  - function: evals.judge_reward:win_against_reference\n", data=rows_)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    with OpenAIStub(longer_wins) as stub:
        monkeypatch.setenv("HARNESS_JUDGE_BASE_URL", stub.base_url)
        _, data = tasks.get(str(path)).load("auto")
        got = data.reward.scores(["short", "a much much longer completion", "a medium reference"],
                                 data.sft_train[:3])
    assert got == [0.0, 1.0, 0.0]  # loss, win, and a tie the stub cannot read in either order: None, scored 0
    # both orders of each pair; the third pair's two orders are the same text, asked once (the judge's cache)
    assert data.reward.unscored == 1 and len(stub.requests) == 5


def test_a_hub_task_file_names_its_data_for_prepare_and_list_shows_registered_files(tmp_path, capsys):
    from harness.cli import main
    from harness.core.settings import TaskSettings

    path = write_task(tmp_path, "name: byo-hub\ndescription: prompts from the hub\ndataset:\n  hub: me/prompts\n"
                                "  config: main\n  splits: {train: train, test: test}\nreward: [{format: a}]\n")
    task = tasks.register_file(path)  # what a package's `harness.tasks` entry point may call for its task files
    [asset] = task.hub_data(TaskSettings(name="byo-hub"))
    assert (asset.name, asset.config, asset.splits) == ("me/prompts", "main", ("train", "test"))
    assert task.hub_data(TaskSettings(name="byo-hub", source=str(tmp_path))) == []  # --source DIR: nothing fetched
    with pytest.raises(SystemExit):
        main(["list"])
    assert "byo-hub" in capsys.readouterr().out


def test_a_runs_own_source_reloads_only_unchanged_data(tmp_path):
    """`harness eval RUN` passes the run's resolved source back: the same data loads, edited data is refused."""
    path = write_task(tmp_path, BASIC.format(name="byo-again"))
    source, data = tasks.get(str(path)).load("auto")
    again, _ = tasks.get(str(path)).load(source)
    assert again == source
    (tmp_path / "data.jsonl").write_text(json.dumps({"prompt": "something else"}) + "\n" * 2 +
                                         json.dumps({"prompt": "and more"}) + "\n")
    with pytest.raises(UserError, match="its data or reward code changed since the run was made"):
        tasks.get(str(path)).load(source)
