"""Fixtures shared by test files."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import postgres_server
from suite_run_ids import SUITE_ENV


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
    from browser import chromium_executable

    with chromium_executable() as executable:
        yield executable


@pytest.fixture
def suite_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed values of the variables the suites in suites/ read (`SUITE_ENV`)."""
    for var, value in SUITE_ENV.items():
        monkeypatch.setenv(var, value)
