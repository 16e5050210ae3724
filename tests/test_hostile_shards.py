"""Hostile token shard builds and corpora: a damaged build, manifest, resumed build, corpus or
language folder ends in a clear error naming the file (exit 2, or the run recorded failed with
that reason before training), never a traceback; a resumed build tokenizes a damaged chunk
again; a long document is tokenized in bounded memory, with the ids of the whole document."""

import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from support.textgen import lm_suite, narrative_passages, write_jsonl

from bench.cli import main
from bench.text import data as text_data
from bench.text import shards
from bench.text.config import DataConfig

BPE = "{train_bpe: 300}"
REBUILD = "delete that folder and build them again"


@dataclass(frozen=True)
class Built:
    """The corpus and its finished build (several shards), made once for the module."""

    corpus: Path
    folder: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("built")
    corpus = write_jsonl(root / "train.jsonl", narrative_passages(300, seed=5))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_DATA", str(root / "data"))
        patch.setattr(shards, "CHUNK_BYTES", 4096)
        cfg = DataConfig(train=str(corpus), seq_len=16, tokenizer={"train_bpe": 300})
        data = shards.prepare_lm_data(cfg, root / "data" / "lm-data", workers=1)
    assert len(list(data.folder.glob("train-*"))) >= 4
    return Built(corpus, data.folder)


@dataclass
class Env:
    """One case's world: its data cache holding a copy of the module's build, its suite."""

    root: Path
    built: Built

    @property
    def build(self) -> Path:
        return self.root / "data" / "lm-data" / self.built.folder.name

    @property
    def suite(self) -> Path:
        return self.root / "suite.yaml"

    def write_suite(self, train: str | Path, tokenizer: str = BPE, extra: str = "") -> None:
        self.suite.write_text(lm_suite("hostile-shards", train, tokenizer, extra))

    def tokenizer_dir(self) -> Path:
        """A tokenizer directory (the build's BPE) for suites that name one."""
        folder = self.root / "tok"
        if not folder.exists():
            shutil.copytree(self.built.folder / "tokenizer", folder)
        return folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: Built) -> Env:
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("BENCH_REHASH", raising=False)
    monkeypatch.chdir(tmp_path)
    case = Env(tmp_path, built)
    shutil.copytree(built.folder, case.build, symlinks=True)
    case.write_suite(built.corpus)
    return case


# --- ways to damage a build --------------------------------------------------------------------

Setup = Callable[[Env], object]


def _seal(content: dict) -> None:
    """The manifest's checksum made right again, as a deliberate edit would: the SHA-256 of
    its canonical JSON without the checksum."""
    rest = {k: v for k, v in content.items() if k != "checksum"}
    content["checksum"] = hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _edit(change: Callable[[dict], object], seal: bool = True) -> Setup:
    def setup(env: Env) -> None:
        path = env.build / "manifest.json"
        content = json.loads(path.read_text())
        change(content)
        if seal:
            _seal(content)
        path.write_text(json.dumps(content))
    return setup


def _shard0(content: dict) -> dict:
    return content["streams"]["train"][0]


def _manifest_text(text: str) -> Setup:
    return lambda env: (env.build / "manifest.json").write_text(text)


def _file(name: str, shard: int | None = 1) -> Callable[[Env], Path]:
    """A file of shard `shard` (None: of the build itself)."""
    return lambda env: env.build / (f"train-{shard:05d}/{name}" if shard is not None else name)


TOKENS = _file("tokens.bin")
DOCS = _file("docs.idx")


def _ids(change: Callable[[np.ndarray], np.ndarray]) -> Setup:
    def setup(env: Env) -> None:
        ids = np.fromfile(TOKENS(env), dtype=np.uint16)
        change(ids).astype(np.uint16).tofile(TOKENS(env))
    return setup


def _truncate(target: Callable[[Env], Path], size: int) -> Setup:
    def setup(env: Env) -> None:
        with open(target(env), "r+b") as handle:
            handle.truncate(size)
    return setup


