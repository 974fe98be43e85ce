"""Rows in TRL's standard dataset formats, read as TRL reads them (trl.data_utils), into Examples.

The formats (https://huggingface.co/docs/trl/dataset_formats), each standard (strings) or conversational (lists of
{"role", "content"} messages):

- prompt-only          {"prompt"}                          online optimizers sample from the prompt
- prompt-completion    {"prompt", "completion"}            the completion is the SFT reference
- preference           {"prompt", "chosen", "rejected"}    offline DPO reads the pairs; online optimizers the prompts
- implicit preference  {"chosen", "rejected"}              the prompt is their common prefix (trl's extract_prompt)
- conversational LM    {"messages"}                        the prompt is every turn before the last assistant turn,
                                                            which is the reference

Language-modelling rows ({"text"}) have no prompt to sample from, and unpaired preference ({"prompt", "completion",
"label"}) and stepwise supervision ({"prompt", "completions", "labels"}) have no pair: they are refused with what to
map instead. Every other column of a row is kept (`RowExample.columns`) and reaches a reward function as a keyword
argument, as TRL's GRPOTrainer passes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.core.errors import UserError
from harness.core.examples import Example

FORMATS = ("prompt-only", "prompt-completion", "preference", "implicit-preference", "messages")
TRL_COLUMNS = ("prompt", "completion", "chosen", "rejected", "messages")
REFUSED = (  # (columns that mark a format the harness does not train on, what to do instead)
    ({"prompt", "completion", "label"}, "unpaired preference rows (prompt, completion, label) have no pair; write "
                                        "them as prompt/chosen/rejected rows"),
    ({"prompt", "completions", "labels"}, "stepwise supervision rows (prompt, completions, labels) are not a format "
                                          "the harness trains on; keep the prompt column only"),
)


@dataclass
class RowExample(Example):
    """One dataset row: the prompt as the dataset holds it (`prompt_value`, a string or messages, what a reward
    function receives as `prompts`), whether the row is conversational, and its other columns."""

    prompt_value: str | list | None = None
    conversational: bool = False
    columns: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The row's own columns that a samples file can hold (JSON scalars and short lists)."""
        return {k: v for k, v in self.columns.items() if isinstance(v, (str, int, float, bool, type(None)))}


def is_conversational(value) -> bool:
    """TRL's test: a non-empty list whose first item is a dict with a 'role'."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def detect(columns, where: str) -> str:
    """The format of a row with these columns (the first match in FORMATS' order of specificity)."""
    cols = set(columns)
    if {"chosen", "rejected"} <= cols:
        return "preference" if "prompt" in cols else "implicit-preference"
    for marks, advice in REFUSED:
        if marks <= cols:
            raise UserError(f"{where}: {advice}")
    if {"prompt", "completion"} <= cols:
        return "prompt-completion"
    if "prompt" in cols:
        return "prompt-only"
    if "messages" in cols:
        return "messages"
    if "text" in cols:
        raise UserError(f"{where}: a 'text' column is language-modelling data with no prompt to sample from; map a "
                        f"prompt column (task file: dataset.columns: {{prompt: YOUR_COLUMN}})")
    raise UserError(f"{where}: columns {sorted(cols)} match no TRL format (prompt-only: 'prompt'; prompt-completion: "
                    f"'prompt', 'completion'; preference: 'prompt', 'chosen', 'rejected' or just 'chosen', "
                    f"'rejected'; conversational: 'messages'); name yours with dataset.columns, e.g. "
                    f"{{prompt: question}}")


def _check_messages(value, where: str, key: str) -> list[dict]:
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
               for m in value):
        raise UserError(f"{where}: every message of '{key}' needs a 'role' and a 'content' string; fix or delete "
                        f"that row")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _text(value, where: str, key: str) -> str | None:
    """A completion as text: a string, or the content of the assistant turns of a message list."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(m["content"] for m in _check_messages(value, where, key) if m["role"] == "assistant") or \
            value[-1]["content"]
    raise UserError(f"{where}: '{key}' must be a string or a list of messages, got {type(value).__name__}")


def plain_rendering(messages: list[dict]) -> str:
    """A conversation as text for a tokenizer without a chat template (the tiny models): one 'role: content' block
    per turn, then the assistant's cue."""
    return "".join(f"{m['role']}: {m['content']}\n\n" for m in messages) + "assistant:"


def to_example(row: dict, where: str, fmt: str = "auto", template: str | None = None,
               system: str | None = None) -> RowExample:
    """The Example of one row (columns already renamed to TRL's names). `template` renders a standard prompt
    (str.format over the row's columns, `{prompt}` the prompt); `system` prepends a system turn to a conversational
    prompt (or makes one of a standard prompt, which then goes through the chat template)."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: a row must be an object of columns, got {type(row).__name__}; fix or delete it")
    found = detect([k for k, v in row.items() if v is not None], where)
    if fmt != "auto" and found != fmt:
        raise UserError(f"{where}: dataset.format is {fmt!r} but this row's columns {sorted(row)} are {found!r}; "
                        f"fix the row or dataset.format / dataset.columns")
    row = dict(row)
    if found == "implicit-preference":
        from trl.data_utils import extract_prompt

        row.update(extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]}))
    elif found == "messages":
        turns = _check_messages(row["messages"], where, "messages")
        last = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise UserError(f"{where}: a 'messages' row needs at least one turn before its last assistant turn (the "
                            f"prompt) and that assistant turn (the reference)")
        row["prompt"], row["completion"] = turns[:last], [turns[last]]
    prompt = row["prompt"]
    conversational = is_conversational(prompt)
    if conversational:
        messages = _check_messages(prompt, where, "prompt")
    elif isinstance(prompt, str) and prompt.strip():
        messages = None
    else:
        raise UserError(f"{where}: 'prompt' must be a non-empty string or a list of messages; fix or delete that row")
    columns = {k: v for k, v in row.items() if k not in TRL_COLUMNS}
    if messages is None:
        text = _render(template, prompt, columns, where) if template else prompt
        if system is not None:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    else:
        if system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        text = plain_rendering(messages)
    return RowExample(text=text, messages=messages, reference=_text(row.get("completion"), where, "completion"),
                      chosen=_text(row.get("chosen"), where, "chosen"),
                      rejected=_text(row.get("rejected"), where, "rejected"),
                      prompt_value=prompt, conversational=conversational, columns=columns)


def _render(template: str, prompt: str, columns: dict, where: str) -> str:
    try:
        return template.format(prompt=prompt, **columns)
    except KeyError as e:
        raise UserError(f"{where}: prompt.template names {{{e.args[0]}}}, which is not a column of this row (columns: "
                        f"prompt, {', '.join(sorted(columns))})") from None
    except (IndexError, ValueError) as e:
        raise UserError(f"prompt.template {template!r} is not a valid format string ({e}); write columns as "
                        f"{{name}} and literal braces as {{{{ }}}}") from None
