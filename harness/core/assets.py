"""What a run or an evaluation needs from the Hugging Face hub and whether it is here (fetching it:
harness/app/fetch.py).

An asset is a model repo (policy, reward model, tokenizer, a build-start base model), one file of a repo (AlpacaEval's
reference outputs and the df_gamed.csv its length-controlled win rate fits on), a data set config with the splits
read from it (TL;DR, UltraFeedback, MT-Bench's questions, every lm-eval task), or a local path the harness cannot
fetch. `harness prepare` fetches them (harness/app/fetch.py) with the libraries' own calls (snapshot_download, hf_hub_download,
datasets.load_dataset) into the standard caches (or HF_HOME-style DIR/hub and DIR/datasets); every command that needs
one calls `require` before any model loads, which looks it up with the libraries' offline lookups and, when it is
missing and the hub cannot be had, stops with one line naming it and the prepare command that fetches it.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from harness.core.errors import UserError

# the harness loads safetensors only (harness/core/models.py refuse_pickled): never fetch the pickled duplicates
LOCAL_LOADERS = ("json", "csv", "parquet", "text", "arrow")  # lm-eval dataset_path values that read local files


@dataclass(frozen=True)
class Asset:
    role: str  # what it is for, in words: "policy", "AlpacaEval LC weights", "open-llm arc_challenge data"
    kind: str  # model | file | dataset | local
    name: str  # repo id (or local path)
    filename: str | None = None  # kind file
    config: str | None = None  # kind dataset: the config name (None: the default one)
    splits: tuple[str, ...] = ()  # kind dataset: the splits read
    repo_type: str = "model"  # kind file: model | dataset
    hint: str = ""  # kind local: how to make it

    @property
    def label(self) -> str:
        if self.kind == "file":
            return f"{self.name}/{self.filename}"
        if self.kind == "dataset":
            return self.name + (f"[{self.config}]" if self.config else "") + \
                (f" ({', '.join(self.splits)})" if self.splits else "")
        return self.name


@dataclass(frozen=True)
class Caches:
    """Where assets live: None = the libraries' defaults (HF_HOME, HF_HUB_CACHE, HF_DATASETS_CACHE)."""
    hub: str | None = None
    datasets: str | None = None

    @classmethod
    def under(cls, root: str | Path | None) -> "Caches":
        """`prepare --dir ROOT` lays the caches out as HF_HOME=ROOT would: ROOT/hub and ROOT/datasets."""
        return cls() if root is None else cls(str(Path(root) / "hub"), str(Path(root) / "datasets"))


# ---------------------------------------------------------------------------------------------------------------
# the catalogue

def is_hub_name(name: str | None) -> bool:
    """A repo id ("org/name") that is not a local path or a builtin preset. "models/..." is the 1.4B preset's
    default layout (the authors' paths for the starting point they trained), never a hub repo."""
    return bool(name) and not name.startswith(("builtin:", "/", "./", "../", "~", "models/")) and \
        name.count("/") == 1 and not Path(name).exists()


def model_asset(role: str, name: str | None, hint: str = "") -> list[Asset]:
    if not name or name.startswith("builtin:"):
        return []
    if is_hub_name(name):
        return [Asset(role, "model", name)]
    return [Asset(role, "local", name, hint=hint or "a local model directory")]


def unique(assets: Iterable[Asset]) -> list[Asset]:
    return list(dict.fromkeys(assets))


# ---------------------------------------------------------------------------------------------------------------
# where an asset is (offline lookups only), and fetching it

@contextlib.contextmanager
def _forced_offline():
    """datasets' own offline fallback (its cached-module lookup), without a network call even when online."""
    import datasets.config
    import huggingface_hub.constants as hub

    before = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = before