def _append(target: Callable[[Env], Path], data: bytes) -> Setup:
    def setup(env: Env) -> None:
        with open(target(env), "ab") as handle:
            handle.write(data)
    return setup


def _garble(target: Callable[[Env], Path]) -> Setup:
    return lambda env: target(env).write_bytes(b"\x00garbage\xff" * 8)


def _to_directory(target: Callable[[Env], Path]) -> Setup:
    def setup(env: Env) -> None:
        target(env).unlink()
        target(env).mkdir()
    return setup


def _link_out(target: Callable[[Env], Path]) -> Setup:
    """The file or folder moved out of the build, a symbolic link left in its place."""
    def setup(env: Env) -> None:
        outside = env.root / f"outside-{target(env).name}"
        shutil.move(target(env), outside)
        target(env).symlink_to(outside)
    return setup


def _remove(target: Callable[[Env], Path]) -> Setup:
    def setup(env: Env) -> None:
        path = target(env)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return setup


def _save_npy(target: Callable[[Env], Path], change: Callable[[np.ndarray], np.ndarray]) -> Setup:
    def setup(env: Env) -> None:
        with open(target(env), "rb") as handle:
            array = np.load(handle)
        with open(target(env), "wb") as handle:
            np.save(handle, change(array))
    return setup


def _format_1(env: Env) -> None:
    """The manifest as builds wrote it before digests were recorded."""
    path = env.build / "manifest.json"
    content = json.loads(path.read_text())
    for key in ("format", "sha256", "checksum"):
        content.pop(key)
    for shard in content["streams"]["train"]:
        shard.pop("sha256")
    path.write_text(json.dumps(content))


def _both(*setups: Setup) -> Setup:
    return lambda env: [setup(env) for setup in setups]


def _resumed(*setups: Setup) -> Setup:
    """A killed build: no manifest yet, then the damage."""
    return _both(_remove(_file("manifest.json", None)), *setups)


def _killed_worker(env: Env) -> None:
    """What a worker killed mid-shard leaves: its half-written temporary shard folder."""
    partial = env.build / ".train-00002.k1ll3d0x.tmp"
    partial.mkdir()
    (partial / "tokens.bin").write_bytes(b"\x01\x00" * 7)


# --- ways to give hostile corpora -------------------------------------------------------------


def _corpus(make: Callable[[Path], str | Path], extra: str = "",
            tokenizer_dir: bool = False) -> Setup:
    """A suite whose data.train is what `make(root)` returns (read with a tokenizer directory,
    as a folder of languages needs, or a BPE trained on it)."""
    def setup(env: Env) -> None:
        tokenizer = f"{{path: {env.tokenizer_dir()}}}" if tokenizer_dir else BPE
        env.write_suite(make(env.root), tokenizer, extra)
    return setup


def _fifo(root: Path) -> Path:
    os.mkfifo(root / "pipe.jsonl")
    return root / "pipe.jsonl"


def _socket(root: Path) -> Path:
    os.mknod(root / "sock.jsonl", 0o600 | stat.S_IFSOCK)
    return root / "sock.jsonl"


def _folder(root: Path) -> Path:
    (root / "folder.jsonl").mkdir()
    return root / "folder.jsonl"


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        (root / name).write_bytes(data)
        return root / name
    return make


def _languages(*names: str) -> Setup:
    """A suite on a folder of languages: en.jsonl and the corpora `names` (a name ending in
    '/' is a saved-dataset folder)."""
    def make(root: Path) -> Path:
        folder = root / "langs"
        folder.mkdir()
        write_jsonl(folder / "en.jsonl", narrative_passages(40, seed=1))
        for name in names:
            if name.endswith("/"):
                (folder / name).mkdir()
            else:
                write_jsonl(folder / name, narrative_passages(40, seed=2))
        return folder
    return _corpus(make, tokenizer_dir=True)


