"""A results folder shared by a team, with symbolic links planted in a run's folder: nothing a
run writes leaves the folder. A file the run writes replaces a link at its path; a folder it
enters, and a file it reads back to decide how to go on, is refused when it is a link, and the
run fails naming it. Whatever a link points to is left as it was."""

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.store_suite import write_suite
from support.textgen import narrative_passages, write_jsonl, write_word_sst2

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.evals.fddb import write_fddb_detections
from bench.evals.lambada import LambadaEvalConfig, write_task_dir
from bench.evals.wider import write_wider_predictions
from bench.training.checkpoints import branch_checkpoint
from bench.util.atomic import save_torch

SUITE = "hostile"
OLD = 1_000_000_000  # what is outside was last modified in 2001, so any touch shows
WSD = "{lr: 0.05, schedule: wsd, warmup: 3, decay: 0.25}"


def toy_suite(folder: Path, budget: str = "{steps: 12}", glue: bool = True) -> Path:
    """The toy family (a linear model, scored by GLUE's evaluator on an SST-2-like task), or a
    wsd ladder of it without evaluation."""
    evals = "[]"
    if glue:
        write_word_sst2(folder / "glue")
        evals = f"\n  - glue: {{path: {folder / 'glue'}, tasks: [sst2], finetune: {{epochs: 2}}}}"
    optim = f"optim: {WSD}\n" if budget.startswith("{steps: [") else ""
    path = folder / "suite.yaml"
    path.write_text(f"suite: {SUITE}\nfamily: toy\nseeds: [0]\nbudget: {budget}\n{optim}"
                    f"evals: {evals}\nvariants:\n  base: {{}}\n")
    return path


def ladder_suite(folder: Path, steps: str = "[12, 24]") -> Path:
    return toy_suite(folder, f"{{steps: {steps}}}", glue=False)


