"""The win-rate judge through the real openai client against a local stub endpoint: canaries, retries, cache, keys."""
from __future__ import annotations

import re
import socket

import pytest

from evals.judge import TLDR_TEMPLATE, CompletionClient, Endpoint, OpenAIJudge, parse_preference
from harness.core.errors import UserError
from tests.openai_stub import OpenAIStub, user_text

KEY = "sk-test-do-not-leak-0123456789"
POSTS = [f"Post {i}: my roommate {e} last week. What should I do?" for i, e in
         enumerate(["borrowed money", "moved out", "read my diary", "lied to me", "quit college", "adopted a dog"])]
REFERENCES = [f"Roommate {e}; asking what to do." for e in
              ["borrowed money", "moved out", "read my diary", "lied to me", "quit college", "adopted a dog"]]
NULL_OUTPUT = "A summary."


def summaries(body: dict) -> tuple[str, str]:
    m = re.search(r"Summary A:\n(.*?)\n\nSummary B:\n(.*?)\n\nFirst write", user_text(body), re.S)
    return m.group(1), m.group(2)


def longer_wins(body: dict) -> str:
    """A sane-enough judge for these tests: the summary with more content is better."""
    a, b = summaries(body)
    return f"Comparison: one summary covers more of the post.\nPreferred: {'A' if len(a) >= len(b) else 'B'}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("HARNESS_JUDGE_MODEL", "HARNESS_JUDGE_BASE_URL", "HARNESS_JUDGE_API_KEY", "OPENAI_BASE_URL",
                "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def make_judge(stub: OpenAIStub, tmp_path, **kw) -> OpenAIJudge:
    return OpenAIJudge(model="stub-judge", base_url=stub.base_url, api_key=KEY, cache_dir=tmp_path / "cache",
                       backoff_s=0.001, max_concurrency=4, **kw)


def test_template_asks_for_the_papers_answer_format():
    assert "accuracy, coverage, and coherence" in TLDR_TEMPLATE
    assert TLDR_TEMPLATE.rstrip().endswith('Comparison: <one-sentence comparison and explanation>\n'
                                           'Preferred: <"A" or "B">')


@pytest.mark.parametrize("answer,expected", [
    ("Comparison: A is better.\nPreferred: A", "A"),
    ("Comparison: x\n**Preferred:** B", "B"),
    ('Comparison: x\nPreferred: "B"', "B"),
    ("Comparison: x\nPreferred: Summary A", "A"),
    ("Preferred: B\nOn reflection...\nPreferred: A", "A"),
    ("Comparison: both are fine.\nPreferred: a summary that is shorter", None),
    ("I cannot decide.", None),
    ("", None),
])
def test_parse_preference(answer, expected):
    assert parse_preference(answer) == expected


def test_always_a_judge_gives_half_with_zero_consistency(tmp_path):
    with OpenAIStub(lambda body: "Comparison: the first one.\nPreferred: A") as stub:
        result = make_judge(stub, tmp_path).win_rate(POSTS, REFERENCES, [r + " Extra detail." for r in REFERENCES])
    assert result["win_rate"] == 0.5
    assert result["position_consistency"] == 0.0
    assert (result["ties"], result["wins"], result["losses"], result["parse_failures"]) == (6, 0, 0, 0)
    assert result["calls"] == len(stub.requests) == 12  # both orders of every pair
    assert result["per_sample"][0]["order_ab"] == "policy" and result["per_sample"][0]["order_ba"] == "reference"


def test_null_model_scores_zero_and_a_better_model_wins(tmp_path):
    with OpenAIStub(longer_wins) as stub:
        judge = make_judge(stub, tmp_path)
        null = judge.win_rate(POSTS, [NULL_OUTPUT] * len(POSTS), REFERENCES)
        better = judge.win_rate(POSTS, [r + " Roommate apologised." for r in REFERENCES], REFERENCES)
    assert null["win_rate"] == 0.0 and null["losses"] == len(POSTS) and null["position_consistency"] == 1.0
    assert better["win_rate"] == 1.0 and better["wins"] == len(POSTS)
    assert null["prompt_tokens"] > 0 and null["completion_tokens"] > 0 and null["judge"] == "stub-judge"
    # the judge saw the post and both texts, in both orders (requests arrive concurrently, in any order)
    seen = [summaries(r.body) for r in stub.requests if POSTS[0] in user_text(r.body)][:2]
    assert sorted(seen) == sorted([(NULL_OUTPUT, REFERENCES[0]), (REFERENCES[0], NULL_OUTPUT)])