# (id, setup, command, exit code, pieces the output must hold: {build}, {root}, {corpus} filled in)
HOSTILE: list[tuple[str, Setup, str, int, list[str]]] = [
    # manifests
    ("manifest not JSON", _manifest_text('{"layout": "causal", '), "tokenize", 2,
     ["{build}/manifest.json: not valid JSON", REBUILD]),
    ("manifest a list", _manifest_text("[1, 2]"), "tokenize", 2,
     ["{build}/manifest.json:", "dictionary"]),
    ("manifest not UTF-8", lambda e: (e.build / "manifest.json").write_bytes(b"\x80\x81{"),
     "tokenize", 2,
     ["{build}/manifest.json: not valid JSON"]),
    ("manifest missing splits", _edit(lambda m: m.pop("splits")), "tokenize", 2,
     ["{build}/manifest.json: splits: Field required"]),
    ("manifest vocab a string", _edit(lambda m: m.update(vocab="300")), "tokenize", 2,
     ["{build}/manifest.json: vocab:", "integer"]),
    ("manifest negative tokens", _edit(lambda m: _shard0(m).update(tokens=-4)), "tokenize", 2,
     ["{build}/manifest.json: streams.train.0.tokens:", "greater than or equal to 0"]),
    ("manifest unknown key", _edit(lambda m: m.update(extra=1)), "tokenize", 2,
     ["{build}/manifest.json: extra:", "not permitted"]),
    ("shard name ../../..", _edit(lambda m: _shard0(m).update(name="../../..")), "tokenize", 2,
     ["{build}/manifest.json: streams.train[0].name '../../..'; expected 'train-00000'"]),
    ("shard name absolute", _edit(lambda m: _shard0(m).update(name="/etc")), "tokenize", 2,
     ["{build}/manifest.json: streams.train[0].name '/etc'"]),
    ("shard name with a slash", _edit(lambda m: _shard0(m).update(name="train-00001/..")),
     "tokenize", 2, ["{build}/manifest.json: streams.train[0].name 'train-00001/..'"]),
    ("manifest edited, checksum stale",
     _edit(lambda m: m["splits"]["train"].update(first=8), seal=False), "tokenize", 2,
     ["{build}/manifest.json: its content does not match its checksum"]),
    ("shard token count disagrees", _edit(lambda m: _shard0(m).update(tokens=_shard0(m)[
        "tokens"] + 1)), "tokenize", 2, ["{build}/train-00000/tokens.bin:", "bytes; expected"]),
    ("shard document count disagrees", _edit(lambda m: _shard0(m).update(documents=_shard0(m)[
        "documents"] + 1)),
     "tokenize", 2, ["{build}/train-00000/docs.idx: holds int64 of shape"]),
    ("split outside its stream", _edit(lambda m: m["splits"]["val"].update(tokens=10**9)),
     "tokenize", 2, ["{build}/manifest.json: splits.val", "does not lie in stream 'train'"]),
    ("wrong dtype uint32", _edit(lambda m: m.update(dtype="uint32")), "tokenize", 2,
     ["{build}/train-00000/tokens.bin:", "uint32 token ids"]),
    ("dtype float32", _edit(lambda m: m.update(dtype="float32")), "tokenize", 2,
     ["{build}/manifest.json: dtype:", "'uint16' or 'uint32'"]),
    ("layout of the other family", _edit(lambda m: m.update(layout="mlm")), "tokenize", 2,
     ["{build}/manifest.json: layout 'mlm'; expected 'causal'"]),
    ("vocab disagrees", _edit(lambda m: m.update(vocab=299)), "tokenize", 2,
     ["{build}/train-00000/tokens.bin: token 57 is id 299; expected ids below the "
      "vocabulary's 299"]),
    ("digest missing for a shard", _edit(lambda m: _shard0(m).pop("sha256")), "tokenize", 2,
     ["{build}/manifest.json: format 2; expected the SHA-256"]),
    ("digest not hex", _edit(lambda m: _shard0(m)["sha256"].update({"tokens.bin": "x" * 64})),
     "tokenize", 2, ["{build}/manifest.json: streams.train.0.sha256.tokens.bin:"]),
    ("manifest a directory", _both(_remove(_file("manifest.json", None)),
                                   lambda e: (e.build / "manifest.json").mkdir()),
     "tokenize", 2, ["{build}/manifest.json: is a directory; expected a regular file"]),
    ("manifest a link out of the build", _link_out(_file("manifest.json", None)), "tokenize", 2,
     ["{build}/manifest.json: is a symbolic link"]),
    # shard files
    ("tokens truncated", _truncate(TOKENS, 100), "tokenize", 2,
     ["{build}/train-00001/tokens.bin: 100 bytes; expected", REBUILD]),
    ("tokens extended", _append(TOKENS, b"\x01\x00" * 4), "tokenize", 2,
     ["{build}/train-00001/tokens.bin:", "bytes; expected"]),
    ("tokens overwritten with other valid ids", _ids(lambda ids: (ids + 1) % 300), "tokenize",
     2, ["{build}/train-00001/tokens.bin: changed since the build", REBUILD]),
    ("tokens overwritten, run fails", _ids(lambda ids: (ids + 1) % 300), "run", 1,
     ["{build}/train-00001/tokens.bin: changed since the build"]),
    ("ids at or above the vocabulary", _ids(lambda ids: np.where(ids == ids[5], 65535, ids)),
     "tokenize", 2, ["{build}/train-00001/tokens.bin: token 5 is id 65535; expected ids below "
                     "the vocabulary's 300"]),
    ("tokens emptied", _truncate(TOKENS, 0), "tokenize", 2,
     ["{build}/train-00001/tokens.bin: 0 bytes; expected"]),
    ("tokens truncated, run fails", _truncate(TOKENS, 10), "run", 1,
     ["{build}/train-00001/tokens.bin: 10 bytes; expected"]),
    ("tokens a directory", _to_directory(TOKENS), "tokenize", 2,
     ["{build}/train-00001/tokens.bin: is a directory; expected a regular file"]),
    ("tokens a link out of the build", _link_out(TOKENS), "tokenize", 2,
     ["{build}/train-00001/tokens.bin: is a symbolic link; expected the build's own file"]),
    ("shard folder a link out of the build", _link_out(_file("")), "tokenize", 2,
     ["{build}/train-00001: is a symbolic link; expected the build's own folder"]),
    ("shard folder missing", _remove(_file("")), "tokenize", 2, ["{build}/train-00001: missing"]),
    ("docs.idx garbage", _garble(DOCS), "tokenize", 2,
     ["{build}/train-00001/docs.idx: not a NumPy .npy file"]),
    ("docs.idx ends not rising", _save_npy(DOCS, lambda a: a[::-1].copy()), "tokenize", 2,
     ["{build}/train-00001/docs.idx: document ends do not rise"]),
    ("shard unigram garbage", _garble(_file("unigram.npy")), "tokenize", 2,
     ["{build}/train-00001/unigram.npy: not a NumPy .npy file"]),
    ("build unigram miscounted", _save_npy(_file("unigram.npy", None), lambda a: a + 1),
     "tokenize", 2, ["{build}/unigram.npy: token counts that do not sum to"]),
    ("tokenizer changed", _append(_file("tokenizer/tokenizer.json", None), b" "), "tokenize", 2,
     ["{build}/tokenizer: changed since the build"]),
    ("tokenizer missing", _remove(_file("tokenizer", None)), "tokenize", 2,
     ["{build}/tokenizer: missing"]),
    ("format-1 manifest, ids above the vocabulary",
     _both(_format_1, _ids(lambda ids: np.where(ids == ids[3], 400, ids))), "tokenize", 2,
     ["{build}/train-00001/tokens.bin: token 3 is id 400"]),
    ("format-1 manifest, count disagrees",
     _both(_format_1, _save_npy(DOCS, lambda a: a[:-1].copy())), "tokenize", 2,
     ["{build}/train-00001/docs.idx: holds int64 of shape"]),
    # resumed builds: a damaged chunk is tokenized again, other damage refused
    ("resumed, docs.idx garbage", _resumed(_garble(DOCS)), "tokenize", 0,
     ["{build}/train-00001/docs.idx: not a NumPy .npy file; tokenizing its chunk again"]),
    ("resumed, tokens truncated", _resumed(_truncate(TOKENS, 6)), "tokenize", 0,
     ["{build}/train-00001/tokens.bin: 6 bytes; expected", "tokenizing its chunk again"]),
    ("resumed, tokens overwritten", _resumed(_ids(lambda ids: (ids + 1) % 300)), "tokenize", 0,
     ["{build}/train-00001/tokens.bin: changed since the build", "tokenizing its chunk again"]),
    ("resumed, shard record missing", _resumed(_remove(_file("shard.json"))), "tokenize", 0,
     ["{build}/train-00001/shard.json: missing; tokenizing its chunk again"]),
    ("resumed, shard record not JSON", _resumed(_garble(_file("shard.json"))), "tokenize", 0,
     ["{build}/train-00001/shard.json: not valid JSON"]),
    ("resumed, shard folder a file", _resumed(_remove(_file("")),
                                              lambda e: (e.build / "train-00001").touch()),
     "tokenize", 0, ["{build}/train-00001: is a file; expected a folder"]),
    ("resumed, a killed worker's partial shard", _resumed(_killed_worker), "tokenize", 0, []),
    ("resumed, plan not JSON", _resumed(_garble(_file("plan.json", None))), "tokenize", 2,
     ["{build}/plan.json: not valid JSON", REBUILD]),
    ("resumed, plan not covering the corpus",
     _resumed(lambda e: (e.build / "plan.json").write_text('{"train": [[0, 10]]}')),
     "tokenize", 2, ["{build}/plan.json: no chunks of 'train' that cover its"]),
    ("resumed, tokenizer copy damaged",
     _resumed(lambda e: (e.build / "tokenizer" / "tokenizer.json").write_text("{")),
     "tokenize", 2, ["{build}/tokenizer: cannot be loaded as a tokenizer", REBUILD]),
    # corpora
    ("corpus a FIFO", _corpus(_fifo), "plan", 2,
     ["{root}/pipe.jsonl: is a FIFO; expected a regular file or a folder"]),
    ("corpus a device", _corpus(lambda _: "/dev/null"), "plan", 2,
     ["/dev/null: is a character device; expected a regular file or a folder"]),
    ("corpus a socket", _corpus(_socket), "plan", 2, ["{root}/sock.jsonl: is a socket"]),
    ("val a directory for a file format",
     lambda e: e.write_suite(e.built.corpus, BPE, f", format: jsonl, val: {_folder(e.root)}"),
     "tokenize", 2, ["{root}/folder.jsonl: is a directory; format 'jsonl' expects a file"]),
    ("tokenizer a file for a folder",
     lambda e: e.write_suite(e.built.corpus, f"{{path: {e.built.corpus}}}"), "plan", 2,
     ["{corpus}: no such tokenizer directory"]),
    ("corpus empty", _corpus(_bytes("empty.jsonl", b"")), "tokenize", 2,
     ["{root}/empty.jsonl: 0 document(s)"]),
    ("corpus not UTF-8", _corpus(_bytes("latin.txt", b"caf\xe9 au lait\n")), "tokenize", 2,
     ["{root}/latin.txt: not UTF-8 text"]),
    ("corpus binary", _corpus(_bytes("blob.jsonl", bytes(range(256)) * 4)), "tokenize", 2,
     ["{root}/blob.jsonl:1:"]),
    ("JSON line without the text field",
     _corpus(_bytes("nofield.jsonl", b'{"text": "a b c"}\n{"body": "d e f"}\n')), "tokenize",
     2, ["{root}/nofield.jsonl:2: no field 'text' (fields: body)"]),
    # language folders
    ("language stem with markup", _languages("<b>x<.jsonl"), "plan", 2,
     ["{root}/langs/<b>x<.jsonl: language '<b>x<' must be letters"]),
    ("language stem with a space", _languages("en us.jsonl"), "plan", 2,
     ["{root}/langs/en us.jsonl: language 'en us'"]),
    ("language stem with ..", _languages("a..b.txt"), "plan", 2,
     ["{root}/langs/a..b.txt: language 'a..b'", "no '..'"]),
    ("language stem too long", _languages("x" * 101 + ".jsonl"), "plan", 2,
     ["{root}/langs/" + "x" * 101 + ".jsonl: language", "at most 100"]),
    ("language folder with a bad name", _languages("de_&_fr/"), "plan", 2,
     ["{root}/langs/de_&_fr: language 'de_&_fr'"]),
]


