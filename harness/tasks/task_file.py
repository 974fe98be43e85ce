"""A task from one YAML file: `harness run --task path/to/task.yaml` (docs/tasks.md, "Bring your own task").

The file names the dataset (local files or a hub id) in one of TRL's formats (harness.tasks.formats), how a prompt
is rendered, the reward (a reward model, or reward functions / verifiers / a format reward with weights:
harness.tasks.rewards), the evaluation and the default models. Paths in it are relative to the file. Its content,
its data files' bytes and its reward functions' source make the data source's fingerprint, so runs of an edited
file never pool with, resume or reuse the cached baselines of the old one.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.core.errors import UserError
from harness.core.examples import TaskData
from harness.tasks.formats import FORMATS, to_example
from harness.tasks.rows import read_rows
from harness.tasks.rewards import VERIFIERS, FunctionReward, make_terms

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
SPLIT_NAMES = {"train": ("train",), "eval": ("validation", "eval", "valid", "dev"), "test": ("test",)}
DEFAULT_EVAL = 200  # held out from the training rows when there is no evaluation split (at most a tenth)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Splits(Strict):
    train: str = "train"
    eval: str | None = Field(None, description="None: hold out the last eval_size training rows")
    test: str | None = None


class DatasetSpec(Strict):
    path: str | None = Field(None, description="a .jsonl/.json/.parquet/.csv file (the training rows) or a directory "
                             "with train.*, and optionally validation.* and test.*")
    files: dict[Literal["train", "eval", "test"], str] | None = Field(None, description="a file per split")
    hub: str | None = Field(None, description="a hub data set id (datasets.load_dataset)")
    config: str | None = None
    splits: Splits = Splits()
    format: Literal["auto", *FORMATS] = "auto"
    columns: dict[Literal["prompt", "completion", "chosen", "rejected", "messages"], str] = Field(
        {}, description="TRL's column name -> the data set's")
    eval_size: int | None = Field(None, gt=0, description="rows held out for evaluation when there is no eval split")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("path", "files", "hub") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"name exactly one of dataset.path, dataset.files, dataset.hub (got {given or 'none'})")
        return self


class PromptSpec(Strict):
    template: str | None = Field(None, description="str.format template of a standard prompt over the row's "
                                 "columns, e.g. 'Question: {prompt}\\nAnswer:'")
    system: str | None = Field(None, description="a system turn; a standard prompt then goes through the chat "
                               "template as one user turn")


class RewardTerm(Strict):
    function: str | None = Field(None, description="'path/to/file.py:function' or 'module:function'")
    verifier: Literal[VERIFIERS] | None = None
    format: str | None = Field(None, description="a regular expression the completion must match (re.search)")
    answer: str | None = Field(None, description="a verifier's ground-truth column (default: answer)")
    weight: float = 1.0

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in ("function", "verifier", "format") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a reward term names exactly one of function, verifier, format (got {given or 'none'})")
        if self.answer is not None and self.verifier is None:
            raise ValueError("answer names a verifier's ground-truth column; this term has no verifier")
        return self


class RewardModel(Strict):
    model: str = Field(description="a reward model: hub id, directory, or builtin (the preset's own)")


class EvaluationSpec(Strict):
    suite: str | None = Field(None, description="default: reward (reward functions), tldr (a reward model)")
    split: Literal["test", "validation"] | None = None
    size: int | None = Field(None, gt=0, description="held-out prompts (eval.prompts)")
    samples: int | None = Field(None, gt=0, description="samples per prompt, for pass@k (eval.samples)")
    judge: Literal["auto", "openai", "none"] = Field("auto", description="the win-rate judge of a reward-model "
                                                     "task (eval.judge; a task file has no gold reward)")


class ModelsSpec(Strict):
    policy: str | None = None
    tokenizer: str | None = None


class TaskFile(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the name runs and reports show")
    description: str = ""
    preset: str = Field("tiny", description="the preset a run starts from (harness list)")
    dataset: DatasetSpec
    prompt: PromptSpec = PromptSpec()
    reward: Any = Field(description="{model: NAME}, or a list of terms (read_task_file validates it)")
    evaluation: EvaluationSpec = EvaluationSpec()
    models: ModelsSpec = ModelsSpec()
    max_prompt_tokens: int | None = Field(None, gt=8)
    max_new_tokens: int | None = Field(None, gt=0)


def read_task_file(path: Path) -> TaskFile:
    """The validated task file; every problem is one line naming the file and the key."""
    if not path.is_file():
        raise UserError(f"task file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"task file {path} is not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"task file {path} must be a mapping of keys (name, dataset, reward, ...)")
    spec = _validate(TaskFile, raw, path, ())
    reward = raw.get("reward")
    if isinstance(reward, dict) and "model" in reward:
        spec.reward = _validate(RewardModel, reward, path, ("reward",))
    elif isinstance(reward, (dict, list)) and reward:
        terms = reward if isinstance(reward, list) else [reward]
        spec.reward = [_validate(RewardTerm, t, path, (f"reward[{i}]",)) for i, t in enumerate(terms)]
    else:
        raise UserError(f"task file {path}: reward must be {{model: NAME}} or a list of terms (function, verifier "
                        f"or format, each with an optional weight), got {reward!r}")
    return spec


def _validate(model: type[BaseModel], raw, path: Path, prefix: tuple):
    if not isinstance(raw, dict):
        raise UserError(f"task file {path}: {'.'.join(prefix)} must be a mapping, got {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = prefix + tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            owner = model
            for part in err["loc"][:-1]:
                ann = owner.model_fields[str(part)].annotation if str(part) in owner.model_fields else None
                owner = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                              and issubclass(a, BaseModel)), None)
                if owner is None:
                    break
            valid = f" (valid keys: {', '.join(owner.model_fields)})" if owner else ""
            raise UserError(f"task file {path}: unknown key {key!r}{valid}") from None
        raise UserError(f"task file {path}: {key or 'file'}: {err['msg']}") from None  # pydantic's message lists
        # the valid values of a choice ("Input should be 'auto', 'prompt-only' or ...")


def _split_file(directory: Path, split: str) -> Path | None:
    for stem in SPLIT_NAMES[split]:
        for suffix in SUFFIXES:
            if (directory / f"{stem}{suffix}").is_file():
                return directory / f"{stem}{suffix}"
    return None


class FileTask:
    """The task of one file: loads its data into TaskData and its reward into a FunctionReward."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        self.spec = read_task_file(self.path)
        self.base = self.path.parent
        spec = self.spec
        self.reward_model = spec.reward.model if isinstance(spec.reward, RewardModel) else None
        self.suite = spec.evaluation.suite or ("tldr" if self.reward_model else "reward")
        self._reward = None if self.reward_model else self.reward()  # a bad reward fails now, before models load

    def defaults(self) -> dict:
        """The run settings the file sets (between the preset's and the command line's)."""
        s = self.spec
        model = {k: v for k, v in s.models.model_dump().items() if v is not None}
        if self.reward_model and self.reward_model != "builtin":
            model["reward_model"] = self.reward_model
        task = {"max_prompt_tokens": s.max_prompt_tokens} if s.max_prompt_tokens else {}
        ev = {k: v for k, v in (("split", s.evaluation.split), ("prompts", s.evaluation.size),
                                ("samples", s.evaluation.samples)) if v is not None}
        if self.reward_model:
            ev["judge"] = s.evaluation.judge  # never the preset's gold judge: a task file has no gold reward
        gen = {"max_new_tokens": s.max_new_tokens} if s.max_new_tokens else {}
        return {k: v for k, v in (("model", model), ("task", task), ("eval", ev), ("generation", gen)) if v}

    def files(self, source: str = "auto") -> dict[str, Path]:
        """split -> local file of the data (empty for a hub data set); `source` a file or directory overrides."""
        d = self.spec.dataset
        if source not in ("auto", "hub"):
            target = Path(source)
        elif d.files:
            return {k: self.base / v for k, v in d.files.items()}
        elif d.path:
            target = self.base / d.path
        else:
            return {}
        if target.is_dir():
            found = {s: _split_file(target, s) for s in SPLIT_NAMES}
            if found["train"] is None:
                raise UserError(f"{target} has no training file: expected train{{{','.join(SUFFIXES)}}}")
            return {s: f for s, f in found.items() if f is not None}
        if not target.is_file():
            raise UserError(f"task file {self.path}: dataset {target} does not exist (paths are relative to the task "
                            f"file)")
        return {"train": target}

    def rows(self, source: str = "auto") -> dict[str, list[tuple[str, dict]]]:
        """split -> [(where, row)] with TRL's column names."""
        d = self.spec.dataset
        files = self.files(source)
        out = {}
        if files:
            for split, f in files.items():
                if f.suffix not in SUFFIXES:
                    raise UserError(f"{f}: a data file is one of {', '.join(SUFFIXES)}")
                rows = read_rows(f)
                line = f.suffix == ".jsonl"
                out[split] = [(f"{f}:{i + 1}" if line else f"{f} row {i}", r) for i, r in enumerate(rows)]
        else:
            import datasets

            for split in ("train", "eval", "test"):
                name = getattr(d.splits, split)
                if name:
                    rows = datasets.load_dataset(d.hub, d.config, split=name)
                    out[split] = [(f"{d.hub}[{name}] row {i}", r) for i, r in enumerate(rows)]
        rename = {theirs: ours for ours, theirs in d.columns.items()}
        for split, rows in out.items():
            if not rows:
                raise UserError(f"task file {self.path}: the {split} data has no rows")
            out[split] = [(w, {rename.get(k, k): v for k, v in r.items()} if isinstance(r, dict) else r)
                          for w, r in rows]
        return out

    def fingerprint(self, source: str = "auto", reward: FunctionReward | None = None) -> str:
        """The task file's text, its data files' bytes and its reward code, hashed."""
        h = hashlib.sha256(self.path.read_bytes())
        for split, f in sorted(self.files(source).items()):
            h.update(split.encode())
            h.update(f.read_bytes())
        h.update(reward.fingerprint.encode() if reward else str(self.reward_model).encode())
        return h.hexdigest()[:12]

    def reward(self) -> FunctionReward:
        return FunctionReward(make_terms([t.model_dump() for t in self.spec.reward], self.base,
                                         f"task file {self.path}"))

    @staticmethod
    def own_source(source: str) -> tuple[str, str | None]:
        """(source, fingerprint) of a source this file's loader resolved for a run ("prompts.jsonl@1a2b3c4d", what
        `harness eval RUN` passes back): its own data, which must not have changed since; other sources as given."""
        if "@" in source and not Path(source).exists():
            return "auto", source.rsplit("@", 1)[1]
        return source, None

    def load(self, source: str = "auto", dataset: str | None = None,
             preference_dataset: str | None = None) -> tuple[str, TaskData]:
        source, expected = self.own_source(source)
        d, p = self.spec.dataset, self.spec.prompt
        splits = {s: [to_example(r, w, d.format, p.template, p.system) for w, r in rows]
                  for s, rows in self.rows(source).items()}
        train = splits["train"]
        if "eval" not in splits:
            n = d.eval_size or min(DEFAULT_EVAL, max(1, len(train) // 10))
            if not 0 < n < len(train):
                raise UserError(f"task file {self.path}: dataset.eval_size holds out the last rows of the {len(train)} "
                                f"training rows: it must be between 1 and {len(train) - 1}, got {n}")
            train, splits["eval"] = train[:-n], train[-n:]
        reward = None if self.reward_model else self.reward()  # its code as it is now, fresh counters
        fingerprint = self.fingerprint(source, reward)
        if expected is not None and not fingerprint.startswith(expected):
            raise UserError(f"task file {self.path}: its data or reward code changed since the run was made (then "
                            f"{expected}, now {fingerprint[:8]}); restore them to evaluate the run on the same prompts "
                            f"and reward, or pass --source")
        files = self.files(source)
        where = d.hub if not files else files["train"].name
        data = TaskData(source=f"{where}@{fingerprint[:8]}", sft_train=train, sft_eval=splits["eval"],
                        pref_train=[ex for ex in train if ex.chosen is not None and ex.rejected is not None],
                        pref_eval=[ex for ex in splits["eval"] if ex.chosen is not None and ex.rejected is not None],
                        reward=reward, sft_test=splits.get("test", []), fingerprint=fingerprint)
        return data.source, data

    def hub_data(self, settings) -> list:
        d = self.spec.dataset
        if not d.hub or self.own_source(settings.source)[0] not in ("auto", "hub"):
            return []
        from harness.core.assets import Asset

        splits = tuple(s for s in (d.splits.train, d.splits.eval, d.splits.test) if s)
        return [Asset(f"{self.spec.name} data", "dataset", d.hub, config=d.config, splits=splits)]