def bench_run(suite: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", str(suite), "--results", str(results), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out + err


def snapshot(folder: Path) -> dict[str, tuple[str, bytes | None, int]]:
    """Everything under `folder` and the folder itself: kind, bytes, modification time."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        found[str(path.relative_to(folder))] = (
            kind, path.read_bytes() if kind == "file" else None, st.st_mtime_ns)
    return found


def state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory, toy: None) -> Path:
    """The folder of a finished toy run in another results folder: a real final checkpoint and
    a real GLUE outcome that a link could lead a run to."""
    folder = tmp_path_factory.mktemp("foreign")
    suite = toy_suite(folder)
    assert main(["run", str(suite), "--results", str(folder / "results"),
                 "--no-progress"]) == 0
    [run] = plan(load_suite(suite))
    return folder / "results" / SUITE / run.run_id


@pytest.fixture
def outside(tmp_path: Path, foreign: Path) -> Path:
    """A folder outside the results folder, all of it last modified long ago: a file, an empty
    folder, a run's final checkpoint and a GLUE outcome; `missing` is not there."""
    folder = tmp_path / "outside"
    (folder / "target_dir").mkdir(parents=True)
    (folder / "target").write_bytes(b"not the run's\n")
    shutil.copy(foreign / "checkpoints" / "train.final.pt", folder / "train.final.pt")
    shutil.copy(foreign / "glue" / "sst2" / "result.json", folder / "result.json")
    for path in [*folder.iterdir(), folder]:
        os.utime(path, ns=(OLD * 10**9, OLD * 10**9))
    return folder


TARGETS = {"file": "target", "dir": "target_dir", "dangling": "missing",
           "checkpoint": "train.final.pt", "outcome": "result.json"}


def _lambada_task_dir(run: Path) -> None:
    cloze = write_jsonl(run.parent / "cloze.jsonl", narrative_passages(4, seed=2))
    write_task_dir(LambadaEvalConfig(path=str(cloze), name="cloze"),
                   run / "lambada" / "lambada_task")


def _wider_predictions(run: Path) -> None:
    write_wider_predictions(run / "wider" / "predictions_single",
                            {("0--Parade", "img_1"): np.array([[1.0, 2.0, 3.0, 4.0, 0.9]])})


def _fddb_detections(run: Path) -> None:
    write_fddb_detections(run / "fddb" / "fddb_detections_single.txt",
                          {"2002/08/11/big/img_591": [[1.0, 2.0, 3.0, 4.0, 0.9]]})


def _faces_model(run: Path) -> None:
    save_torch({"weight": torch.zeros(2)}, run / "model.pt")


@dataclass(frozen=True)
class Planted:
    """A link at `at` (under the suite's folder of the results; `{run}` is the run's folder)
    to one of `TARGETS`. `act`: "toy" runs the toy suite, "ladder" a wsd ladder (the link in
    the longest rung's folder), a function calls one writer of a run's folder directly.
    `then`: "replaced" (the run finishes, or the writer returns, and its own file or folder
    took the link's place), "gone" (the run finishes; its own file took the link's place and
    was removed once no longer needed, so what shows is that the link's target was left as it
    was) or "refused" (the run fails, or the writer raises, naming the link)."""

    at: str
    to: str
    then: str
    act: str | Callable[[Path], None] = "toy"


def planted(at: str, to: str, then: str, act: str | Callable[[Path], None] = "toy",
            name: str | None = None) -> Any:
    return pytest.param(Planted(at, to, then, act), id=name or at.removeprefix("{run}/"))


LINK_KINDS = {"file": "-to-a-file", "dangling": "-dangling", "dir": "-to-a-folder"}
WRITTEN_WHOLE = ["state.json", "config.json", "provenance.json", "metrics.json", "points.json",
                 "samples_glue_sst2.jsonl"]

CASES = [
    *(planted(f"{{run}}/{name}", to, "replaced", name=name + kind)
      for name in ("run.log", "heartbeat") for to, kind in LINK_KINDS.items()),
    *(planted(f"{{run}}/{name}", "file", "replaced") for name in WRITTEN_WHOLE),
    *(planted(f"{{run}}/{name}", "dangling", "replaced", name=f"{name}-dangling")
      for name in ("state.json", "curve.csv")),
    planted("{run}/claim.json", "file", "gone"),  # dropped once the run finished
    planted("{run}/checkpoints", "dir", "refused", name="checkpoints-to-a-folder"),
    planted("{run}/checkpoints", "dangling", "refused", name="checkpoints-dangling"),
    planted("{run}/checkpoints/train.pt", "file", "refused", name="checkpoint-read-on-resume"),
    planted("{run}/checkpoints/train.final.pt", "checkpoint", "refused",
            name="final-checkpoint-of-another-run"),
    planted("{run}/checkpoints/train.final.pt", "dangling", "replaced",
            name="final-checkpoint-dangling"),
    planted("{run}/glue", "dir", "refused", name="evaluator-folder"),
    planted("{run}/glue/sst2", "dir", "refused", name="evaluator-task-folder"),
    planted("{run}/glue/sst2/result.json", "outcome", "refused",
            name="evaluator-outcome-read-on-resume"),
    planted("{run}/glue/sst2/dev_epoch1.jsonl", "file", "replaced",
            name="evaluator-predictions-file"),
    planted("{run}", "dir", "refused", name="the-run-folder-itself"),
    planted(".", "dir", "refused", name="the-suite-folder"),
    planted("{run}/checkpoints/branches", "dir", "refused", "ladder", "branch-folder"),
    # Saved over the link by the longest rung (the lower rung refuses a link there), removed
    # once the lower rung finished.
    planted("{run}/checkpoints/branches/train.steps-12.0.pt", "file", "gone", "ladder",
            "branch-file"),
    planted("{run}", "dir", "refused", "ladder", "a-lower-rungs-source-folder"),
    planted("{run}/lambada/lambada_task", "dir", "refused", _lambada_task_dir,
            "lambada-task-folder"),
    planted("{run}/lambada/lambada_task/cloze.yaml", "file", "replaced", _lambada_task_dir,
            "lambada-task-file"),
    planted("{run}/wider/predictions_single/0--Parade", "dir", "refused", _wider_predictions,
            "wider-event-folder"),
    planted("{run}/wider/predictions_single", "dir", "refused", _wider_predictions,
            "wider-predictions-folder"),
    planted("{run}/fddb/fddb_detections_single.txt", "file", "replaced", _fddb_detections,
            "fddb-detections-file"),
    planted("{run}/model.pt", "file", "replaced", _faces_model, "faces-model-file"),
]


@pytest.mark.parametrize("case", CASES)
def test_a_link_planted_in_a_run_folder_leads_nothing_outside(
        case: Planted, tmp_path: Path, outside: Path, toy: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    if callable(case.act):
        suite, runs, run_id = None, [], "run"
    else:
        suite = toy_suite(tmp_path) if case.act == "toy" else ladder_suite(tmp_path)
        runs = plan(load_suite(suite))
        run_id = runs[0].run_id  # the only run, or the ladder's longest rung
    folder = results / SUITE / run_id
    link = results / SUITE / case.at.format(run=run_id)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / TARGETS[case.to])
    before = snapshot(outside)
    said = f"{link} is a symbolic link (to {outside / TARGETS[case.to]}): refused"

    if callable(case.act):
        if case.then == "refused":
            with pytest.raises(OSError) as caught:  # LinkRefused
                case.act(folder)
            assert said in str(caught.value)
        else:
            case.act(folder)
    else:
        assert suite is not None
        code, out = bench_run(suite, results, capsys)
        assert "Traceback" not in out
        if case.then == "refused":  # every run with a folder to record it in says why
            assert code == 1 and said in out, out
            for run in runs:  # a ladder's lower rung too, on its way to its branch file
                mine = results / SUITE / run.run_id
                if not mine.is_symlink() and not mine.parent.is_symlink():
                    assert state(mine)["state"] == "failed", run.run_id
                    assert said in state(mine)["reason"], run.run_id
        else:
            assert code == 0, out
            assert all(state(results / SUITE / r.run_id)["state"] == "finished" for r in runs)

    assert snapshot(outside) == before, "something outside the results folder changed"
    if case.then == "replaced":  # by the run's own
        assert os.path.lexists(link) and not link.is_symlink()
    elif case.then == "gone":
        assert not os.path.lexists(link)


def test_a_linked_model_folder_is_replaced_by_the_saved_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An LM run whose `model/` and LAMBADA task file are links: the model is saved in the
    run's folder (the log says where, and its lm_eval command names that folder) and the task
    file is the run's own."""
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    suite, results = write_suite(tmp_path), tmp_path / "results"
    run = next(r for r in plan(load_suite(suite)) if r.variant.name == "softmax")
    folder = results / "store-e2e" / run.run_id
    elsewhere = tmp_path / "outside"
    (elsewhere / "model").mkdir(parents=True)
    (elsewhere / "task.yaml").write_text("task: not the run's\n")
    (folder / "lambada" / "lambada_task").mkdir(parents=True)
    (folder / "model").symlink_to(elsewhere / "model")
    (folder / "lambada" / "lambada_task" / "cloze_proxy.yaml").symlink_to(elsewhere / "task.yaml")
    before = snapshot(elsewhere)

    code = main(["run", str(suite), "--results", str(results), "--no-progress", "--only",
                 "softmax"])
    assert code == 0, capsys.readouterr()
    assert snapshot(elsewhere) == before
    model = folder / "model"
    assert not model.is_symlink() and (model / "config.json").is_file()
    task = folder / "lambada" / "lambada_task" / "cloze_proxy.yaml"
    assert not task.is_symlink() and "cloze_proxy" in task.read_text()
    log = (folder / "run.log").read_text()
    assert f"saved model to {model}" in log
    assert f"pretrained={model.resolve()}" in log and str(elsewhere) not in log


# --- branch checkpoints of a wsd ladder: removed once their rung has finished -----------------

def _branch_files(results: Path, longest: str) -> list[str]:
    return sorted(p.name for p in (results / SUITE / longest / "checkpoints" / "branches").glob(
        "*.pt"))


@pytest.fixture
def ladder(tmp_path: Path, toy: None) -> Iterator[tuple[Path, list[Any]]]:
    suite = ladder_suite(tmp_path, "[12, 24, 48]")
    yield suite, plan(load_suite(suite))


def test_a_finished_lower_rung_removes_its_branch_file_and_reruns_alike(
        ladder: tuple[Path, list[Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Rungs run longest first: the middle rung removes its own file only, so the smallest
    still branches; once both finished no branch file is left. A rung run again (its folder
    deleted) trains from the start to the same weights."""
    suite, (longest, *lower) = ladder
    results = tmp_path / "results"
    assert bench_run(suite, results, capsys)[0] == 0
    for run in lower:
        folder = results / SUITE / run.run_id
        assert json.loads((folder / "provenance.json").read_text())["branched_from"][
            "run"] == longest.run_id
        path = branch_checkpoint(run, ["train"], results / SUITE / longest.run_id)
        assert f"removed the branch checkpoint {path}" in (folder / "run.log").read_text()
    assert _branch_files(results, longest.run_id) == []

    smallest = results / SUITE / lower[-1].run_id
    weights = torch.load(smallest / "checkpoints" / "train.final.pt", weights_only=True)["model"]
    metrics = json.loads((smallest / "metrics.json").read_text())
    shutil.rmtree(smallest)
    assert bench_run(suite, results, capsys)[0] == 0
    assert "no branch checkpoint" in (smallest / "run.log").read_text()
    again = torch.load(smallest / "checkpoints" / "train.final.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    rerun = json.loads((smallest / "metrics.json").read_text())
    assert all(rerun[k] == metrics[k] for k in ("train.steps", "train.flops", "val.mse"))


def test_a_lower_rung_that_did_not_finish_keeps_its_branch_file(
        ladder: tuple[Path, list[Any]], tmp_path: Path, outside: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The smallest rung fails (its checkpoints folder is a planted link): its branch file
    stays for its next attempt, which branches from it and then removes it."""
    suite, (longest, *lower) = ladder
    results = tmp_path / "results"
    smallest = results / SUITE / lower[-1].run_id
    smallest.mkdir(parents=True)
    (smallest / "checkpoints").symlink_to(outside / "target_dir")
    before = snapshot(outside)
    assert bench_run(suite, results, capsys)[0] == 1
    assert snapshot(outside) == before
    assert state(smallest)["state"] == "failed"
    kept = branch_checkpoint(lower[-1], ["train"], results / SUITE / longest.run_id)
    assert _branch_files(results, longest.run_id) == [kept.name]

    (smallest / "checkpoints").unlink()
    assert bench_run(suite, results, capsys)[0] == 0
    prov = json.loads((smallest / "provenance.json").read_text())
    assert prov["branched_from"]["run"] == longest.run_id
    assert _branch_files(results, longest.run_id) == []


def test_a_branch_file_planted_as_a_link_is_not_read(
        ladder: tuple[Path, list[Any]], tmp_path: Path, outside: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A lower rung run again finds a link where its branch file was: it fails naming it, and
    reads nothing through it."""
    suite, (longest, *lower) = ladder
    results = tmp_path / "results"
    assert bench_run(suite, results, capsys)[0] == 0
    smallest = results / SUITE / lower[-1].run_id
    shutil.rmtree(smallest)
    path = branch_checkpoint(lower[-1], ["train"], results / SUITE / longest.run_id)
    path.unlink(missing_ok=True)
    path.symlink_to(outside / "target")
    before = snapshot(outside)
    code, out = bench_run(suite, results, capsys)
    assert code == 1 and snapshot(outside) == before, out
    assert f"{path} is a symbolic link" in state(smallest)["reason"]
