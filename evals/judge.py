"""LLM-as-judge through any OpenAI-compatible endpoint (OpenAI itself, a vLLM server with an open judge, a proxy).

Two layers:
- `CompletionClient`: chat completions with a bounded thread pool, retries with exponential backoff on 429/5xx/
  timeouts, and a persistent sqlite cache keyed by (judge model, prompt-template hash, decoding settings, messages),
  so an interrupted or repeated judging never pays twice. MT-Bench grading uses it too.
- `OpenAIJudge.win_rate`: the TL;DR win rate against references with the paper's prompt (REBEL Appendix I.1.5, the
  DPO-paper style prompt), judged in both orders. A pair counts as a win only when both orders prefer the policy,
  a loss when both prefer the reference, and a tie when the orders disagree (position bias); a pair with an
  unparseable answer is a parse failure, excluded from the rate rather than coin-flipped.

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

from harness.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-4o"  # a GPT-4-class judge; the paper used GPT-4
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "harness" / "judge"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}

# Written for this project after the description of the paper's prompt (REBEL Appendix I.1.5, itself the DPO
# paper's TL;DR prompt): same criteria and the same two-line answer format, which `parse_preference` reads.
TLDR_TEMPLATE = """Which of the following summaries does a better job of summarizing the most important points in the \
given forum post, without including unimportant or irrelevant details? Judge based on accuracy, coverage, and \
coherence.

Post:
{post}

Summary A:
{a}

Summary B:
{b}

First write a one-sentence comparison of the two summaries that explains which one you prefer and why. Then, on a \
new line, write only "A" or "B" to name the summary you prefer. Use exactly this format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">"""

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
            if urlparse(base_url).hostname not in _LOCAL_HOSTS:
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

    def __init__(self, endpoint: Endpoint, cache_dir: Path | str | None = None, max_concurrency: int = 8,
                 max_retries: int = 6, timeout: float = 120.0, backoff_s: float = 1.0, temperature: float = 0.0,
                 max_tokens: int = 1024):
        self.endpoint = endpoint
        self.max_concurrency, self.max_retries, self.backoff_s = max_concurrency, max_retries, backoff_s
        self.temperature, self.max_tokens = temperature, max_tokens
        # max_retries=0: the retry loop is ours, so that retries are counted and the final error names the URL.
        self._client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=timeout,
                                     max_retries=0)
        cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_path = cache_dir / "judge_cache.sqlite"
        self._db = sqlite3.connect(self.cache_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, model TEXT, template_hash "
                         "TEXT, answer TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
        self._lock = threading.Lock()

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
        if todo:
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
                if attempt == self.max_retries:
                    raise _gave_up(url, attempt + 1, e) from None
                delay = min(60.0, self.backoff_s * 2 ** attempt) * random.uniform(1.0, 1.25)
                log.warning("judge request to %s failed (%s), retry %d/%d in %.1fs", url, type(e).__name__,
                            attempt + 1, self.max_retries, delay)
                with self._lock:
                    usage.retries += 1
                time.sleep(delay)
            except openai.AuthenticationError:
                raise _key_rejected(url) from None
            except openai.APIStatusError as e:  # 400, 404 (unknown model), ...: retrying cannot help
                raise UserError(f"judge: {url} answered {e.status_code} for model {self.endpoint.model!r}: "
                                f"{_scrub(str(e.message), self.endpoint.api_key)}") from None
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


_CHECK_URL = ("check the base URL (HARNESS_JUDGE_BASE_URL, OPENAI_BASE_URL or --judge-base-url) and that "
              "the server is up")


def _gave_up(url: str, attempts: int, e: Exception) -> UserError:
    if isinstance(e, openai.APIConnectionError):  # timeouts too
        return UserError(f"judge: could not reach {url} after {attempts} attempts ({type(e).__name__}); {_CHECK_URL}")
    return UserError(f"judge: kept failing at {url} after {attempts} attempts ({type(e).__name__}); try again later")


def _key_rejected(url: str) -> UserError:
    return UserError(f"judge: {url} rejected the API key (401): check HARNESS_JUDGE_API_KEY or OPENAI_API_KEY")


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:16]


class OpenAIJudge:
    """Pairwise win rate of responses against references, judged in both orders by an OpenAI-compatible model."""

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 cache_dir: Path | str | None = None, max_concurrency: int = 8, max_retries: int = 6,
                 timeout: float = 120.0, backoff_s: float = 1.0, template: str = TLDR_TEMPLATE):
        self.endpoint = Endpoint.resolve(model, base_url, api_key)
        self.name = self.endpoint.model
        self.template = template
        self.template_hash = template_hash(template)
        self.client = CompletionClient(self.endpoint, cache_dir, max_concurrency, max_retries, timeout, backoff_s,
                                       max_tokens=256)

    def _messages(self, post: str, a: str, b: str) -> list[dict]:
        return [{"role": "user", "content": self.template.format(post=post, a=a, b=b)}]

    def win_rate(self, prompts: list[str], responses: list[str], references: list[str]) -> dict:
        if not len(prompts) == len(responses) == len(references):
            raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses, {len(references)} references")
        # Order "ab" shows the policy's response as A, order "ba" shows it as B.
        conversations = []
        for post, response, reference in zip(prompts, responses, references):
            conversations += [self._messages(post, response, reference), self._messages(post, reference, response)]
        answers, usage = self.client.complete_many(conversations, self.template_hash)
        per_sample = []
        for i in range(len(prompts)):
            raw_ab, raw_ba = answers[2 * i], answers[2 * i + 1]
            ab = {"A": "policy", "B": "reference"}.get(parse_preference(raw_ab))
            ba = {"B": "policy", "A": "reference"}.get(parse_preference(raw_ba))
            verdict = None if ab is None or ba is None else ("tie" if ab != ba else "win" if ab == "policy" else "loss")
            per_sample.append({"idx": i, "verdict": verdict, "order_ab": ab, "order_ba": ba,
                               "raw_ab": raw_ab, "raw_ba": raw_ba})
        return {**summarize_verdicts([s["verdict"] for s in per_sample]), **usage.as_dict(),
                "judge": self.name, "prompt_hash": self.template_hash, "per_sample": per_sample}


def summarize_verdicts(verdicts: list[str | None]) -> dict:
    """Win rate (ties count one half) over the pairs judged; None verdicts are parse failures, left out."""
    wins, losses, ties = (sum(v == k for v in verdicts) for k in ("win", "loss", "tie"))
    judged = wins + losses + ties
    return {"win_rate": (wins + 0.5 * ties) / judged if judged else None,
            "wins": wins, "losses": losses, "ties": ties,
            "position_consistency": (wins + losses) / judged if judged else None,
            "parse_failures": len(verdicts) - judged, "n": len(verdicts)}
