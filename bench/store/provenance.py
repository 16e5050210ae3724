"""Where and with what a run was made: enough to tell two results apart later."""

import json
import os
import platform
import socket
from datetime import UTC, datetime
from typing import Any

import torch

from bench.store.claims import JOB_ENV
from bench.util.source import commit, package_version

JOB_INFO_ENV = "BENCH_JOB_INFO"  # a cluster job's log files and requeues (JSON), set by the job
PACKAGES = ("torch", "transformers", "tokenizers", "lm_eval", "accelerate", "numpy", "pandas",
            "headless-bench")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def collect(device: torch.device) -> dict[str, Any]:
    """Provenance at the start of a run (the runner adds 'ended'); in a cluster job, the job's
    id and log files."""
    sha, dirty = commit()
    job = os.environ.get(JOB_ENV)
    return ({"job": {"id": job, **json.loads(os.environ.get(JOB_INFO_ENV) or "{}")}}
            if job else {}) | {
        "git_commit": sha,
        "git_dirty": dirty,
        "packages": {p: package_version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "started": now(),
    }
