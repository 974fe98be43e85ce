"""Start a module on 2 CPU processes (gloo) through `accelerate launch` and a shipped config (configs/accelerate)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIGS = ROOT / "configs" / "accelerate"


def launch(setup: str, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/{setup}.yaml --num_processes N ARGS` from the repo root."""
    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(CONFIGS / f"{setup}.yaml"), "--num_processes", str(processes),
                           "--main_process_port", str(port), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
