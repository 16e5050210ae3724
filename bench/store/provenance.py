"""Where and with what a run was made: enough to tell two results apart later."""

import json
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from bench.store.claims import JOB_ENV

JOB_INFO_ENV = "BENCH_JOB_INFO"  # a cluster job's log files and requeues (JSON), set by the job
PACKAGES = ("torch", "transformers", "tokenizers", "lm_eval", "accelerate", "numpy", "pandas",
            "headless-bench")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def collect(device: torch.device) -> dict[str, Any]:
    """Provenance at the start of a run (the runner adds 'ended'); in a cluster job, the job's
    id and log files."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    job = os.environ.get(JOB_ENV)
    return ({"job": {"id": job, **json.loads(os.environ.get(JOB_INFO_ENV) or "{}")}}
            if job else {}) | {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "packages": {p: _version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "started": now(),
    }