def hub_reachable(dataset: str, timeout: float = 5.0) -> bool:
    """Whether the hub answers for `dataset` now (never when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is 1)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(dataset, timeout=timeout)
        return True
    except Exception:  # any failure (DNS, proxy, HTTP) means "not reachable" for the purpose of `auto`
        return False


def locate(asset: Asset, caches: Caches = Caches()) -> str | None:
    """The local path holding the asset, or None when it is not (or not wholly) here."""
    if asset.kind == "local":
        return asset.name if Path(asset.name).exists() else None
    if asset.kind == "file":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(asset.name, asset.filename, cache_dir=caches.hub, repo_type=asset.repo_type)
        return found if isinstance(found, str) else None  # a sentinel object records a known-missing file
    if asset.kind == "model":
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(asset.name, cache_dir=caches.hub, local_files_only=True))
        except (LocalEntryNotFoundError, ValueError, OSError):
            return None
        needed = [("tokenizer_config.json", "tokenizer.json")] if asset.role == "tokenizer" else \
            [("config.json",), ("*.safetensors",)]
        if not all(any(next(path.glob(p), None) for p in alt) for alt in needed):
            return None
        index = path / "model.safetensors.index.json"  # a sharded model is here when every shard is
        if index.exists():
            import json

            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
            if not all((path / s).exists() for s in shards):
                return None
        return str(path)
    import datasets

    with _forced_offline():
        try:
            builder = datasets.load_dataset_builder(asset.name, asset.config, cache_dir=caches.datasets)
        except Exception:  # not cached (ConnectionError), or another config only (ValueError): absent either way
            return None
    have = set(builder.info.splits or {})
    return builder.cache_dir if set(asset.splits) <= have and have else None


def size_bytes(path: str | None) -> int | None:
    """Bytes under a path; hub snapshots are symlinks into blobs/, so links are followed."""
    if path is None or not Path(path).exists():
        return None
    p = Path(path)
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------------------------------
# the check every command makes before loading anything

def offline() -> bool:
    import huggingface_hub.constants as hub

    return bool(hub.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true", "TRUE", "ON")


def _hub_answers(asset: Asset) -> str | None:
    """None when the hub serves the asset's repo; else why not, in words (one short probe, never a download)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().repo_info(asset.name, repo_type="dataset" if asset.kind == "dataset" else asset.repo_type,
                          timeout=5)
        return None
    except GatedRepoError:
        return "it is gated on the hub: accept its licence and log in (hf auth login)"
    except RepositoryNotFoundError:
        return "no such repository on the hub"
    except Exception as e:  # DNS, proxy, timeout: the hub cannot be had from here
        return f"the hub is not reachable ({type(e).__name__})"


def require(assets: Iterable[Asset], command: str, caches: Caches = Caches(), log: Callable = print) -> None:
    """Every asset present, or the hub able to serve the missing ones (the libraries then fetch them on first use);
    otherwise one UserError naming the first missing asset and the `harness prepare` command that fetches it."""
    missing = [a for a in unique(assets) if locate(a, caches) is None]
    if not missing:
        return
    local = [a for a in missing if a.kind == "local"]
    if local:
        raise UserError(f"{local[0].role} {local[0].name} does not exist: {local[0].hint}")
    first, more = missing[0], f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    why = "HF_HUB_OFFLINE is set" if offline() else _hub_answers(first)
    if why is None:
        log(f"not in the local cache yet, fetched on first use: {', '.join(a.label for a in missing)}")
        return
    raise UserError(f"{first.role} {first.label} is not in the local Hugging Face cache{more} and {why}: fetch "
                    f"it first with `{command}` where the hub is reachable (then HF_HUB_OFFLINE=1 works)")


def prepare_command(preset: str | None = None, suites: Iterable[str] = (), config: str | Path | None = None,
                    models: Iterable[str] = (), sets: Iterable[str] = ()) -> str:
    parts = ["python -m harness prepare"] + ([str(config)] if config else []) + \
        ([f"--preset {preset}"] if preset else []) + [f"--suite {s}" for s in suites] + \
        [f"--model {m}" for m in models] + [f"--set {s}" for s in sets]
    return " ".join(parts)
