"""LLM-as-judge through any OpenAI-compatible endpoint (OpenAI itself, a vLLM server with an open judge, a proxy).

Two layers:
- `CompletionClient`: chat completions with a bounded thread pool, retries with exponential backoff on 429/5xx/
  timeouts, and a persistent sqlite cache keyed by (judge model, prompt-template hash, decoding settings, messages),
  so an interrupted or repeated judging never pays twice. MT-Bench grading uses it too.
- `OpenAIJudge.win_rate`: the TL;DR win rate against references with a prompt template file (default
  evals/templates/tldr_judge.txt, the project's wording of the paper's prompt, REBEL Appendix I.1.5) and a stated
  order protocol. order="both" (default): each pair is judged in both orders, a win only when both orders prefer the
  policy, a loss when both prefer the reference, a tie when they disagree (position bias). order="random" (the N+
  code's protocol, eval/oai.py of summarize_from_feedback_details): one A/B order per pair, drawn from a seed and the
  pair itself. Either way a pair with an unparseable answer is a parse failure, excluded from the rate rather than
  coin-flipped (the N+ script coin-flips it).
- A local server (127.0.0.1, localhost) gets one request at a time and a long timeout, and a timed-out request is not
  sent again (the server would still be working on the first copy): a CPU-hosted judge is slow, not unreachable, and
  the errors say which of the two it is.

The API key is only ever handed to the `openai` client: it is never written to the cache, a result or a log line.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import openai

from harness.core.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_JUDGE_MODEL = "gpt-4o"  # a GPT-4-class judge; the paper used GPT-4
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
ORDERS = ("both", "random")
# (concurrency, timeout in s): a hosted API takes parallel requests; a server on this machine (often on its CPU)
# works through them one by one, so parallel requests only queue up there and time out together.
REMOTE_DEFAULTS, LOCAL_DEFAULTS = (8, 120.0), (1, 900.0)

# Written for this project after the description of the paper's prompt (REBEL Appendix I.1.5, itself the DPO
# paper's TL;DR prompt): same criteria and the same two-line answer format, which `parse_preference` reads.
# Placeholders {post}, {a}, {b}; a user's own file replaces it (template_path, config eval.judge_template).
DEFAULT_TEMPLATE_PATH = Path(__file__).parent / "templates" / "tldr_judge.txt"
PLACEHOLDERS = ("post", "a", "b")


def read_template(path: Path | str | None = None) -> str:
    """A judge prompt template from a text file (the trailing newline dropped); it must use {post}, {a} and {b}."""
    path = Path(path) if path is not None else DEFAULT_TEMPLATE_PATH
    try:
        template = path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as e:
        raise UserError(f"judge template {path}: cannot read it ({e.strerror or type(e).__name__})") from None
    missing = [f"{{{k}}}" for k in PLACEHOLDERS if f"{{{k}}}" not in template]
    if missing:
        raise UserError(f"judge template {path} lacks {', '.join(missing)}: it must place the post as {{post}} and "
                        f"the two summaries as {{a}} and {{b}}")
    return template


def fill_template(template: str, post: str, a: str, b: str) -> str:
    """Replace {post}, {a}, {b} in one pass: other braces in a user's template stay as written, and a summary that
    happens to contain "{b}" is not substituted again."""
    values = {"post": post, "a": a, "b": b}
    return re.sub(r"\{(post|a|b)\}", lambda m: values[m.group(1)], template)


TLDR_TEMPLATE = read_template()


def is_local(base_url: str) -> bool:
    return urlparse(base_url).hostname in _LOCAL_HOSTS


def default_cache_dir() -> Path:
    """HARNESS_CACHE/judge (default ~/.cache/harness/judge), read when a client is made, not at import."""
    from harness.core.store import cache_root
    return cache_root(None) / "judge"


def client_defaults(base_url: str, max_concurrency: int | None = None, timeout: float | None = None) -> tuple[int, float]:
    """(concurrency, timeout) for this endpoint: the arguments, else HARNESS_JUDGE_CONCURRENCY / _TIMEOUT, else the
    local or remote default."""
    env = os.environ.get
    local_c, local_t = LOCAL_DEFAULTS if is_local(base_url) else REMOTE_DEFAULTS
    try:
        concurrency = int(max_concurrency or env("HARNESS_JUDGE_CONCURRENCY") or local_c)
        timeout = float(timeout or env("HARNESS_JUDGE_TIMEOUT") or local_t)
    except ValueError:
        raise UserError("HARNESS_JUDGE_CONCURRENCY must be a whole number and HARNESS_JUDGE_TIMEOUT a number of "
                        "seconds") from None
    if concurrency < 1 or timeout <= 0:
        raise UserError(f"judge concurrency must be >= 1 and its timeout > 0; got {concurrency} and {timeout}")
    return concurrency, timeout

# "Preferred: A", "**Preferred:** B", 'Preferred: "A"', "Preferred: Summary B"; the label itself is case-sensitive so
# that "Preferred: a summary that ..." does not read as A.
_PREFERRED = re.compile(r"(?i:preferred)[\s*:\"'(\[]*(?:(?i:summary)\s+)?([AB])\b")


def parse_preference(answer: str) -> str | None:
    """"A", "B", or None when the answer has no readable "Preferred:" line (the last one wins)."""
    found = _PREFERRED.findall(answer or "")
    return found[-1] if found else None


@dataclass(frozen=True)
class Endpoint:
    """Where the judge lives. Arguments win over HARNESS_JUDGE_* which win over OPENAI_* environment variables."""
    model: str
    base_url: str
    api_key: str = field(repr=False)

    @classmethod
    def resolve(cls, model: str | None = None, base_url: str | None = None, api_key: str | None = None) -> "Endpoint":
        env = os.environ.get
        model = model or env("HARNESS_JUDGE_MODEL") or DEFAULT_JUDGE_MODEL
        base_url = (base_url or env("HARNESS_JUDGE_BASE_URL") or env("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        api_key = api_key or env("HARNESS_JUDGE_API_KEY") or env("OPENAI_API_KEY")
        if not api_key:
            if not is_local(base_url):
                raise UserError(f"no API key for the judge at {base_url}: set HARNESS_JUDGE_API_KEY "
                                f"(or OPENAI_API_KEY)")
            api_key = "EMPTY"  # local servers (vLLM, the test stub) accept any key, but the client wants one
        return cls(model, base_url, api_key)


@dataclass
class Usage:
    """What one batch of requests cost: requests answered, failed attempts retried, tokens, answers from the cache."""
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


_RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)  # timeouts included


class CompletionClient:
    """Cached, retried, concurrent chat completions at temperature 0 (by default) from one endpoint."""

    def __init__(self, endpoint: Endpoint, cache_dir: Path | str | None = None, max_concurrency: int | None = None,
                 max_retries: int = 6, timeout: float | None = None, backoff_s: float = 1.0, temperature: float = 0.0,
                 max_tokens: int = 1024):
        self.endpoint = endpoint
        self.local = is_local(endpoint.base_url)
        self.max_concurrency, self.timeout = client_defaults(endpoint.base_url, max_concurrency, timeout)
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.temperature, self.max_tokens = temperature, max_tokens
        # max_retries=0: the retry loop is ours, so that retries are counted and the final error names the URL.
        self._client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=self.timeout,
                                     max_retries=0)
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_path = cache_dir / "judge_cache.sqlite"
        self._db = sqlite3.connect(self.cache_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, model TEXT, template_hash "
                         "TEXT, answer TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
        self._lock = threading.Lock()

    def server_answers(self) -> bool:
        """Does the server answer at all (its model list, within 10 s)? Tells a slow judge from an unreachable one."""
        try:
            self._client.with_options(timeout=10.0).models.list()
        except openai.APIConnectionError:
            return False
        except openai.APIError:
            pass  # it answered, if only with an error
        return True

    def preflight(self) -> None:
        """Fail fast, before hours of generation, when the endpoint is unreachable, rejects the key or does not
        serve the judge model. Servers without a model list (404 and the like) are given the benefit of the doubt."""
        url = self.endpoint.base_url
        try:
            served = [m.id for m in self._client.models.list()]
        except openai.AuthenticationError:
            raise _key_rejected(url) from None
        except openai.APIConnectionError as e:
            raise UserError(f"judge: could not reach {url} ({type(e).__name__}); {_CHECK_URL}") from None
        except openai.APIStatusError:
            return
        if served and self.endpoint.model not in served:
            raise UserError(f"judge: {url} does not serve {self.endpoint.model!r}; it serves: "
                            f"{', '.join(sorted(served)[:20])}")

    def complete_many(self, messages_list: list[list[dict]], template_hash: str) -> tuple[list[str], Usage]:
        """One answer per conversation, in order. Identical conversations are requested once."""
        usage = Usage()
        keys = [self._key(m, template_hash) for m in messages_list]
        answers = {k: self._cached(k) for k in set(keys)}
        usage.cache_hits = sum(answers[k] is not None for k in keys)
        todo = {k: m for k, m in zip(keys, messages_list) if answers[k] is None}
        if todo and self.max_concurrency == 1:  # in order, and nothing more is sent once a request has failed
            for k, m in todo.items():
                answers[k] = self._request(m, k, template_hash, usage)
        elif todo:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
                futures = {k: pool.submit(self._request, m, k, template_hash, usage) for k, m in todo.items()}
                try:
                    for k, fut in futures.items():
                        answers[k] = fut.result()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # answers already paid for stay in the cache
                    raise
        return [answers[k] for k in keys], usage

    def _key(self, messages: list[dict], template_hash: str) -> str:
        ident = [self.endpoint.model, template_hash, self.temperature, self.max_tokens, messages]
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _cached(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM completions WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _request(self, messages: list[dict], key: str, template_hash: str, usage: Usage) -> str:
        url = self.endpoint.base_url
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=self.endpoint.model, messages=messages, temperature=self.temperature,
                    max_tokens=self.max_tokens)
                break
            except _RETRYABLE as e:
                # A local server keeps generating for a request whose client gave up: a second copy would only
                # queue behind the first, so a local timeout ends here.
                local_timeout = self.local and isinstance(e, openai.APITimeoutError)
                if attempt == self.max_retries or local_timeout:
                    raise self._gave_up(attempt + 1, e) from None
                delay = min(60.0, self.backoff_s * 2 ** attempt) * random.uniform(1.0, 1.25)
                log.warning("judge request to %s failed (%s), retry %d/%d in %.1fs", url, type(e).__name__,
                            attempt + 1, self.max_retries, delay)
                with self._lock:
                    usage.retries += 1
                time.sleep(delay)
            except openai.AuthenticationError:
                raise _key_rejected(url) from None
            except openai.APIStatusError as e:  # 400, 404 (unknown model), 422 (unknown field): retrying cannot help
                raise UserError(f"judge: {url} answered {e.status_code} for model {self.endpoint.model!r}: "
                                f"{_scrub(_server_message(e), self.endpoint.api_key)}") from None
        if not response.choices:
            raise UserError(f"judge: {url} answered without any choice for model {self.endpoint.model!r}")
        answer = response.choices[0].message.content or ""
        tokens_in = getattr(response.usage, "prompt_tokens", 0) or 0
        tokens_out = getattr(response.usage, "completion_tokens", 0) or 0
        with self._lock:
            usage.calls += 1
            usage.prompt_tokens += tokens_in
            usage.completion_tokens += tokens_out
            self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key, self.endpoint.model, template_hash, answer, tokens_in, tokens_out, time.time()))
        return answer

    def _gave_up(self, attempts: int, e: Exception) -> UserError:
        url, tries = self.endpoint.base_url, f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(e, openai.APITimeoutError) and self.server_answers():
            return UserError(
                f"judge: {url} is up (it lists its models) but did not answer within {self.timeout:g} s "
                f"({tries}, {self.max_concurrency} at a time): it is slow, not unreachable; raise "
                f"HARNESS_JUDGE_TIMEOUT, lower HARNESS_JUDGE_CONCURRENCY, or use a faster server")
        if isinstance(e, openai.APIConnectionError):  # refused, reset, or timed out with no model list either
            return UserError(f"judge: could not reach {url} after {tries} ({type(e).__name__}); {_CHECK_URL}")
        return UserError(f"judge: kept failing at {url} after {tries} ({type(e).__name__}); try again later")


_CHECK_URL = ("check the base URL (HARNESS_JUDGE_BASE_URL, OPENAI_BASE_URL or --judge-base-url) and that "
              "the server is up")


def _server_message(e: openai.APIStatusError) -> str:
    """The server's own words: OpenAI puts them under error.message, FastAPI servers (transformers serve) under
    detail."""
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error")
        text = (inner.get("message") if isinstance(inner, dict) else inner) or body.get("message") or body.get("detail")
        if text:
            return str(text)
    return str(e.message)


def _key_rejected(url: str) -> UserError:
    return UserError(f"judge: {url} rejected the API key (401): check HARNESS_JUDGE_API_KEY or OPENAI_API_KEY")


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:16]


class OpenAIJudge:
    """Pairwise win rate of responses against references, judged by an OpenAI-compatible model under a stated order
    protocol ("both" or "random", see the module docstring) and prompt template (text or file)."""

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 cache_dir: Path | str | None = None, max_concurrency: int | None = None, max_retries: int = 6,
                 timeout: float | None = None, backoff_s: float = 1.0, template: str | None = None,
                 template_path: Path | str | None = None, order: str = "both", seed: int = 0):
        if order not in ORDERS:
            raise UserError(f"judge order {order!r} is not a protocol; valid: {', '.join(ORDERS)}")
        if template is not None and template_path is not None:
            raise ValueError("pass a template or a template_path, not both")
        self.endpoint = Endpoint.resolve(model, base_url, api_key)
        self.name = self.endpoint.model
        self.order, self.seed = order, seed
        self.template = template if template is not None else read_template(template_path)
        self.template_path = str(template_path or (None if template is not None else DEFAULT_TEMPLATE_PATH))
        self.template_hash = template_hash(self.template)
        self.client = CompletionClient(self.endpoint, cache_dir, max_concurrency, max_retries, timeout, backoff_s,
                                       max_tokens=256)

    def _messages(self, post: str, a: str, b: str) -> list[dict]:
        return [{"role": "user", "content": fill_template(self.template, post, a, b)}]

    def policy_first(self, post: str, response: str, reference: str) -> bool:
        """order="random": is the policy's response shown as A? A coin from the seed and the pair's own texts, so a
        pair keeps its order whatever else is judged with it (and its cached verdict stays valid)."""
        digest = hashlib.sha256(json.dumps([self.seed, post, response, reference]).encode()).digest()
        return digest[0] % 2 == 0

    def win_rate(self, prompts: list[str], responses: list[str], references: list[str]) -> dict:
        if not len(prompts) == len(responses) == len(references):
            raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses, {len(references)} references")
        # Order "ab" shows the policy's response as A, order "ba" shows it as B.
        shown = []
        for post, response, reference in zip(prompts, responses, references):
            if self.order == "both":
                shown.append(("ab", "ba"))
            else:
                shown.append(("ab",) if self.policy_first(post, response, reference) else ("ba",))
        conversations = [self._messages(post, *((response, reference) if o == "ab" else (reference, response)))
                         for post, response, reference, orders in zip(prompts, responses, references, shown)
                         for o in orders]
        # the order protocol is part of the cache key, beside the template (a stated setting, never mixed up)
        answers, usage = self.client.complete_many(conversations, f"{self.template_hash}:{self.order}")
        per_sample, it = [], iter(answers)
        for i, orders in enumerate(shown):
            raw = {o: next(it) for o in orders}
            ab = {"A": "policy", "B": "reference"}.get(parse_preference(raw["ab"])) if "ab" in raw else None
            ba = {"B": "policy", "A": "reference"}.get(parse_preference(raw["ba"])) if "ba" in raw else None
            if self.order == "both":
                verdict = None if ab is None or ba is None else \
                    ("tie" if ab != ba else "win" if ab == "policy" else "loss")
            else:
                one = ab or ba
                verdict = None if one is None else "win" if one == "policy" else "loss"
            per_sample.append({"idx": i, "verdict": verdict, "shown": "+".join(orders), "order_ab": ab,
                               "order_ba": ba, "raw_ab": raw.get("ab"), "raw_ba": raw.get("ba")})
        summary = summarize_verdicts([s["verdict"] for s in per_sample])
        if self.order == "random":  # one order per pair: consistency is unmeasured; the A-rate shows position bias
            summary["position_consistency"] = None
            picked = [p for s in per_sample for p in [parse_preference(s["raw_ab"] or s["raw_ba"])] if p]
            summary["a_rate"] = sum(p == "A" for p in picked) / len(picked) if picked else None
        return {**summary, **usage.as_dict(), "judge": self.name, "prompt_hash": self.template_hash,
                "template": self.template_path, "order": self.order, "per_sample": per_sample}


def summarize_verdicts(verdicts: list[str | None]) -> dict:
    """Win rate (ties count one half) over the pairs judged; None verdicts are parse failures, left out."""
    wins, losses, ties = (sum(v == k for v in verdicts) for k in ("win", "loss", "tie"))
    judged = wins + losses + ties
    return {"win_rate": (wins + 0.5 * ties) / judged if judged else None,
            "wins": wins, "losses": losses, "ties": ties,
            "position_consistency": (wins + losses) / judged if judged else None,
            "parse_failures": len(verdicts) - judged, "n": len(verdicts)}