def test_garbage_answers_are_parse_failures_not_wins(tmp_path):
    with OpenAIStub(lambda body: "Both summaries have their merits.") as stub:
        result = make_judge(stub, tmp_path).win_rate(POSTS, REFERENCES, REFERENCES)
    assert result["parse_failures"] == result["n"] == len(POSTS)
    assert result["win_rate"] is None and result["wins"] == result["ties"] == 0
    assert result["per_sample"][0]["raw_ab"] == "Both summaries have their merits."


def test_one_unparseable_order_excludes_the_pair(tmp_path):
    def half_broken(body):
        a, _ = summaries(body)
        return "Preferred: A" if a == NULL_OUTPUT else "no idea"
    with OpenAIStub(half_broken) as stub:
        result = make_judge(stub, tmp_path).win_rate(POSTS[:2], [NULL_OUTPUT] * 2, REFERENCES[:2])
    assert result["parse_failures"] == 2 and result["win_rate"] is None
    assert result["per_sample"][0]["order_ab"] == "policy" and result["per_sample"][0]["order_ba"] is None


def test_injected_429_and_500_are_retried_and_counted(tmp_path):
    with OpenAIStub(longer_wins) as stub:
        stub.fail_next(429, 500, 503)
        result = make_judge(stub, tmp_path).win_rate(POSTS, [NULL_OUTPUT] * len(POSTS), REFERENCES)
    assert result["retries"] == 3
    assert result["calls"] == 12 and len(stub.answered) == 12 and len(stub.requests) == 15
    assert result["win_rate"] == 0.0 and result["parse_failures"] == 0


def test_repeated_judging_hits_the_cache_and_the_key_stays_out_of_files(tmp_path):
    with OpenAIStub(longer_wins) as stub:
        first = make_judge(stub, tmp_path).win_rate(POSTS, [NULL_OUTPUT] * len(POSTS), REFERENCES)
        sent = len(stub.requests)
        second = make_judge(stub, tmp_path).win_rate(POSTS, [NULL_OUTPUT] * len(POSTS), REFERENCES)
        assert len(stub.requests) == sent  # nothing new was sent
    assert second["cache_hits"] == 12 and second["calls"] == 0 and second["prompt_tokens"] == 0
    assert second["win_rate"] == first["win_rate"] and second["per_sample"] == first["per_sample"]
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"  # the key was used...
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)  # ...and never stored
    assert KEY not in repr(make_judge(stub, tmp_path).endpoint)


def test_a_different_judge_model_does_not_reuse_verdicts(tmp_path):
    with OpenAIStub(longer_wins) as stub:
        make_judge(stub, tmp_path).win_rate(POSTS[:1], [NULL_OUTPUT], REFERENCES[:1])
        other = OpenAIJudge(model="other-judge", base_url=stub.base_url, api_key=KEY, cache_dir=tmp_path / "cache")
        result = other.win_rate(POSTS[:1], [NULL_OUTPUT], REFERENCES[:1])
    assert result["cache_hits"] == 0 and result["calls"] == 2
    assert stub.requests[-1].body["model"] == "other-judge"


def test_missing_key_for_a_remote_endpoint_names_the_variable():
    with pytest.raises(UserError, match="HARNESS_JUDGE_API_KEY"):
        OpenAIJudge(base_url="https://judge.example.com/v1")


