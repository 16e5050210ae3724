"""Fixtures shared by test files."""

from collections.abc import Iterator

import pytest
from pg_server import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a private PostgreSQL database, for several processes at once."""
    with postgres_server() as url:
        yield url
