"""Session fixtures: the tiny-test preset is built once per test session into a temporary cache."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def harness_cache(tmp_path_factory):
    """A per-session cache so tests never depend on (or pollute) the user's ~/.cache/harness."""
    path = os.environ.get("HARNESS_TEST_CACHE") or str(tmp_path_factory.mktemp("harness-cache"))
    return path


@pytest.fixture(scope="session")
def tiny_test_models(harness_cache):
    """(config, Models, TaskData) for the tiny-test preset; the build happens here, once."""
    from harness.app.config import resolve
    from harness.core.models import load_models
    from harness.tasks import resolve_paths
    from harness.tasks.tldr import load_task

    cfg = resolve("tiny-test", {"model": {"cache_dir": harness_cache}})
    return cfg, load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None)), load_task("synthetic")
