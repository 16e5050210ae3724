"""What the test servers (PostgreSQL, SLURM) are started with: commands whose failure says what
failed with their own output, and loopback ports the kernel had free."""

import socket
import subprocess
from pathlib import Path


def run_checked(cmd: list[str], what: str, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> str:
    """Run a command and return its output; on failure say what failed, with its output."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n"
                           f"{done.stdout}{done.stderr}")
    return done.stdout


def free_ports(n: int) -> list[int]:
    """`n` distinct ports the kernel just had free on loopback (another process could take one
    first)."""
    probes = [socket.socket() for _ in range(n)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()
