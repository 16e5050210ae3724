"""Fixtures shared by test files."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.pg_server import postgres_server
from support.suite_run_ids import SUITE_ENV

from bench.family import _FAMILIES


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a private PostgreSQL database, for several processes at once."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def faces_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo faces (LFW crops on photographs) in the WIDER FACE layout, built once."""
    from bench.data.demo_faces import build_demo_faces

    return build_demo_faces(tmp_path_factory.mktemp("faces") / "demo-faces")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Path]:
    """Debian's headless Chromium, installed for the session on a root CI machine lacking it."""
    from support.browser import chromium_executable

    with chromium_executable() as executable:
        yield executable


@pytest.fixture(scope="module")
def toy() -> Iterator[None]:
    """The toy family (tests/support/toy_family.py) registered beside the real ones, for the
    tests of the module that asks for it (and its module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_FAMILIES, "toy", "support.toy_family")
        yield


@pytest.fixture
def suite_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed values of the variables the suites in suites/ read (`SUITE_ENV`)."""
    for var, value in SUITE_ENV.items():
        monkeypatch.setenv(var, value)
