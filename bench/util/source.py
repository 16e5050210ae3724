"""Which code is running: the installed packages' versions and the git commit of bench's own
checkout (and whether it has uncommitted changes), for a run's provenance and `bench
--version`. No torch: `bench --version` answers at once."""

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = "headless-bench"


def git(*args: str) -> str | None:
    """What git says about bench's checkout; None where it is not one, or git is missing."""
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def commit() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether tracked files differ from it (None: not a checkout)."""
    status = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "HEAD"), None if status is None else bool(status)


def version_text() -> str:
    """`headless-bench 0.1.0 (git 1c1bb13..., uncommitted changes)`."""
    sha, dirty = commit()
    where = "not a git checkout" if sha is None else f"git {sha}" + (
        ", uncommitted changes" if dirty else "")
    return f"{PACKAGE} {package_version(PACKAGE) or 'unknown version'} ({where})"