def _command(env: Env, command: str) -> list[str]:
    return {"tokenize": ["data", "tokenize", str(env.suite), "--workers", "1"],
            "plan": ["plan", str(env.suite)],
            "run": ["run", str(env.suite), "--results", str(env.root / "results")]}[command]


def _same_shards(build: Path, good: Path) -> None:
    """A rebuilt build holds the good build's shards byte for byte, and nothing half-written."""
    names = sorted(p.name for p in good.glob("train-*"))
    assert sorted(p.name for p in build.glob("train-*")) == names
    for name in names:
        for file in ("tokens.bin", "docs.idx", "unigram.npy"):
            assert (build / name / file).read_bytes() == (good / name / file).read_bytes()
    assert not [p for p in build.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_refused_naming_the_file(case, env, capsys):
    name, setup, command, code, pieces = case
    setup(env)
    assert main(_command(env, command)) == code, name
    out, err = capsys.readouterr()
    said = out + err
    assert "Traceback" not in said
    for piece in pieces:
        piece = piece.format(build=env.build, root=env.root, corpus=env.built.corpus)
        assert piece in said, f"{name}: {piece!r} not in {said!r}"
    if command == "tokenize" and code == 2:
        assert err.startswith("error: ")
    if command == "run":  # recorded failed before training: no checkpoint was written
        [state] = (env.root / "results").glob("*/*/state.json")
        assert json.loads(state.read_text())["state"] == "failed"
        assert not list(state.parent.rglob("*.pt"))
    if command == "tokenize" and code == 0:
        _same_shards(env.build, env.built.folder)
        assert json.loads((env.build / "manifest.json").read_text())["format"] == 2


# --- focused cases ----------------------------------------------------------------------------


def test_a_changed_shard_is_seen_by_stat_and_an_unchanged_one_costs_no_read(env, capsys,
                                                                              monkeypatch):
    """The digests go through the stat-keyed cache: after one check, a rewrite that keeps the
    size and resets the mtime on purpose goes unseen (the documented limit, which shows that
    the file was not read again); any ordinary write changes the stat and is refused."""
    assert main(_command(env, "tokenize")) == 0
    tokens = TOKENS(env)
    st = tokens.stat()
    ids = np.fromfile(tokens, dtype=np.uint16)
    ((ids + 1) % 300).astype(np.uint16).tofile(tokens)
    os.utime(tokens, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(_command(env, "tokenize")) == 0
    monkeypatch.setenv("BENCH_REHASH", "1")
    assert main(_command(env, "tokenize")) == 2
    monkeypatch.delenv("BENCH_REHASH")
    assert f"{tokens}: changed since the build" in capsys.readouterr().err
    os.utime(tokens)  # an ordinary write's new mtime
    assert main(_command(env, "tokenize")) == 2
    assert f"{tokens}: changed since the build" in capsys.readouterr().err


def test_a_format_1_manifest_gets_its_digests_on_first_opening(env):
    _format_1(env)
    assert main(_command(env, "tokenize")) == 0
    upgraded = json.loads((env.build / "manifest.json").read_text())
    good = json.loads((env.built.folder / "manifest.json").read_text())
    assert upgraded == good


def test_a_fifo_corpus_does_not_block_tokenize(env):
    env.write_suite(_fifo(env.root))
    done = subprocess.run([sys.executable, "-m", "bench", *_command(env, "tokenize")],
                          cwd=env.root, capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    assert done.returncode == 2
    assert f"{env.root}/pipe.jsonl: is a FIFO" in done.stderr


def _workers_of(pid: int) -> list[int]:
    """The tokenizing worker processes (spawned children) of process `pid`."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return found


def test_a_killed_worker_is_an_error_naming_the_corpus(env):
    corpus = write_jsonl(env.root / "big.jsonl", narrative_passages(150_000, seed=3))
    env.write_suite(corpus, f"{{path: {env.tokenizer_dir()}}}")
    proc = subprocess.Popen([sys.executable, "-m", "bench", *_command(env, "tokenize")],
                            cwd=env.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        workers = _workers_of(proc.pid)
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, f"no worker seen: {err}"
    assert proc.returncode == 2, err
    assert f"error: {corpus}: a tokenizing worker process died" in err
    assert "lack of memory" in err and "Traceback" not in err


# --- long documents ---------------------------------------------------------------------------


def _long_line(path: Path, mib: int) -> str:
    """A JSON-lines corpus whose first document is one line of `mib` MiB of words, then a few
    short documents; the long text."""
    rng = random.Random(0)
    words = [w + s for w in ("alice", "went", "market", "river", "the", "12", "3.5", "!")
             for s in ("", "s", "ed")]
    block = " ".join(rng.choice(words) for _ in range(1 << 17))  # about 0.8 MiB
    text = " ".join([block] * ((mib << 20) // len(block) + 1))
    write_jsonl(path, [text, *narrative_passages(20, seed=4)])
    return text


# The process's own high-water mark (VmHWM, kB): ru_maxrss would count the parent's resident
# memory at the fork that started it, a whole pytest process's.
PEAK = """
import re, sys
from pathlib import Path
{body}
status = Path("/proc/self/status").read_text()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
"""
WORKER = """
from bench.text import shards
from bench.text.data import open_corpus
corpus = open_corpus(sys.argv[1])
task = shards.ChunkTask(corpus, 0, corpus.size, sys.argv[2], sys.argv[3], 0, "uint16", 300)
shards._init_worker()
shards._tokenize_chunk(task)
"""
TRAINER = """
from bench.text.config import TokenizerConfig
from bench.text.data import load_tokenizer, open_corpus, read_documents
corpus = open_corpus(sys.argv[1])
load_tokenizer(TokenizerConfig(train_bpe=300), lambda: read_documents(corpus), "k",
               Path(sys.argv[2]))
"""


def _peak_mib(body: str, cwd: Path, *args: str) -> int:
    """A fresh process's peak resident memory (MiB) running `body` with `args` in `cwd`."""
    done = subprocess.run([sys.executable, "-c", PEAK.format(body=textwrap.dedent(body)),
                           *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"RAYON_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_a_20_mib_line_is_tokenized_and_trained_on_in_bounded_memory(env):
    """Whole, this line costs a tokenizing worker some 3.7 GiB and BPE training some 2.2 GiB
    (about 185 and 110 bytes a character); in pieces each stays well under 1 GiB, the process's
    imports included."""
    corpus = env.root / "long.jsonl"
    _long_line(corpus, 20)
    tokenizer = env.built.folder / "tokenizer" / "tokenizer.json"
    out = env.root / "shard"
    assert _peak_mib(WORKER, env.root, str(corpus), str(out), str(tokenizer)) < 1024
    ends = np.load(out / "docs.idx")
    ids = np.fromfile(out / "tokens.bin", dtype=np.uint16)
    assert len(ends) == 21 and ends[-1] == len(ids)  # the long line is one document
    assert (ids[ends - 1] == 0).all() and (ids[: ends[0] - 1] != 0).all()  # separators: id 0
    assert _peak_mib(TRAINER, env.root, str(corpus), str(env.root / "bpe")) < 1024


def test_a_long_document_in_pieces_has_the_ids_of_the_whole(env):
    """Through `bench data tokenize`: a line of 2.5 M characters (three pieces), its BPE
    trained and its ids written piece by piece, as the whole line gives them."""
    corpus = env.root / "long.jsonl"
    text = _long_line(corpus, 3)[: 5 * text_data.PIECE_CHARS // 2]
    write_jsonl(corpus, [text, *narrative_passages(20, seed=4)])
    assert len(list(text_data.piece_bounds(text))) == 3
    env.write_suite(corpus)
    assert main(_command(env, "tokenize")) == 0
    [build] = [p for p in (env.root / "data" / "lm-data").glob("shards-*") if p != env.build]
    tokenizer = tokenizers.Tokenizer.from_file(str(build / "tokenizer" / "tokenizer.json"))
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    ids = np.fromfile(build / "train-00000" / "tokens.bin", dtype=np.uint16)
    assert ids[: len(whole) + 1].tolist() == [*whole, tokenizer.token_to_id("<|endoftext|>")]


def _cuttable(text: str, at: int) -> bool:
    return text[at] == " " and at + 1 < len(text) and not text[at + 1].isspace()


def test_pieces_are_bounded_cut_before_a_word_and_keep_the_ids(built):
    tokenizer = tokenizers.Tokenizer.from_file(str(built.folder / "tokenizer" / "tokenizer.json"))
    rng = random.Random(7)
    alphabet = ["a", "b", "é", " ", "  ", "\n", "\t", "'s", "1", "!", "\u3000", " \n ", "x"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        limit = rng.randint(1, 30)
        bounds = list(text_data.piece_bounds(text, limit))
        assert bounds[0][0] == 0 and bounds[-1][1] == len(text)
        assert all(0 < stop - start <= limit for start, stop in bounds)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        for start, stop in bounds[:-1]:  # at the last space before a word, else at the bound
            later = [at for at in range(stop + 1, start + limit + 1) if _cuttable(text, at)]
            assert not later and (_cuttable(text, stop) or not any(
                _cuttable(text, at) for at in range(start + 1, start + limit + 1)))
        if all(_cuttable(text, stop) for _, stop in bounds[:-1]):
            pieces = [i for start, stop in bounds
                      for i in tokenizer.encode(text[start:stop], add_special_tokens=False).ids]
            assert pieces == tokenizer.encode(text, add_special_tokens=False).ids


def test_a_second_builder_waits_for_the_first_and_builds_nothing(tmp_path):
    """Processes sharing a data cache (the jobs of an array) build a corpus's shards one at a
    time: while the build's lock is held, another `bench data tokenize` waits without writing
    anything, then builds once the lock is free."""
    import fcntl

    from bench.config.suite import load_suite

    corpus = write_jsonl(tmp_path / "train.jsonl", narrative_passages(60, seed=3))
    suite = tmp_path / "suite.yaml"
    suite.write_text(lm_suite("waits", corpus))
    cfg = load_suite(suite).variants["softmax"].config.data
    cache = tmp_path / "data" / "lm-data"
    folder = cache / f"shards-{shards.shards_fingerprint(cfg, 'causal')}"
    cache.mkdir(parents=True)
    log = tmp_path / "tokenize.log"
    with (cache / f".{folder.name}.lock").open("w") as held, log.open("w") as out:
        fcntl.flock(held, fcntl.LOCK_EX)  # a first builder, at work
        proc = subprocess.Popen([sys.executable, "-m", "bench", "data", "tokenize", str(suite),
                                 "--workers", "1"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "BENCH_DATA": str(tmp_path / "data")})
        deadline = time.monotonic() + 120
        while "waiting for" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, "it neither waited nor ended"
            time.sleep(0.1)
        time.sleep(2)  # time enough to start a build, were it not waiting
        assert proc.poll() is None, log.read_text()
        assert not folder.exists()  # it wrote nothing
    assert proc.wait(timeout=300) == 0, log.read_text()  # the lock released: it built
    assert f"waiting for another process to build the token shards {folder}" in log.read_text()
    assert (folder / "manifest.json").is_file()