def test_environment_configures_the_judge(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://openai.example.com/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    monkeypatch.setenv("HARNESS_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("HARNESS_JUDGE_MODEL", "my-judge")
    endpoint = Endpoint.resolve()
    assert (endpoint.model, endpoint.base_url, endpoint.api_key) == ("my-judge", "http://127.0.0.1:9/v1",
                                                                      "from-openai-env")
    monkeypatch.delenv("OPENAI_API_KEY")
    assert Endpoint.resolve().api_key == "EMPTY"  # a local server needs no key


def closed_port_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_preflight_checks_reachability_and_model_before_any_judging(tmp_path):
    with OpenAIStub(longer_wins, model_ids=("stub-judge", "other")) as stub:
        make_judge(stub, tmp_path).client.preflight()
        missing = CompletionClient(Endpoint("gpt-9", stub.base_url, KEY), cache_dir=tmp_path)
        with pytest.raises(UserError, match="does not serve 'gpt-9'; it serves: other, stub-judge"):
            missing.preflight()
        assert stub.requests == []  # listing models is free: no completion was requested
    with pytest.raises(UserError, match="could not reach"):
        CompletionClient(Endpoint("m", closed_port_url(), KEY), cache_dir=tmp_path).preflight()


def test_unreachable_endpoint_raises_user_error_with_url(tmp_path):
    url = closed_port_url()
    judge = OpenAIJudge(model="m", base_url=url, api_key=KEY, cache_dir=tmp_path, max_retries=2, backoff_s=0.001)
    with pytest.raises(UserError, match=re.escape(url)) as err:
        judge.win_rate(POSTS[:1], ["x"], ["y"])
    assert "after 3 attempts" in str(err.value)


def test_rejected_key_is_a_user_error_without_the_key(tmp_path):
    with OpenAIStub(longer_wins) as stub:
        stub.fail_next(401, 401)
        with pytest.raises(UserError, match="rejected the API key") as err:
            make_judge(stub, tmp_path).win_rate(POSTS[:1], ["x"], ["y"])
    assert KEY not in str(err.value)


# --- settings: order protocol, prompt template, cache location, local-server sizing (issues 10 and 11) -------------

def test_random_order_judges_each_pair_once_in_a_seeded_order(tmp_path):
    responses = [r + " Roommate apologised." for r in REFERENCES]
    with OpenAIStub(longer_wins) as stub:
        judge = make_judge(stub, tmp_path, order="random", seed=3)
        result = judge.win_rate(POSTS, responses, REFERENCES)
        shown = [summaries(r.body) for r in stub.requests]
    assert result["calls"] == len(POSTS) and result["order"] == "random"
    assert result["win_rate"] == 1.0 and result["position_consistency"] is None  # one order: unmeasured
    # the order comes from the seed and the pair: recomputed by hand for each pair
    firsts = [judge.policy_first(p, r, ref) for p, r, ref in zip(POSTS, responses, REFERENCES)]
    assert sorted(shown) == sorted((r, ref) if f else (ref, r) for r, ref, f in zip(responses, REFERENCES, firsts))
    assert 0 < sum(firsts) < len(POSTS)  # both orders occur on six pairs with this seed
    assert result["a_rate"] == pytest.approx(sum(firsts) / len(POSTS))  # the longer one wins, wherever it stands


def test_random_order_with_an_always_a_judge_shows_its_bias_in_the_a_rate(tmp_path):
    with OpenAIStub(lambda body: "Preferred: A") as stub:
        result = make_judge(stub, tmp_path, order="random").win_rate(POSTS, REFERENCES, REFERENCES)
    assert result["a_rate"] == 1.0 and result["parse_failures"] == 0
    assert result["wins"] == sum(s["shown"] == "ab" for s in result["per_sample"])


def test_unknown_order_is_a_user_error():
    with pytest.raises(UserError, match="valid: both, random"):
        OpenAIJudge(base_url="http://127.0.0.1:9/v1", order="shuffled")


def test_default_template_file_is_todays_wording():
    from evals.judge import DEFAULT_TEMPLATE_PATH, read_template
    assert DEFAULT_TEMPLATE_PATH.name == "tldr_judge.txt" and read_template() == TLDR_TEMPLATE
    assert DEFAULT_TEMPLATE_PATH.read_text().startswith("Which of the following summaries does a better job")


def test_a_users_template_file_is_used_and_keys_its_own_cache(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text('Post: {post}\nSummary A:\n{a}\n\nSummary B:\n{b}\n\nFirst write {"json": "braces stay"}\n')
    with OpenAIStub(longer_wins) as stub:
        default = make_judge(stub, tmp_path).win_rate(POSTS[:1], [NULL_OUTPUT], REFERENCES[:1])
        custom = make_judge(stub, tmp_path, template_path=mine).win_rate(POSTS[:1], [NULL_OUTPUT], REFERENCES[:1])
        sent = user_text(stub.requests[-1].body)
    assert custom["cache_hits"] == 0 and custom["calls"] == 2  # another template: nothing reused
    assert custom["prompt_hash"] != default["prompt_hash"] and custom["template"] == str(mine)
    assert sent.startswith(f"Post: {POSTS[0]}\n") and '{"json": "braces stay"}' in sent
    with OpenAIStub(longer_wins) as stub:  # the order protocol is part of the key too
        again = make_judge(stub, tmp_path, order="random").win_rate(POSTS[:1], [NULL_OUTPUT], REFERENCES[:1])
    assert again["cache_hits"] == 0


def test_a_template_without_placeholders_names_them(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Which is better, A or B?")
    with pytest.raises(UserError, match=r"lacks \{post\}, \{a\}, \{b\}"):
        OpenAIJudge(base_url="http://127.0.0.1:9/v1", template_path=bad)
    with pytest.raises(UserError, match="cannot read it"):
        OpenAIJudge(base_url="http://127.0.0.1:9/v1", template_path=tmp_path / "missing.txt")


def test_judge_cache_honours_harness_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "hc"))
    judge = OpenAIJudge(model="m", base_url="http://127.0.0.1:9/v1")
    assert judge.client.cache_path == tmp_path / "hc" / "judge" / "judge_cache.sqlite"


def test_local_servers_get_one_request_at_a_time_and_a_long_timeout(monkeypatch):
    local = CompletionClient(Endpoint("m", "http://127.0.0.1:9/v1", KEY), cache_dir="/tmp")
    remote = CompletionClient(Endpoint("m", "https://api.example.com/v1", KEY), cache_dir="/tmp")
    assert (local.max_concurrency, local.timeout) == (1, 900.0)
    assert (remote.max_concurrency, remote.timeout) == (8, 120.0)
    monkeypatch.setenv("HARNESS_JUDGE_TIMEOUT", "30")
    monkeypatch.setenv("HARNESS_JUDGE_CONCURRENCY", "2")
    assert CompletionClient(Endpoint("m", "http://localhost:9/v1", KEY), cache_dir="/tmp").max_concurrency == 2
    monkeypatch.setenv("HARNESS_JUDGE_TIMEOUT", "soon")
    with pytest.raises(UserError, match="HARNESS_JUDGE_TIMEOUT a number of seconds"):
        CompletionClient(Endpoint("m", "http://localhost:9/v1", KEY), cache_dir="/tmp")


def test_a_slow_local_server_is_slow_not_unreachable_and_is_asked_once(tmp_path):
    with OpenAIStub.like_transformers_serve(longer_wins, delay_s=1.0) as stub:
        judge = OpenAIJudge(model="/models/judge", base_url=stub.base_url, cache_dir=tmp_path, timeout=0.2)
        with pytest.raises(UserError, match=r"is up \(it lists its models\) but did not answer within 0.2 s") as err:
            judge.win_rate(POSTS[:2], ["x", "y"], ["z", "w"])
        assert len(stub.requests) == 1  # no retry, no second request queued behind the abandoned one
    assert "slow, not unreachable" in str(err.value) and "(1 attempt, " in str(err.value)


def test_what_transformers_serve_rejects_is_one_line_in_its_own_words(tmp_path):
    with OpenAIStub.like_transformers_serve(longer_wins) as stub:
        other = CompletionClient(Endpoint("gpt-4o", stub.base_url, KEY), cache_dir=tmp_path)
        with pytest.raises(UserError, match="answered 400 for model 'gpt-4o': Server is pinned to '/models/judge'"):
            other.complete_many([[{"role": "user", "content": "hi"}]], "t")
        stub.known_fields = stub.known_fields - {"temperature"}  # a server whose schema lacks a field we send
        served = CompletionClient(Endpoint("/models/judge", stub.base_url, KEY), cache_dir=tmp_path)
        with pytest.raises(UserError, match=r"answered 422 .*Unexpected fields in the request: \{'temperature'\}"):
            served.complete_many([[{"role": "user", "content": "hi"}]], "t")
