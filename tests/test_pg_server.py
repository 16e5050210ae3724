"""The throwaway PostgreSQL server: a real, loopback-only database that separate connections
share, removed at exit, and Debian's highest installed major chosen over PATH."""

from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from support.pg_server import find_bin_dir, postgres_server


def test_url_serves_one_database_to_separate_connections(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as writer, engine.connect() as reader:
            pid = sa.text("SELECT pg_backend_pid()")
            assert writer.execute(pid).scalar() != reader.execute(pid).scalar()
            writer.execute(sa.text("CREATE TABLE trial (id int PRIMARY KEY, value float)"))
            writer.execute(sa.text("INSERT INTO trial VALUES (1, 0.5), (2, -1.25)"))
            writer.commit()
            rows = reader.execute(sa.text("SELECT id, value FROM trial ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(1, 0.5), (2, -1.25)]
            assert reader.execute(sa.text("SHOW listen_addresses")).scalar() == "127.0.0.1"
            assert reader.execute(sa.text("SELECT current_database()")).scalar() == "bench"
    finally:
        engine.dispose()


def test_server_is_gone_after_the_block() -> None:
    with postgres_server() as url:
        port = sa.make_url(url).port
        psycopg2.connect(host="127.0.0.1", port=port, user="bench", dbname="bench").close()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host="127.0.0.1", port=port, user="bench", dbname="bench",
                         connect_timeout=2)


def test_highest_debian_major_wins_numerically(tmp_path: Path) -> None:
    for major in ("9", "16", "17"):
        bin_dir = tmp_path / major / "bin"
        bin_dir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            if major != "17" or name != "postgres":  # 17 lacks the server itself
                (bin_dir / name).touch()
    assert find_bin_dir(tmp_path) == tmp_path / "16" / "bin"
