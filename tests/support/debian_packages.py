"""Debian packages that tests need: the machine's own, else installed for the test session.

A package the machine lacks is installed only on a root CI machine (CI set), where the tests must
run rather than skip; everything that install added is purged when the session ends, so the
machine is left as it was. Anywhere else the tests that need the package are skipped, saying
what is missing and how to provide it.
"""

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import pytest

Found = TypeVar("Found")


def may_install_packages() -> bool:
    """Whether this is a root CI machine, where tests install the Debian packages they lack."""
    return bool(os.geteuid() == 0 and shutil.which("apt-get") and os.environ.get("CI"))


def _apt_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _installed_packages() -> set[str]:
    listing = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}${binary:Package}\n"],
                             capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in listing.splitlines() if line.startswith("ii")}


def apt_install(packages: Sequence[str], missing: str) -> list[str]:
    """Install `packages` non-interactively; return every package the install added.

    The list, not just `packages`, is what gets purged: purging a metapackage alone would leave
    what it pulled in (for PostgreSQL the versioned server, its configuration and the cluster
    Debian creates on install). The package lists are refreshed only when the install fails."""
    env, install = _apt_env(), ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    before = _installed_packages()
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{missing}, and installing Debian's {' '.join(packages)} with "
                               f"apt-get failed; install it by hand:\n{done.stderr}")
    return sorted(_installed_packages() - before)


def apt_purge(packages: list[str]) -> None:
    """Remove `packages` with their configuration, and whatever only they needed."""
    env = _apt_env()
    if packages:
        subprocess.run(["apt-get", "purge", "-y", *packages], env=env, capture_output=True,
                       check=False)
    subprocess.run(["apt-get", "autoremove", "-y"], env=env, capture_output=True, check=False)


@contextmanager
def provided(packages: str | Sequence[str], find: Callable[[], Found | None], missing: str
             ) -> Iterator[Found]:
    """What `find` finds, installed from Debian's `packages` for the block where a root CI
    machine lacks it; skips the test elsewhere. `missing` says what `find` looked for."""
    names = [packages] if isinstance(packages, str) else list(packages)
    found = find()
    if found is not None:
        yield found
        return
    if not may_install_packages():
        pytest.skip(f"{missing}: install it (Debian: apt-get install {' '.join(names)}), or run "
                    "the tests as root with CI set to install it for the session")
    installed = apt_install(names, missing)
    try:
        found = find()
        if found is None:
            raise RuntimeError(f"apt-get installed {' '.join(names)}, yet {missing}")
        yield found
    finally:
        apt_purge(installed)
