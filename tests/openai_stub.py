"""A local stand-in for an OpenAI-compatible endpoint, for tests that must go through the real `openai` client.

A threaded stdlib HTTP server on 127.0.0.1 (random free port) answering POST /v1/chat/completions and GET /v1/models.
What the "model" answers comes from a pluggable function of the request body, so a test can play a sane judge, a
position-biased one or a broken one. Every request is recorded, and failures (429, 500, ...) can be injected for the
next N requests to exercise retries.

    with OpenAIStub(lambda body: "Preferred: A") as stub:
        OpenAI(base_url=stub.base_url, api_key="x").chat.completions.create(...)
        stub.requests  # [Request(body=..., headers=..., status=200)]
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Request:
    body: dict
    headers: dict  # names lower-cased
    status: int


def user_text(body: dict) -> str:
    """The last user message of a chat request: what a judge function usually reads."""
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1]


class OpenAIStub:
    def __init__(self, respond: Callable[[dict], str], model_ids: tuple[str, ...] = ("stub-judge",)):
        self.respond = respond
        self.model_ids = model_ids
        self.requests: list[Request] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

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
        if body.get("logprobs"):
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
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "stub"}
                                                                 for m in stub.model_ids]})
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
                if status != 200:
                    self._send(status, {"error": {"message": f"injected failure {status}", "type": "stub"}})
                else:
                    self._send(200, stub._completion(body))

        return Handler
