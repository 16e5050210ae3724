"""Run ids that travel: where the inputs lie is no part of a run's identity (their contents
are), so data and results moved to other paths keep every run; and runs that the version before
recorded under ids hashing their paths are still found, under those ids, wherever the data lies
now."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.suite_run_ids import SUITE_ENV, SUITES, suite_run_ids
from test_end_to_end import kill_when

from bench.cli import main
from bench.config.plan import identity, legacy_run_id, plan
from bench.config.suite import load_suite
from bench.schema import INPUT_PLACEHOLDER

FIXTURE = Path(__file__).with_name("legacy_store")
LEGACY_IDS = Path(__file__).with_name("suite_legacy_run_ids.json")
# The runs of legacy_store/suite.yaml as bench recorded them before ids left paths out.
LEGACY = {"softmax": "64ae80e200ac", "cwt": "e0e369f848bf"}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))


def _copy_data(to: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture's data copied to `to`, which the fixture's suite then reads."""
    shutil.copytree(FIXTURE / "data", to)
    monkeypatch.setenv("LEGACY_DATA", str(to))
    return to


def _run_ids(out: str) -> dict[str, str]:
    """variant -> run id, from `bench status` lines."""
    return {line.split()[1]: line.split()[0] for line in out.splitlines()
            if line.split()[1:2] in (["softmax"], ["cwt"])}


def test_shipped_suites_keep_their_ids_when_the_data_lies_elsewhere(monkeypatch):
    for name, value in SUITE_ENV.items():
        monkeypatch.setenv(name, value)
    here = suite_run_ids()  # as recorded: tests/test_family_contract.py
    for name, value in SUITE_ENV.items():
        monkeypatch.setenv(name, f"/mnt/elsewhere{value}")
    assert suite_run_ids() == here


def test_the_legacy_rule_gives_the_ids_the_version_before_recorded(monkeypatch):
    """`legacy_run_id` is the rule that named every run folder before: for every shipped suite
    it gives the ids recorded then (tests/suite_legacy_run_ids.json, written by that version)."""
    for name, value in SUITE_ENV.items():
        monkeypatch.setenv(name, value)
    recorded = json.loads(LEGACY_IDS.read_text())
    for file in recorded:  # the suites that version shipped
        suite = load_suite(SUITES / file)
        assert {name: [legacy_run_id(v.resolved, seed) for seed in suite.head.seeds]
                for name, v in suite.variants.items()} == recorded[file], file


def test_identity_holds_a_placeholder_for_each_input_path_and_every_other_value(monkeypatch):
    monkeypatch.setenv("LEGACY_DATA", "/somewhere/data")
    variant = load_suite(FIXTURE / "suite.yaml").variants["cwt"]
    portable = identity(variant.resolved)
    assert portable["config"]["data"]["train"] == INPUT_PLACEHOLDER
    assert portable["evals"][0]["lambada"]["path"] == INPUT_PLACEHOLDER
    assert "/somewhere" not in json.dumps(portable)
    put_back = json.loads(json.dumps(portable))
    put_back["config"]["data"]["train"] = "/somewhere/data/train.jsonl"
    put_back["evals"][0]["lambada"]["path"] = "/somewhere/data/cloze.jsonl"
    assert put_back == variant.resolved  # nothing else is touched
    assert variant.resolved["config"]["data"]["tokenizer"]["path"] is None
    assert portable["config"]["data"]["tokenizer"]["path"] is None  # unset stays unset


def test_the_same_contents_elsewhere_are_the_same_runs_other_contents_are_not(
        tmp_path, monkeypatch):
    _copy_data(tmp_path / "a", monkeypatch)
    first = {r.variant.name: r.run_id for r in plan(load_suite(FIXTURE / "suite.yaml"))}
    _copy_data(tmp_path / "b", monkeypatch)
    assert {r.variant.name: r.run_id for r in plan(load_suite(FIXTURE / "suite.yaml"))} == first
    with (tmp_path / "b" / "cloze.jsonl").open("a") as f:
        f.write('{"text": "one more passage to score"}\n')
    moved = {r.variant.name: r.run_id for r in plan(load_suite(FIXTURE / "suite.yaml"))}
    assert all(moved[name] != first[name] for name in first)


