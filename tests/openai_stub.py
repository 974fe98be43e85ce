"""A local stand-in for an OpenAI-compatible endpoint, for tests that must go through the real `openai` client.

A threaded stdlib HTTP server on 127.0.0.1 (random free port) answering POST /v1/chat/completions and GET /v1/models.
What the "model" answers comes from a pluggable function of the request body, so a test can play a sane judge, a
position-biased one or a broken one. Every request is recorded, and failures (429, 500, ...) can be injected for the
next N requests to exercise retries.

By default it plays a hosted API (logprobs when asked, any model name). `like_transformers_serve()` plays what
`transformers serve` was measured to do (tests/real): it names its model by the directory it serves, ignores
`logprobs`/`top_logprobs` without a word, answers another model name with 400 and an unknown request field with 422
(FastAPI's {"detail": ...} body, not OpenAI's {"error": {...}}), and it can be slow (`delay_s`) while its model list
still answers at once.

    with OpenAIStub(lambda body: "Preferred: A") as stub:
        OpenAI(base_url=stub.base_url, api_key="x").chat.completions.create(...)
        stub.requests  # [Request(body=..., headers=..., status=200)]
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def _serve_fields() -> frozenset[str]:
    """What transformers serve accepts on /v1/chat/completions: the openai package's request schema plus three
    fields of its own (transformers/cli/serving/chat_completion.py); anything else is a 422."""
    from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

    return frozenset(CompletionCreateParamsStreaming.__mutable_keys__) | {"generation_config", "seed",
                                                                         "chat_template_kwargs"}


SERVE_FIELDS = _serve_fields()


@dataclass
class Request:
    body: dict
    headers: dict  # names lower-cased
    status: int


def user_text(body: dict) -> str:
    """The last user message of a chat request: what a judge function usually reads."""
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1]


class OpenAIStub:
    def __init__(self, respond: Callable[[dict], str], model_ids: tuple[str, ...] = ("stub-judge",),
                 logprobs: bool = True, pinned: bool = False, known_fields: frozenset[str] | None = None,
                 delay_s: float = 0.0):
        self.respond = respond
        self.model_ids = model_ids
        self.logprobs, self.pinned, self.known_fields, self.delay_s = logprobs, pinned, known_fields, delay_s
        self.requests: list[Request] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @classmethod
    def like_transformers_serve(cls, respond: Callable[[dict], str], model_dir: str = "/models/judge",
                                delay_s: float = 0.0) -> "OpenAIStub":
        return cls(respond, model_ids=(model_dir,), logprobs=False, pinned=True, known_fields=SERVE_FIELDS,
                   delay_s=delay_s)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def fail_next(self, *statuses: int) -> None:
        """The next len(statuses) chat requests get these HTTP error statuses, in order, instead of an answer."""
        with self._lock:
            self._failures.extend(statuses)

    @property
    def answered(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]

    def __enter__(self) -> "OpenAIStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _completion(self, body: dict) -> dict:
        text = self.respond(body)
        prompt_words = sum(len(str(m["content"]).split()) for m in body["messages"])
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        if body.get("logprobs") and self.logprobs:
            # The answer as one token that carries all the probability mass (what alpaca_eval's logprob parser reads).
            token = {"token": text, "logprob": 0.0, "bytes": list(text.encode())}
            choice["logprobs"] = {"content": [dict(token, top_logprobs=[token])]}
        return {
            "id": f"chatcmpl-stub-{len(self.requests)}", "object": "chat.completion", "created": 0,
            "model": body.get("model", "stub"), "choices": [choice],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_words + len(text.split())},
        }

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real client expects

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting, as a timeout does
                    pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                                  "owned_by": "stub"} for m in stub.model_ids]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with stub._lock:
                    status = stub._failures.pop(0) if stub._failures else 200
                    stub.requests.append(Request(body, {k.lower(): v for k, v in self.headers.items()}, status))
                unknown = set(body) - stub.known_fields if stub.known_fields is not None else set()
                if status != 200:
                    self._send(status, {"error": {"message": f"injected failure {status}", "type": "stub"}})
                elif unknown:
                    self._send(422, {"detail": f"Unexpected fields in the request: {unknown}"})
                elif stub.pinned and body.get("model") not in stub.model_ids:
                    self._send(400, {"detail": f"Server is pinned to {stub.model_ids[0]!r}; requested "
                                               f"{body.get('model')!r}."})
                else:
                    time.sleep(stub.delay_s)  # a slow server: the model list still answers meanwhile (threads)
                    self._send(200, stub._completion(body))

        return Handler
