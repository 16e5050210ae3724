"""Hostile and malformed suite files: each ends in exit code 2 with a message naming the file,
within bounded memory and time, with nothing written."""

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_suite import BASE

from bench.cli import main
from bench.config.yaml_source import MAX_BYTES

ROOT = Path(__file__).resolve().parent.parent

# A billion laughs in 1.5 KB: nine levels of nine aliases to the level below.
LAUGHS = "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


def _sub(*pairs: str) -> Callable[[Path], bytes]:
    """A case: BASE with pieces replaced (old, new, old, new, ...)."""
    text = BASE
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert old in text, old
        text = text.replace(old, new, 1)
    return lambda _: text.encode()


def _text(text: str | bytes) -> Callable[[Path], bytes]:
    return lambda _: text if isinstance(text, bytes) else text.encode()


def _extends(target: Callable[[Path], str]) -> Callable[[Path], bytes]:
    """A suite extending what `target(tmp_path)` names (made there as needed)."""
    return lambda tmp: f"extends: {target(tmp)}\n{BASE}".encode()


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.yaml")
    return "pipe.yaml"


def _big_base(tmp: Path) -> str:
    (tmp / "big.yaml").write_text("#" * (MAX_BYTES + 10))
    return "big.yaml"


def _cycle(tmp: Path) -> str:
    (tmp / "b.yaml").write_text("extends: suite.yaml\n")
    return "b.yaml"


