"""A run's identity covers the contents of what it reads: a changed corpus, tokenizer or
evaluation set is never mixed into a resumed or reused run."""

import os
from pathlib import Path

import pytest
from support.textgen import narrative_passages, write_jsonl, write_lm_data
from test_end_to_end import _bench, index_rows, kill_when, suite_file

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.util.fingerprint import changed_inputs, fingerprint, fingerprint_inputs


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_REHASH", raising=False)


def _data(root: Path, n_train: int = 400) -> Path:
    return write_lm_data(root / "data", n_train, n_cloze=20)


def _suite(root: Path, flops: float = 2e8, checkpoint_every: int = 50) -> Path:
    return suite_file(root, "suite.yaml", flops, checkpoint_every)


def _truncate_at_line(path: Path, keep: float = 0.5) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: int(len(lines) * keep)]))


def test_a_cache_folder_that_cannot_be_made_only_makes_hashing_slower(tmp_path):
    import hashlib

    (tmp_path / "a-file").write_text("")  # the cache would be a folder below a file
    f = tmp_path / "corpus.txt"
    f.write_bytes(b"abc\n" * 10)
    found = fingerprint_inputs({"data.train": str(f)}, tmp_path / "a-file" / "cache")
    assert found["data.train"]["sha256"] == hashlib.sha256(b"abc\n" * 10).hexdigest()


def test_file_fingerprint_is_its_content_hash_and_cached_by_stat(tmp_path):
    import hashlib

    f = tmp_path / "corpus.txt"
    f.write_bytes(b"abc\n" * 1000)
    assert fingerprint(f) == hashlib.sha256(b"abc\n" * 1000).hexdigest()
    _truncate_at_line(f)
    assert fingerprint(f) == hashlib.sha256(b"abc\n" * 500).hexdigest()

    # same size, mtime reset on purpose: the cache trusts stat (documented); BENCH_REHASH does not
    st = f.stat()
    f.write_bytes(b"xyz\n" * 500)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(f) == hashlib.sha256(b"abc\n" * 500).hexdigest()
    os.environ["BENCH_REHASH"] = "1"
    try:
        assert fingerprint(f) == hashlib.sha256(b"xyz\n" * 500).hexdigest()
    finally:
        del os.environ["BENCH_REHASH"]
    assert fingerprint(tmp_path / "absent") == "missing"


def test_directory_fingerprint_covers_names_and_contents(tmp_path):
    d = tmp_path / "tok"
    (d / "sub").mkdir(parents=True)
    (d / "a.json").write_text("{}")
    (d / "sub" / "b.txt").write_text("b")
    first = fingerprint(d)
    (d / "sub" / "b.txt").write_text("c")
    second = fingerprint(d)
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    third = fingerprint(d)
    (d / "extra").write_text("")
    assert len({first, second, third, fingerprint(d)}) == 4


def test_changed_inputs_name_the_file(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text("a\n")
    before = fingerprint_inputs({"data.train": str(f)})
    f.write_text("b\n")
    after = fingerprint_inputs({"data.train": str(f)})
    [line] = changed_inputs(before, after)
    assert line.startswith(f"data.train ({f}): content changed")
    assert changed_inputs(before, before) == []


def test_run_ids_follow_input_contents(tmp_path):
    data = _data(tmp_path)
    suite = load_suite(_suite(tmp_path), env={})
    first = {(r.variant.name, r.seed): r for r in plan(suite)}
    assert {(r.variant.name, r.seed): r.run_id for r in plan(suite)} == {
        k: r.run_id for k, r in first.items()}
    run = first[("softmax", 0)]
    assert set(run.inputs) == {"data.train", "data.shards", "evals.lambada.path"}
    assert run.inputs["data.train"]["path"] == str(data / "train.jsonl")

    _truncate_at_line(data / "train.jsonl")
    second = {(r.variant.name, r.seed): r for r in plan(suite)}
    assert all(second[k].run_id != r.run_id for k, r in first.items())
    assert second[("softmax", 0)].inputs["data.shards"] != run.inputs["data.shards"]


def test_run_ids_follow_the_token_shards_made_from_the_same_files(tmp_path, monkeypatch):
    """Shards from other tokenizer code (a tokenizers upgrade) are other data."""
    import bench.text.shards

    _data(tmp_path)
    suite = load_suite(_suite(tmp_path), env={})
    before = {(r.variant.name, r.seed): r.run_id for r in plan(suite)}
    monkeypatch.setattr(bench.text.shards.tokenizers, "__version__", "0.0.1")
    after = {(r.variant.name, r.seed): r.run_id for r in plan(suite)}
    assert all(after[k] != before[k] for k in before)


@pytest.mark.slow
def test_resume_on_a_truncated_corpus_is_refused_then_rerun_on_request(tmp_path):
    data = _data(tmp_path, n_train=600)
    suite = _suite(tmp_path, flops=1.6e9, checkpoint_every=10)
    results = tmp_path / "results"
    env = dict(os.environ, BENCH_DATA=str(tmp_path / "cache"))
    common = ["--results", str(results), "--only", "softmax", "--seeds", "0", "--no-progress"]
    kill_when(_bench("run", str(suite), *common, env=env), results,
              "e2e-lm/*/checkpoints/pretrain.pt")
    [(old_id, state)] = index_rows(results, "SELECT run_id, state FROM runs")
    assert state == "running"

    _truncate_at_line(data / "train.jsonl")
    proc = _bench("run", str(suite), *common, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert f"data.train ({data / 'train.jsonl'}): content changed" in err
    assert old_id in err and "--rerun-changed-inputs" in err and "Traceback" not in err
    assert index_rows(results, "SELECT run_id, state FROM runs") == [(old_id, "running")]
    assert "resuming" not in (results / "e2e-lm" / old_id / "run.log").read_text()

    proc = _bench("run", str(suite), *common, "--rerun-changed-inputs", env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = dict(index_rows(results, "SELECT run_id, state FROM runs"))
    new_id = next(r for r in rows if r != old_id)
    assert rows == {old_id: "running", new_id: "finished"}
    assert "resuming" not in (results / "e2e-lm" / new_id / "run.log").read_text()


@pytest.mark.slow
def test_a_finished_run_is_not_reused_after_its_eval_set_changed(tmp_path, capsys):
    data = _data(tmp_path)
    suite, results = _suite(tmp_path), tmp_path / "results"
    args = ["run", str(suite), "--results", str(results), "--only", "softmax", "--seeds", "0",
            "--no-progress"]
    assert main(args) == 0
    write_jsonl(data / "cloze.jsonl", narrative_passages(20, seed=3))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"evals.lambada.path ({data / 'cloze.jsonl'}): content changed" in err
    assert main([*args, "--rerun-changed-inputs"]) == 0
    assert "inputs changed" in capsys.readouterr().out
    states = sorted(s for (s,) in index_rows(results, "SELECT state FROM runs"))
    assert states == ["finished", "finished"]


def test_seeds_from_the_command_line_are_range_checked(tmp_path, capsys):
    _data(tmp_path)
    assert main(["plan", str(_suite(tmp_path)), "--seeds", "-1"]) == 2
    assert "--seeds -1: expected a seed from 0 to 2^32 - 1" in capsys.readouterr().err
