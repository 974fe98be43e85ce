"""Fetching a hub asset with its library's own call (`harness prepare`); where an asset is and whether it is here
is harness/core/assets.py."""
from __future__ import annotations

from harness.core.assets import Asset, Caches, locate
from harness.core.errors import UserError

# weights in formats the harness never loads (it reads safetensors only): not downloaded
SKIP_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.ot", "*.gguf"]


def fetch(asset: Asset, caches: Caches = Caches()) -> str:
    """Download one asset with its library's own call; returns where it is."""
    if asset.kind == "local":
        raise UserError(f"{asset.role} {asset.name} is a local path the harness cannot fetch: {asset.hint}")
    if asset.kind == "model":
        from huggingface_hub import snapshot_download

        return snapshot_download(asset.name, cache_dir=caches.hub, ignore_patterns=SKIP_WEIGHTS)
    if asset.kind == "file":
        from huggingface_hub import hf_hub_download

        return hf_hub_download(asset.name, asset.filename, repo_type=asset.repo_type, cache_dir=caches.hub)
    import datasets

    loaded = datasets.load_dataset(asset.name, asset.config, cache_dir=caches.datasets)
    lacking = [s for s in asset.splits if s not in loaded]
    if lacking:
        raise UserError(f"{asset.label}: the hub data set has no split {lacking[0]!r} (it has: {', '.join(loaded)})")
    return locate(asset, caches) or str(caches.datasets or datasets.config.HF_DATASETS_CACHE)
