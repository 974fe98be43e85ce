"""The image task's suite (harness/app/image_run.py evaluates its runs): the held-out mean reward of one image per
evaluation prompt from fixed starting noise, written to evals/image.json; what `harness report` asks of a suite."""
from __future__ import annotations

from evals.suites import TaskSuite, num, register
from harness.core.errors import UserError


class ImageSuite(TaskSuite):
    name = "image"
    summary = "held-out image reward (colourfulness, aesthetic score, ...): one image per prompt, fixed noise"
    metric_keys = ("score",)
    columns = ("score", "score std", "images")
    uses_judge = False
    cut_keys = ("score",)
    verdict_units = {"score": ("image reward", 1.0, "", 4)}
    model_suite_tables = False

    def file_name(self, task: str) -> str:
        return "image.json"

    def figures(self, members, labels, opts, suffix):
        from evals.image_plots import report_figure

        return [(report_figure, members, opts.x_metric, opts.level, opts.out / "plots" / f"image{suffix}.png")]

    def evaluate(self, cfg, policy, reference, models, examples, data, judge, runtime):
        raise UserError("image runs are evaluated by harness/app/image_run.py, not by the language runner")

    def table_row(self, m):
        return [num(m.get("score")), num(m.get("score_std")), str(m.get("n", "n/a"))]

    def describe(self, result):
        return f"image reward {num(result.get('score'))} over {result.get('n')} images"


register(ImageSuite())
