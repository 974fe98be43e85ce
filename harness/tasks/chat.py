"""Chat prompts for the paper's chat experiments (UltraFeedback with Llama-3-8B-Instruct, Nectar with OpenChat-3.5).

Only prompts are needed for online training; preference pairs are read when present (offline DPO). Prompts are
rendered with the policy tokenizer's chat template at encoding time (harness.core.examples.Example.encode_prompt).
Sources: a hub data set name (`task.dataset`), or a local directory with `prompts_train.jsonl`,
`prompts_eval.jsonl` (rows `{"prompt": str}` or `{"messages": [...]}`, optional `chosen`/`rejected` strings).
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UserError
from harness.core.examples import Example, TaskData
from harness.tasks import Task, register

HUB_SPLITS = {  # data set -> (train split, eval split)
    "HuggingFaceH4/ultrafeedback_binarized": ("train_prefs", "test_prefs"),
    "berkeley-nest/Nectar": ("train", "train"),
}


def _nectar_messages(prompt: str) -> list[dict]:
    """Nectar prompts are 'Human: ... Assistant:' transcripts; keep the turns as chat messages."""
    turns, role = [], None
    for line in prompt.strip().split("\n\n"):
        for prefix, name in (("Human:", "user"), ("Assistant:", "assistant")):
            if line.startswith(prefix):
                role, line = name, line[len(prefix):].strip()
                break
        if role is None:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + line
        elif line:
            turns.append({"role": role, "content": line})
    return turns or [{"role": "user", "content": prompt.strip()}]


def example_from_row(row: dict, where: str) -> Example:
    if not isinstance(row, dict):
        raise UserError(f"{where}: a chat row must be a JSON object with a 'prompt' or 'messages'; fix or delete "
                        f"that row")
    if isinstance(row.get("messages"), list) and row["messages"]:
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in row["messages"]):
            raise UserError(f"{where}: every message needs a 'role' and a 'content' string; fix or delete that row")
        messages = [m for m in row["messages"] if m.get("role") != "assistant" or m is not row["messages"][-1]]
    elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
        text = row["prompt"]
        messages = _nectar_messages(text) if "Human:" in text else [{"role": "user", "content": text}]
    else:
        raise UserError(f"{where}: a chat row needs a non-empty 'prompt' string or 'messages' list")

    def text_of(x):
        return x[-1]["content"] if isinstance(x, list) else x

    return Example(messages=messages, chosen=text_of(row.get("chosen")), rejected=text_of(row.get("rejected")))


def _read_jsonl(path: Path) -> list[Example]:
    if not path.exists():
        raise UserError(f"{path} is missing; a chat data directory needs prompts_train.jsonl and prompts_eval.jsonl")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(example_from_row(json.loads(line), f"{path}:{n}"))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n} is not valid JSON ({e.msg})") from None
    if not out:
        raise UserError(f"{path} has no rows")
    return out


def load_chat(source: str, dataset: str | None, eval_prompts: int = 1000) -> TaskData:
    if Path(source).is_dir():
        train, evals = _read_jsonl(Path(source) / "prompts_train.jsonl"), _read_jsonl(Path(source) / "prompts_eval.jsonl")
    elif source in ("hub", "auto"):
        if dataset not in HUB_SPLITS:
            raise UserError(f"task.dataset must be one of {', '.join(HUB_SPLITS)} for the chat task; got {dataset!r}")
        import datasets

        train_split, eval_split = HUB_SPLITS[dataset]
        train = [example_from_row(r, dataset) for r in datasets.load_dataset(dataset, split=train_split)]
        evals = [example_from_row(r, dataset) for r in datasets.load_dataset(dataset, split=eval_split)]
        if train_split == eval_split:  # hold out the tail for evaluation
            train, evals = train[:-eval_prompts], train[-eval_prompts:]
    else:
        raise UserError("the chat task reads task.source=hub (with task.dataset) or a local directory")
    pairs = [ex for ex in train if ex.chosen and ex.rejected]
    return TaskData(source=source, sft_train=train, sft_eval=evals, pref_train=pairs,
                    pref_eval=[ex for ex in evals if ex.chosen and ex.rejected])


def _hub_data(settings) -> list:
    from harness.core.assets import Asset

    if settings.source != "hub" or not settings.dataset:
        return []
    splits = tuple(dict.fromkeys(HUB_SPLITS.get(settings.dataset, ())))
    return [Asset("chat prompts", "dataset", settings.dataset, splits=splits)]


register(Task("chat", "chat prompts (UltraFeedback / Nectar on the hub, or a local directory)",
              lambda source, dataset=None, preference_dataset=None: (source, load_chat(source, dataset)),
              hub_data=_hub_data))