# (id, content of suite.yaml given the tmp folder, pieces the message must hold)
HOSTILE: list[tuple[str, Callable[[Path], bytes], list[str]]] = [
    ("billion laughs", _text("suite: x\n" + LAUGHS), ["suite.yaml:", "expands to more than"]),
    ("alias to a big list, many times", _text(
        "a: &a [" + ", ".join(["x"] * 5000) + "]\nb: [" + ", ".join(["*a"] * 30) + "]\n"),
     ["suite.yaml:2", "expands to more than"]),
    ("recursive alias", _text("suite: &a [1, *a]\n"), ["suite.yaml:1", "recursive alias"]),
    ("recursive alias in a mapping", _text("m: &m {k: *m}\n"), ["suite.yaml:1", "recursive"]),
    ("undefined alias", _text("suite: *nowhere\n"), ["suite.yaml:1", "not valid YAML"]),
    ("merge key", _text("base: &b {lr: 1}\ntrain:\n  <<: *b\n  batch_size: 4\n"),
     ["suite.yaml:3", "train", "merge keys ('<<') are not supported"]),
    ("python tag", _text("suite: !!python/name:os.system\n"),
     ["suite.yaml:1", "suite", "tag !!python/name:os.system is not allowed"]),
    ("python object tag on a mapping", _text("suite: !!python/object:os.Foo {a: 1}\n"),
     ["suite.yaml:1", "is not allowed"]),
    ("unknown local tag", _text("suite: x\nseeds: !seeds [0]\n"),
     ["suite.yaml:2", "seeds", "tag !seeds is not allowed"]),
    ("binary tag", _text("suite: !!binary aGVsbG8=\n"), ["suite.yaml:1", "tag !!binary"]),
    ("set tag", _text("suite: x\nseeds: !!set {0, 1}\n"), ["suite.yaml:2", "tag !!set"]),
    ("tagged key", _text("!!python/name:os.system : 1\n"), ["suite.yaml:1", "not allowed"]),
    ("mapping as a key", _text("? {a: 1}\n: 2\n"), ["suite.yaml:1", "keys must be text"]),
    ("deeply nested lists", _text("suite: " + "[" * 100_000 + "]" * 100_000 + "\n"),
     ["suite.yaml:1", "nested deeper than"]),
    ("deep nesting through aliases", _text(
        f"a0: &a0 {'[' * 30}x{']' * 30}\na1: &a1 {'[' * 30}*a0{']' * 30}\n"
        f"a2: {'[' * 30}*a1{']' * 30}\n"), ["suite.yaml:3", "nested deeper than"]),
    ("nested variable defaults", _text(
        "suite: " + "${A:-" * 5000 + "x" + "}" * 5000 + "\n"), ["suite.yaml:1", "nested deeper"]),
    ("huge integer", _sub("seeds: [0, 1]", "seeds: [" + "9" * 5000 + "]"),
     ["suite.yaml:3", "seeds[0]", "digits"]),
    ("impossible date", _text("suite: 2024-13-45\n"), ["suite.yaml:1", "suite", "cannot read"]),
    ("file past the size bound", _text("#" * (MAX_BYTES + 1)), ["suite.yaml", "larger than 1 MiB"]),
    ("binary file", _text(bytes(range(256)) * 4), ["suite.yaml:2", "not UTF-8"]),
    ("invalid UTF-8", _text(b"suite: ok\nfamily: \xff\xfe\n"), ["suite.yaml:2", "not UTF-8"]),
    ("NUL character", _text("suite: a\x00b\n"), ["suite.yaml:1", "not valid YAML", "#x0000"]),
    ("two documents", _text("suite: a\n---\nsuite: b\n"), ["suite.yaml:", "not valid YAML"]),
    ("empty file", _text(""), ["suite.yaml: the file is empty"]),
    ("only comments", _text("# nothing\n"), ["suite.yaml: the file is empty"]),
    ("null document", _text("~\n"), ["suite.yaml:1", "mapping of keys", "null"]),
    ("top-level list", _text("- a\n- b\n"), ["suite.yaml:1", "mapping of keys", "a list"]),
    ("top-level text", _text("just words\n"), ["suite.yaml:1", "mapping of keys", "text"]),
    ("extends /dev/zero", _extends(lambda _: "/dev/zero"),
     ["suite.yaml:1", "extends", "/dev/zero is a character device"]),
    ("extends a FIFO", _extends(_fifo), ["suite.yaml:1", "extends", "pipe.yaml is a FIFO"]),
    ("extends a directory", _extends(lambda _: "."), ["suite.yaml:1", "extends", "a directory"]),
    ("extends a file past the size bound", _extends(_big_base), ["big.yaml", "larger than"]),
    ("extends a cycle", _extends(_cycle), ["circular 'extends'", "suite.yaml -> b.yaml"]),
    ("extends a list", _text("extends: [a.yaml]\n" + BASE), ["suite.yaml:1", "extends"]),
    ("extends null", _text("extends: ~\n" + BASE), ["suite.yaml:1", "extends"]),
    ("extends a very long name", _extends(lambda _: "a" * 5000), ["suite.yaml:1", "extends"]),
    ("infinite FLOPs", _sub("{flops: 1.0e+12}", "{flops: .inf}"),
     ["suite.yaml:4", "budget.flops", "finite"]),
    ("NaN FLOPs", _sub("{flops: 1.0e+12}", "{flops: .nan}"), ["suite.yaml:4", "budget.flops"]),
    ("FLOPs past float range", _sub("{flops: 1.0e+12}", "{flops: 1.0e+999}"),
     ["suite.yaml:4", "budget.flops", "finite"]),
    ("negative tokens", _sub("{flops: 1.0e+12}", "{tokens: -5}"),
     ["suite.yaml:4", "budget.tokens", "greater than 0"]),
    ("zero seconds", _sub("{flops: 1.0e+12}", "{seconds: 0}"), ["suite.yaml:4", "budget.seconds"]),
    ("absurd step count", _sub("{flops: 1.0e+12}", "{steps: 1000000000000000000000}"),
     ["suite.yaml:4", "budget.steps", "less than or equal"]),
    ("step count as a boolean", _sub("{flops: 1.0e+12}", "{steps: true}"),
     ["suite.yaml:4", "budget.steps", "integer"]),
    ("NaN split share", _sub("{flops: 1.0e+12}", "{flops: 1.0e+12, split: {pretrain: .nan}}"),
     ["suite.yaml:4", "budget.split.pretrain", "finite"]),
    ("infinite learning rate", _sub("{lr: 1.0e-3}", "{lr: .inf}"),
     ["suite.yaml:12", "train.optim.lr", "finite"]),
    ("learning rate as a boolean", _sub("{lr: 1.0e-3}", "{lr: true}"),
     ["suite.yaml:12", "train.optim.lr", "number"]),
    ("NaN reference", _text(BASE + "reference:\n  softmax: {lambada.acc: .nan}\n"),
     ["suite.yaml:21", "reference.softmax.lambada.acc", "finite"]),
    ("suite name with a newline", _sub("suite: t-suite", 'suite: "x\\n"'),
     ["suite.yaml:1", "suite", "suite name"]),
    ("suite name '..'", _sub("suite: t-suite", 'suite: ".."'), ["suite.yaml:1", "suite name"]),
    ("suite name '.'", _sub("suite: t-suite", 'suite: "."'), ["suite.yaml:1", "suite name"]),
    ("hidden suite name", _sub("suite: t-suite", "suite: .hidden"), ["suite.yaml:1", "suite"]),
    ("overlong suite name", _sub("suite: t-suite", "suite: " + "a" * 300),
     ["suite.yaml:1", "at most 100"]),
    ("suite name as a number", _sub("suite: t-suite", "suite: 12"), ["suite.yaml:1", "suite"]),
    ("variant name with a newline", _sub("  cwt: {", '  "cwt\\n": {'),
     ["suite.yaml:17", "variants", "variant name"]),
    ("variant name with a space", _sub("  cwt: {", '  "c w": {'), ["suite.yaml:17", "variants"]),
    ("variant overrides as a list", _sub("  softmax: {}", "  softmax: [1]"),
     ["suite.yaml:17", "variants.softmax"]),
    ("variant overrides the suite name", _sub("  softmax: {}", "  softmax: {suite: other}"),
     ["suite.yaml:17", "variants.softmax.suite"]),
    ("warm-up in steps with a seconds budget", _sub(
        "{flops: 1.0e+12}", "{seconds: 60}", "{lr: 1.0e-3}", "{lr: 1.0e-3, warmup: 100}"),
     ["suite.yaml:12", "train.optim.warmup", "seconds budget"]),
    ("variant's warm-up in steps with a seconds budget", _sub(
        "{flops: 1.0e+12}", "{seconds: 60}",
        "  softmax: {}", "  softmax: {train: {optim: {lr: 1.0e-3, warmup: 20}}}"),
     ["suite.yaml:17", "variants.softmax.train.optim.warmup", "seconds budget"]),
    ("boolean seed", _sub("seeds: [0, 1]", "seeds: [true]"), ["suite.yaml:3", "seeds[0]"]),
    ("float seed", _sub("seeds: [0, 1]", "seeds: [1.5]"), ["suite.yaml:3", "seeds[0]"]),
    ("negative seed", _sub("seeds: [0, 1]", "seeds: [-1]"), ["suite.yaml:3", "seeds[0]"]),
    ("seed past 32 bits", _sub("seeds: [0, 1]", "seeds: [4294967296]"), ["suite.yaml:3"]),
    ("seeds as a mapping", _sub("seeds: [0, 1]", "seeds: {a: 1}"), ["suite.yaml:3", "seeds"]),
    ("no seeds", _sub("seeds: [0, 1]", "seeds: []"), ["suite.yaml:3", "seeds"]),
    ("boolean batch size", _sub("batch_size: 4", "batch_size: true"),
     ["suite.yaml:11", "train.batch_size", "integer"]),
    ("fractional batch size", _sub("batch_size: 4", "batch_size: 4.0"),
     ["suite.yaml:11", "train.batch_size", "integer"]),
    ("eval name that escapes the results", _sub(
        "{path: /data/cloze.jsonl}", '{path: /data/cloze.jsonl, name: "../../x"}'),
     ["suite.yaml:15", "evals[0].lambada.name", "no path separators"]),
    ("lm-eval task with a slash", _sub("{path: /data/cloze.jsonl}", '{task: "a/b"}'),
     ["suite.yaml:15", "evals[0].lambada.task"]),
    ("evals as a mapping", _sub("evals:\n  - lambada: {path: /data/cloze.jsonl}",
                                "evals: {lambada: {}}"), ["suite.yaml:14", "evals"]),
    ("eval options as a number", _sub("{path: /data/cloze.jsonl}", "5"),
     ["suite.yaml:15", "evals[0].lambada"]),
    ("budget as text", _sub("{flops: 1.0e+12}", "lots"), ["suite.yaml:4", "budget"]),
    ("model as a list", _sub("{preset: micro}", "[micro]"), ["suite.yaml:5", "model"]),
    ("unknown key deep down", _sub("{train_bpe: 300}", "{train_bpe: 300, vocab: 3}"),
     ["suite.yaml:9", "data.tokenizer.vocab", "unknown key"]),
    ("report as a list", _sub("report: {baseline: softmax}", "report: [softmax]"),
     ["suite.yaml:19", "report"]),
    ("integer key", _text(BASE + "1: x\n"), ["suite.yaml:20", "keys must be text"]),
    ("sweep with an infinite range", _text(BASE + "sweep:\n  trials: 2\n"
                                           "  objective: {metric: val.nll, direction: minimize}\n"
                                           "  space:\n    train.optim.lr: {type: float, "
                                           "low: 1.0e-4, high: .inf}\n"),
     ["suite.yaml:24", "sweep.space", "finite"]),
    ("sweep with boolean trials", _text(BASE + "sweep:\n  trials: true\n"
                                        "  objective: {metric: val.nll, direction: minimize}\n"
                                        "  space:\n    objective: {type: categorical, "
                                        "choices: [softmax]}\n"),
     ["suite.yaml:21", "sweep.trials", "integer"]),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_suite_exit_2_and_nothing_written(case, tmp_path, capsys, monkeypatch):
    name, content, expected = case
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("A", raising=False)
    (tmp_path / "suite.yaml").write_bytes(content(tmp_path))
    before = sorted(tmp_path.rglob("*"))
    results = tmp_path / "results"
    for command in (["validate", "suite.yaml"], ["plan", "suite.yaml"],
                    ["run", "suite.yaml", "--results", str(results)]):
        assert main(command) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, err
        for piece in expected:
            assert piece in err, f"{name}: {piece!r} not in {err!r}"
    assert sorted(tmp_path.rglob("*")) == before  # no results folder, nothing else either


def test_a_directory_as_the_suite(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suite.yaml").mkdir()
    assert main(["validate", "suite.yaml"]) == 2
    assert "error: suite.yaml: is a directory, not a regular file" in capsys.readouterr().err


def test_a_fifo_as_the_suite_does_not_block(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "suite.yaml")
    assert main(["validate", "suite.yaml"]) == 2
    assert "suite.yaml: is a FIFO" in capsys.readouterr().err


def test_device_as_the_suite(capsys):
    assert main(["validate", "/dev/zero"]) == 2
    assert "/dev/zero: is a character device" in capsys.readouterr().err


def test_billion_laughs_in_bounded_memory(tmp_path):
    """The whole command, in a process whose address space is capped at 1.5 GiB."""
    suite = tmp_path / "laughs.yaml"
    suite.write_text("suite: x\n" + LAUGHS)

    def cap() -> None:
        limit = 3 * 2**29
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = subprocess.run([sys.executable, "-m", "bench.cli", "validate", str(suite)],
                         capture_output=True, text=True, cwd=ROOT, preexec_fn=cap, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "expands to more than" in out.stderr and "Traceback" not in out.stderr


def test_anchors_within_the_bounds_still_work(tmp_path):
    from bench.config.suite import load_suite

    text = BASE.replace("optim: {lr: 1.0e-3}", "optim: &opt {lr: 1.0e-3}").replace(
        "  cwt: {objective: cwt, head: embedding_transpose}",
        "  cwt: {objective: cwt, head: embedding_transpose, train: {batch_size: 8, "
        "optim: *opt}}")
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    suite = load_suite(path, env={})
    assert suite.variants["cwt"].config.train.optim.lr == 1e-3
    assert suite.variants["cwt"].config.train.batch_size == 8


def test_warmup_in_steps_with_a_steps_budget_is_fine(tmp_path):
    from bench.config.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(BASE.replace("{flops: 1.0e+12}", "{steps: 200}")
                    .replace("{lr: 1.0e-3}", "{lr: 1.0e-3, warmup: 100}"))
    assert load_suite(path, env={}).variants["softmax"].config.train.optim.warmup == 100

