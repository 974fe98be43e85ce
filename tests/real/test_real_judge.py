"""The judge against a real OpenAI-compatible server: `transformers serve` hosting SmolLM2-135M-Instruct, as the
TL;DR judge, the MT-Bench grader and AlpacaEval's annotator. A 135M judge is weak: these tests check that what it
does is reported as what it is (parse failures counted, never a made-up 50%), and that what the server lacks ends
in one clear line. Answers are capped at a few dozen tokens: the server runs on this machine's CPU."""
from __future__ import annotations

import json
import time

import pytest

from evals.alpaca_eval import run_alpaca_eval
from evals.judge import CompletionClient, Endpoint, OpenAIJudge
from evals.mt_bench import Question, grade
from harness.core.errors import UserError
from tests.evals.test_alpaca_eval import REFERENCE
from tests.evals.test_alpaca_eval import hub_cache  # noqa: F401  (fixture: df_gamed.csv, offline)

POSTS = ["My roommate borrowed 200 dollars a month ago and now avoids me. Should I ask for it back or let it go?",
         "I got a job offer abroad but my partner wants to stay near family. How do we decide together?"]
REFERENCES = ["Roommate owes me 200 dollars and avoids me; ask for it or drop it?",
              "Job offer abroad, partner wants to stay; how to decide?"]
WORSE = ["I like turtles.", "The weather was nice."]


@pytest.fixture
def endpoint(served_smollm2) -> Endpoint:
    base_url, model = served_smollm2
    return Endpoint(model, base_url, "EMPTY")


def test_tldr_judge_on_the_real_server(endpoint, tmp_path):
    judge = OpenAIJudge(model=endpoint.model, base_url=endpoint.base_url, cache_dir=tmp_path, order="both")
    assert (judge.client.max_concurrency, judge.client.timeout) == (1, 900.0)  # sized for a local server
    judge.client.max_tokens = 40  # a comparison sentence and the verdict line fit
    judge.client.preflight()
    start = time.monotonic()
    result = judge.win_rate(POSTS[:1], WORSE[:1], REFERENCES[:1])  # one pair, both orders: 2 requests
    seconds = time.monotonic() - start
    assert result["calls"] == 2 and result["n"] == 1 and result["retries"] == 0
    assert all(s["raw_ab"].strip() and s["raw_ba"].strip() for s in result["per_sample"])
    judged = result["wins"] + result["losses"] + result["ties"]
    assert judged + result["parse_failures"] == 1
    # no verdict read -> no rate; otherwise the rate is computed from the verdicts read, never a default
    assert (result["win_rate"] is None) == (judged == 0)
    print(json.dumps({"tldr_judge": {k: result[k] for k in ("win_rate", "parse_failures", "position_consistency",
                                                            "ties", "completion_tokens")}, "seconds": seconds}))


def test_mt_bench_grader_on_the_real_server(endpoint, tmp_path):
    client = CompletionClient(endpoint, cache_dir=tmp_path, max_tokens=48)
    question = Question(1, "writing", ("Write one sentence about the sea.", "Now make it rhyme."))
    summary, records = grade([question], [["The sea is blue and wide.", "The sea is blue, I love it too."]], client)
    assert summary["calls"] == 2 and len(records) == 2
    assert all(r["judgment"].strip() for r in records)
    assert all(r["score"] is None or 1 <= r["score"] <= 10 for r in records)
    assert summary["n_missing"] == sum(r["score"] is None for r in records)  # unreadable = missing, not zero
    print(json.dumps({"mt_bench": {"n_missing": summary["n_missing"], "scores": [r["score"] for r in records]}}))


def test_alpaca_eval_annotator_without_logprobs_is_one_clear_line(endpoint, tmp_path, hub_cache):  # noqa: F811
    outputs = [{"instruction": "What is the capital of France?", "output": "Paris.", "generator": "m"},
               {"instruction": "How many legs does a spider have?", "output": "Eight.", "generator": "m"}]
    with pytest.raises(UserError, match="log-probabilities") as err:
        run_alpaca_eval(outputs, REFERENCE, tmp_path, endpoint=endpoint, hub_cache_dir=hub_cache)
    assert "gave no readable verdict for any of the 2 pairs" in str(err.value) and "\n" not in str(err.value)


def test_a_model_the_server_does_not_host_is_named(endpoint, tmp_path):
    other = CompletionClient(Endpoint("gpt-4o", endpoint.base_url, "EMPTY"), cache_dir=tmp_path)
    with pytest.raises(UserError, match=f"does not serve 'gpt-4o'; it serves: {endpoint.model}"):
        other.preflight()
    with pytest.raises(UserError, match="answered 400 for model 'gpt-4o': Server is pinned to"):
        other.complete_many([[{"role": "user", "content": "Hi"}]], "t")  # without the preflight


def test_a_slow_local_server_is_called_slow_and_not_asked_twice(endpoint, tmp_path):
    """Last in the file: the server finishes the abandoned request (8 tokens) on its own time."""
    client = CompletionClient(endpoint, cache_dir=tmp_path, max_tokens=8, timeout=0.05)
    with pytest.raises(UserError, match="is up .* but did not answer within 0.05 s .*slow, not unreachable") as err:
        client.complete_many([[{"role": "user", "content": "Count to five."}]], "t")
    assert "(1 attempt, " in str(err.value)  # a local timeout is not retried: no second copy queues up
