"""The LLM judge as a reward function, for task files (docs/tasks.md "Rewards"):

    reward:
      - function: evals.judge_reward:win_against_reference

Each completion is judged against its row's `reference` column by the harness's OpenAI-compatible judge
(evals/judge.py: its template, order protocol, retries and answer cache, so a repeated pair costs no request):
1.0 a win, 0.5 a tie (the two orders disagree), 0.0 a loss, None when the judge's answer cannot be read (skipped,
as any None). The endpoint and model come from the judge's environment variables: HARNESS_JUDGE_BASE_URL,
HARNESS_JUDGE_API_KEY (or OPENAI_API_KEY), HARNESS_JUDGE_MODEL; answers are cached under $HARNESS_CACHE/judge.
"""
from __future__ import annotations

from evals.judge import OpenAIJudge

SCORES = {"win": 1.0, "tie": 0.5, "loss": 0.0}
_JUDGES: dict[tuple, OpenAIJudge] = {}  # one client per endpoint, kept across batches


def _text(x) -> str:
    return x if isinstance(x, str) else x[-1]["content"]


def win_against_reference(prompts, completions, reference=None, **kwargs) -> list[float | None]:
    if reference is None:
        raise ValueError("the judge reward compares each completion with the row's 'reference' column; the rows "
                         "have none")
    import os

    key = tuple(os.environ.get(k) for k in ("HARNESS_JUDGE_MODEL", "HARNESS_JUDGE_BASE_URL", "OPENAI_BASE_URL"))
    if key not in _JUDGES:
        _JUDGES[key] = OpenAIJudge()
    result = _JUDGES[key].win_rate([_text(p) for p in prompts], [_text(c) for c in completions],
                                   [str(r) for r in reference])
    return [SCORES.get(s["verdict"]) for s in result["per_sample"]]
