import pytest

from algorithms.base import make
from harness import tasks
from harness.app.config import parse_overrides, preset_names, resolve
from harness.core.errors import UserError


def test_default_preset_resolves_and_overrides_apply():
    cfg = resolve("tiny", parse_overrides(["train.lr=1e-4", "algo.eta=0.5", "eval.every=0"]))
    assert cfg.train.lr == 1e-4 and cfg.algo_args == {"eta": 0.5} and cfg.eval.every == 0
    assert cfg.task.source == "synthetic" and cfg.model.policy == "builtin:tiny"


def test_another_task_on_a_preset_does_not_inherit_the_presets_data_source():
    """arith's source `synthetic` is the arith generator: `--task math` or `--task gsm8k` on that preset reads its
    own default (auto: the hub) unless the command line names one, and a dry run's hint names the task."""
    assert resolve("arith").task.source == "synthetic"
    assert resolve("arith", {"task": {"name": "math"}}).task.source == "auto"
    assert resolve("arith", {"task": {"name": "gsm8k", "source": "/data/gsm8k"}}).task.source == "/data/gsm8k"
    assert resolve("tiny-hard", {"task": {"name": "tldr"}}).task.source == "synthetic-hard"  # its own task: kept


def test_presets_include_each_other():
    cfg = resolve("tiny-test")
    assert cfg.model.tiny.hidden_size == 64  # its own value
    assert cfg.generation.max_new_tokens == 32  # inherited from tiny
    assert {"tiny", "tiny-test"} <= set(preset_names())


@pytest.mark.parametrize("call, message", [
    (lambda: resolve("nope"), "unknown preset 'nope'; valid presets: "),
    (lambda: tasks.get(resolve("tiny", {"task": {"name": "nope"}}).task.name), "unknown task 'nope'; valid tasks: "),
    (lambda: resolve("tiny", {"train": {"lr": -1}}), "invalid config value at train.lr"),
    (lambda: resolve("tiny", {"train": {"learning_rate": 1}}), "invalid config value at train.learning_rate"),
    (lambda: make("nope"), "unknown algorithm 'nope'; valid algorithms: "),
    (lambda: make("rebel", {"etta": 1}), "algorithm 'rebel' has no setting etta; its settings: "),
    (lambda: parse_overrides(["train.lr"]), "--set expects KEY=VALUE"),
])
def test_bad_input_fails_with_one_line_that_lists_choices(call, message):
    with pytest.raises(UserError) as err:
        call()
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    if "; valid" in message:  # the message names the valid choices
        assert "rebel" in str(err.value) or "tiny" in str(err.value) or "tldr" in str(err.value)


def test_evaluation_schedule_every_and_at():
    """Periodic evaluations, extra early ones from eval.at, never a duplicate of the run's final evaluation."""
    from pydantic import ValidationError

    from harness.app.config import EvalSettings

    s = EvalSettings(every=10, at=[2, 4, 40])
    assert [i for i in range(1, 41) if s.due(i, 40)] == [2, 4, 10, 20, 30]
    assert [i for i in range(1, 6) if EvalSettings(every=0, at=[3]).due(i, 5)] == [3]
    assert not any(EvalSettings().due(i, 40) for i in range(1, 41))  # the default: the end only
    assert resolve("tiny").eval.at == [2, 4, 6]
    with pytest.raises(ValidationError):
        EvalSettings(at=[0])
