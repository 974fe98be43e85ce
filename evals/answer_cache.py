"""Generated chat answers kept on disk, keyed by model + conversation, so that nothing generated is lost when a later
step (the judge, the next suite) fails: a rerun reuses the answers and loads the model only for what is missing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from harness.core.store import code_fingerprint, config_hash, read_jsonl


# the code that turns a conversation into an answer (loading, chat template, decoding): part of every answer's key.
# Not the `chat_generator` factory, which only wires the two together (tests swap it to prove no model loads).
GENERATOR_CODE = ("evals.chat_generate:ChatGenerator", "evals.chat_generate:load_chat_model")


def model_fingerprint(model: str, max_new_tokens: int) -> str:
    """What makes two answers the same: the model's files (name, size, mtime: a retrained model in the same
    directory is another model; for a hub name, its cached snapshot), the generation settings and the generating
    code (harness/store.code_fingerprint of GENERATOR_CODE: a changed generator never reads an old answer)."""
    path = Path(model)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not cached yet: the name is all there is
            path = None
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()) \
        if path is not None else []
    return config_hash({"model": str(model), "files": files, "max_new_tokens": max_new_tokens, "temperature": 0,
                        "code": code_fingerprint(*GENERATOR_CODE)})


class CachedAnswers:
    """`generate(conversations) -> answers` that keeps every answer in a JSONL file keyed by model + conversation,
    appended batch by batch: a rerun after a failed judge or a crash reuses them, and loads the model (`make()`)
    only when some conversation is still unanswered."""

    def __init__(self, path: Path, model_key: str, make: Callable, batch_size: int = 8):
        self.path, self.model_key, self.make, self.batch_size = Path(path), model_key, make, batch_size
        self._generate = None
        self.answers: dict[str, str] = {}
        if self.path.exists():
            rows, _ = read_jsonl(self.path)  # a torn last line (a kill mid-write) is skipped, not fatal
            self.answers = {r["prompt"]: r["answer"] for r in rows if r.get("model") == model_key}
        self.reused = 0

    def __call__(self, conversations: list[list[dict]]) -> list[str]:
        keys = [config_hash({"messages": c}) for c in conversations]
        todo = [i for i, k in enumerate(keys) if k not in self.answers]
        self.reused += len(keys) - len(todo)
        if todo:
            self._generate = self._generate or self.make()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not self.path.read_bytes().endswith(b"\n") and self.path.stat().st_size:
                with self.path.open("a", encoding="utf-8") as f:  # a torn last line stays alone on its line
                    f.write("\n")
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start:start + self.batch_size]
                answers = self._generate([conversations[i] for i in chunk])
                with self.path.open("a", encoding="utf-8") as f:
                    for i, answer in zip(chunk, answers):
                        self.answers[keys[i]] = answer
                        f.write(json.dumps({"model": self.model_key, "prompt": keys[i], "answer": answer}) + "\n")
        return [self.answers[k] for k in keys]