@pytest.mark.slow
def test_results_and_data_moved_to_other_paths_keep_every_run(tmp_path, monkeypatch, capsys):
    suite = str(FIXTURE / "suite.yaml")
    data = _copy_data(tmp_path / "mount-a" / "data", monkeypatch)
    results = tmp_path / "mount-a" / "results"
    assert main(["run", suite, "--results", str(results), "--no-progress"]) == 0
    capsys.readouterr()
    trained = {p.name: (p / "metrics.json").read_bytes()
               for p in (results / "legacy-lm").iterdir()}

    moved = tmp_path / "mount-b"
    shutil.move(tmp_path / "mount-a", moved)
    monkeypatch.setenv("LEGACY_DATA", str(moved / "data"))
    args = ["--results", str(moved / "results")]
    assert main(["status", suite, *args]) == 0
    out = capsys.readouterr().out
    assert "legacy-lm: 2 finished" in out, out
    assert set(_run_ids(out).values()) == set(trained)
    assert main(["run", suite, *args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 2 and "running on" not in out, out
    assert {p.name: (p / "metrics.json").read_bytes()
            for p in (moved / "results" / "legacy-lm").iterdir()} == trained
    # the folder records where its inputs were read
    config = json.loads(next((moved / "results" / "legacy-lm").glob("*/config.json"))
                        .read_text())
    assert config["config"]["data"]["train"] == str(data / "train.jsonl")


@pytest.mark.slow
def test_a_store_written_before_portable_ids_is_found_under_its_ids(tmp_path, monkeypatch,
                                                                    capsys):
    """The fixture's runs were recorded by the version before, with the data at another path
    than here: they are found by their records, kept under their ids, and not trained again."""
    suite = str(FIXTURE / "suite.yaml")
    _copy_data(tmp_path / "data", monkeypatch)
    results = tmp_path / "results"
    shutil.copytree(FIXTURE / "results", results)
    planned = {r.variant.name: r.run_id for r in plan(load_suite(suite))}
    assert set(planned.values()).isdisjoint(LEGACY.values())  # the ids changed ...
    assert main(["status", suite, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert _run_ids(out) == LEGACY and "legacy-lm: 2 finished" in out, out  # ... not the runs
    assert main(["run", suite, "--results", str(results), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 runs found under the ids an earlier version of bench gave them" in out
    assert out.count("finished earlier, skipped") == 2 and "running on" not in out, out
    assert sorted(p.name for p in (results / "legacy-lm").iterdir()) == sorted(LEGACY.values())
    assert main(["ls", "--results", str(results)]) == 0
    assert capsys.readouterr().out.count("finished") == 2


@pytest.mark.slow
def test_a_run_the_version_before_left_unfinished_resumes_under_its_id(tmp_path, monkeypatch,
                                                                      capsys):
    """A run killed mid-training by the version before (its ids: the run id rule swapped for
    the legacy one, nothing else) resumes from its checkpoint after the data moved."""
    suite = str(FIXTURE / "suite.yaml")
    longer = ["-o", "budget.steps=400", "-o", "train.checkpoint_every=10", "--only", "softmax"]
    data = _copy_data(tmp_path / "old" / "data", monkeypatch)
    results = tmp_path / "results"
    before = ("import sys, bench.config.plan as p; p.run_id = p.legacy_run_id; "
              "from bench.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", before, "run", suite, "--results",
                             str(results), "--no-progress", *longer], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kill_when(proc, results, "legacy-lm/*/checkpoints/pretrain.pt")
    [folder] = (results / "legacy-lm").iterdir()
    assert folder.name == legacy_run_id(*_resolved_seed_inputs(suite, longer))

    shutil.move(data, tmp_path / "new-data")
    monkeypatch.setenv("LEGACY_DATA", str(tmp_path / "new-data"))
    assert main(["run", suite, "--results", str(results), "--no-progress", *longer]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 runs found under the ids an earlier version" in out, out
    assert [p.name for p in (results / "legacy-lm").iterdir()] == [folder.name]
    assert "resuming" in (folder / "run.log").read_text()
    assert json.loads((folder / "state.json").read_text())["state"] == "finished"


def _resolved_seed_inputs(suite: str, options: list[str]) -> tuple:
    overrides = [options[i + 1] for i, o in enumerate(options) if o == "-o"]
    [run] = [r for r in plan(load_suite(suite, overrides=overrides)) if r.variant.name == "softmax"]
    return run.variant.resolved, run.seed, run.inputs


def test_status_where_the_data_is_not_mounted_shows_the_runs_of_the_same_config(
        tmp_path, monkeypatch, capsys):
    """A laptop that sees the results but not the data: without the inputs there is no id to
    compute, so status shows the run recorded with each config and seed, saying so; run
    refuses (it could not tell them from runs on other data)."""
    suite = str(FIXTURE / "suite.yaml")
    monkeypatch.setenv("LEGACY_DATA", str(tmp_path / "not-mounted"))
    results = tmp_path / "results"
    shutil.copytree(FIXTURE / "results", results)
    assert main(["status", suite, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert _run_ids(out) == LEGACY and "legacy-lm: 2 finished" in out, out
    assert f"2 runs read inputs not found here (data.train ({tmp_path}/not-mounted/train.jsonl)" \
        in out and "inputs unchecked" in out
    other = tmp_path / "other.yaml"  # another config: nothing recorded, pending
    other.write_text((FIXTURE / "suite.yaml").read_text().replace("lr: 1.0e-2", "lr: 2.0e-2"))
    assert main(["status", str(other), "--results", str(results)]) == 0
    assert "legacy-lm: 2 pending" in capsys.readouterr().out
    assert main(["run", suite, "--results", str(results), "--no-progress"]) == 2
