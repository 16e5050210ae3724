"""Fixtures shared by test files."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import postgres_server


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
    """Fixed values of the variables the suites in suites/ read."""
    monkeypatch.setenv("BENCH_DATA", "/nonexistent")
    for var in ("GLUE_DIR", "LAMBADA_OPENAI", "FDDB_ROOT", "PASCAL_ANNOTATIONS",
                "PASCAL_IMAGES", "WIDER_ROOT", "OWT2_TRAIN", "BERT_TOKENIZER", "CCNEWS_TRAIN",
                "PYTHIA_TOKENIZER", "VGG16_WEIGHTS", "WIKI_LANGS", "MBERT_TOKENIZER", "XNLI_DATA"):
        monkeypatch.setenv(var, f"/data/{var.lower()}")
