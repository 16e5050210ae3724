"""The SST-2-style proxy: GLUE's SST-2 layout read back with quoting off, labels checked against
the raw ground-truth rows (re-read here with plain tarfile code), disjoint splits of the right
sizes, byte-identical rebuilds, idempotence and recovery from a half-built folder."""

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from bench.data.demo_sst2 import build_demo_sst2
from bench.data.sources import VADER, DownloadFailed, fetch
from bench.errors import UserError
from bench.util.paths import cache_home

LAYOUT = {"SST-2/train.tsv", "SST-2/dev.tsv", "SOURCES.md", "manifest.json"}


@pytest.fixture(scope="module")
def downloads() -> Path:
    folder = cache_home() / "downloads"
    try:
        fetch(VADER, folder)
    except DownloadFailed as error:
        pytest.skip(f"the vaderSentiment sdist cannot be fetched: {error}")
    return folder


@pytest.fixture(scope="module")
def built(downloads: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_sst2(tmp_path_factory.mktemp("sst2") / "demo-sst2", downloads)


@pytest.fixture(scope="module")
def raw_rows(downloads: Path) -> list[tuple[float, str]]:
    """(valence, sentence) of every ground-truth line, read straight from the two tarballs."""
    with tarfile.open(downloads / VADER.filename) as sdist:
        inner = sdist.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        raw = tar.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read()
    rows = []
    for line in raw.decode("utf-8").split("\r\n"):
        _, valence, sentence = line.split("\t")
        rows.append((float(valence), sentence))
    return rows


def read_split(root: Path, split: str) -> list[tuple[str, int]]:
    """The split as GLUE's loader reads it: TSV, header row, quoting disabled."""
    with (root / "SST-2" / f"{split}.tsv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert reader.fieldnames == ["sentence", "label"]
        return [(row["sentence"], int(row["label"])) for row in reader]


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_sst2s(built: Path) -> None:
    assert set(files_of(built)) == LAYOUT
    for split in ("train", "dev"):
        data = (built / "SST-2" / f"{split}.tsv").read_bytes()
        assert data.startswith(b"sentence\tlabel\n") and data.endswith(b"\n")
        assert b"\r" not in data
        lines = data.decode("utf-8").split("\n")[1:-1]
        assert all(line.count("\t") == 1 and line[-2:] in ("\t0", "\t1") for line in lines)
        frame = pd.read_csv(built / "SST-2" / f"{split}.tsv", sep="\t", quoting=csv.QUOTE_NONE)
        assert list(frame.columns) == ["sentence", "label"] and len(frame) == len(lines)
        assert set(frame["label"]) == {0, 1}


def test_labels_follow_the_raw_valence(built: Path, raw_rows: list[tuple[float, str]]) -> None:
    assert len(raw_rows) == 10605  # the README's count
    expected: dict[str, int] = {}
    for valence, sentence in raw_rows:
        if valence != 0:
            expected.setdefault(" ".join(sentence.split()), 1 if valence > 0 else 0)
    train, dev = read_split(built, "train"), read_split(built, "dev")
    got = train + dev
    assert len(got) == len(expected) == 10605 - 37 - 2  # 37 neutral rows, 2 repeated sentences
    assert dict(got) == expected
    assert all(s == s.strip() and "  " not in s for s, _ in got)
    # The source marks dashes with runs of spaces; they come out as one space.
    assert any("of all comics even those who" in s for s, _ in got)


def test_splits_are_disjoint_hash_chosen_and_balanced(built: Path) -> None:
    train, dev = read_split(built, "train"), read_split(built, "dev")
    assert len(dev) == 872 and len(train) == 10566 - 872
    assert not {s for s, _ in train} & {s for s, _ in dev}
    by_hash = sorted(train + dev, key=lambda e: hashlib.sha256(e[0].encode()).hexdigest())
    assert {s for s, _ in dev} == {s for s, _ in by_hash[:872]}
    for rows in (train, dev):
        positive = sum(label for _, label in rows) / len(rows)
        assert 0.4 < positive < 0.6
    counts = json.loads((built / "manifest.json").read_text())["splits"]
    assert counts["dev"] == {"examples": 872, "label_0": 872 - sum(lab for _, lab in dev),
                             "label_1": sum(lab for _, lab in dev)}
    sources = (built / "SOURCES.md").read_text()
    assert "PROXY for SST-2, not SST-2" in sources and VADER.sha256 in sources


def test_rebuild_is_byte_identical_and_idempotent(built: Path, downloads: Path,
                                                  tmp_path: Path) -> None:
    again = build_demo_sst2(tmp_path / "other", downloads)
    assert files_of(again) == files_of(built)
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()}
    build_demo_sst2(again, downloads)
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()} == stamps


def test_half_built_folder_is_rebuilt(built: Path, downloads: Path, tmp_path: Path) -> None:
    folder = build_demo_sst2(tmp_path / "half", downloads)
    (folder / "manifest.json").unlink()
    (folder / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    build_demo_sst2(folder, downloads)
    assert files_of(folder) == files_of(built)


def test_a_corrupt_download_is_refused(tmp_path: Path) -> None:
    (tmp_path / VADER.filename).write_bytes(b"not the sdist")
    with pytest.raises(UserError, match="SHA-256"):
        build_demo_sst2(tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists()
