"""Trackers, read back with their own libraries: TensorBoard's EventAccumulator, MlflowClient
against a real `mlflow server` on 127.0.0.1, W&B's offline run through wandb's own protobuf
records. A run killed after a checkpoint and resumed leaves every step once in each, with the
values the run records at the end; a tracker that fails is a warning, and the run goes on."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.mlflow_server import mlflow_server
from support.processes import free_ports
from support.store_suite import write_suite
from support.wandb_log import history, summary
from test_checkpoints import LOG, STEPS, Interrupted, timeless, train
from test_cluster import bench, finish, wait_for

from bench.config.suite import load_suite
from bench.errors import UserError
from bench.execution.live import LiveRun
from bench.store.folder import read_curve, read_live_curve, read_metrics, read_progress
from bench.tracking.tracker import TrackedRun, Trackers

TRACKERS = "tensorboard,mlflow,wandb"


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in `folder`, as TensorBoard's reader loads them
    (a resumed writer's purge applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def tracked(folder: Path) -> TrackedRun:
    return TrackedRun("0123456789ab", "toy-suite", "toy", 0, "12 steps", {"lr": 0.01},
                      folder, None, resumed_at=0)


def test_tensorboard_sees_each_step_once_across_a_kill_and_resume(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The toy stage (checkpoints every 4 of 12 steps) killed at step 10, resumed from step 8:
    the events the killed writer left past step 8 are purged, steps 9 and 10 written again;
    and an MLflow server that does not answer is a warning, not a failure."""
    (closed,) = free_ports(1)

    def live_run() -> LiveRun:
        return LiveRun(tmp_path, ["toy"], [], Trackers(("tensorboard", "mlflow"), LOG),
                       tracked(tmp_path))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed}")
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        killed = live_run()
        with pytest.raises(Interrupted):
            train(tmp_path / "checkpoints", stop_at=10, listener=killed)
        assert "mlflow" not in killed.trackers.live  # left out after its warning  # type: ignore[union-attr]
        killed.trackers.live["tensorboard"].writer.flush()  # type: ignore[union-attr]
        assert [s for s, _ in scalars(tmp_path / "tensorboard")["curve/loss"]] == list(range(1, 11))
        resumed = live_run()
        result, _ = train(tmp_path / "checkpoints", listener=resumed)
        resumed.finish({"val.mse": 0.5}, [])
        resumed.close("finished")
    series = scalars(tmp_path / "tensorboard")
    assert [s for s, _ in series["curve/loss"]] == list(range(1, STEPS + 1))
    assert [v for _, v in series["curve/loss"]] == pytest.approx(
        [r["loss"] for r in result.curve], rel=1e-6)  # TensorBoard keeps float32
    assert {f"curve/{c}" for c in ("loss", "lr", "tokens", "flops", "wall", "val_mean")} <= set(
        series)
    assert [s for s, _ in series["curve/val_mean"]] == [3, 6, 9, 12]
    assert series["final/val.mse"] == [(STEPS, 0.5)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (config,) = events.Tensors("config/text_summary")
    assert '"lr": 0.01' in config.tensor_proto.string_val[0].decode()  # the config as text
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warned if w.startswith("tracker mlflow failed")]) == 2  # once a run
    assert timeless(read_live_curve(tmp_path)) == timeless(result.curve)


def test_a_suite_names_trackers_and_validate_names_a_missing_package(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path)
    assert load_suite(suite, overrides=["tracking=[tensorboard, mlflow]"]).head.tracking == [
        "tensorboard", "mlflow"]
    with pytest.raises(UserError, match=r"unknown tracker 'mlflo'.*did you mean 'mlflow'"):
        load_suite(suite, overrides=["tracking=[mlflo]"])
    # wandb hidden from the interpreter, as on a machine where it is not installed
    hide = textwrap.dedent("""
        import sys
        from importlib.abc import MetaPathFinder
        class Hide(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "wandb" or name.startswith("wandb."):
                    raise ModuleNotFoundError(name)
                return None
        sys.meta_path.insert(0, Hide())
        from bench.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    done = subprocess.run([sys.executable, "-c", hide, "validate", str(suite), "-o",
                           "tracking=[tensorboard, wandb]"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "tracker 'wandb' needs the package 'wandb', which is not installed here (pip " \
           "install wandb)" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-c", hide, "run", str(suite), "--track",
                           "wandb", "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "nothing was run or submitted" in done.stderr
    assert not (tmp_path / "results" / "store-e2e").exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.mark.slow
def test_a_killed_and_resumed_run_is_one_run_in_each_tracker(tmp_path: Path, server: str) -> None:
    """A 400-step run checkpointing every 50 steps, tracked by all three, SIGKILLed past step
    100 and run again: TensorBoard, the MLflow server and W&B's offline run hold every step
    once, with the values of curve.csv, the final metrics, the config and the tags."""
    from mlflow import MlflowClient

    write_suite(tmp_path, "{steps: 400}")
    argv = ("run", "suite.yaml", "--only", "cwt", "--results", "results", "--no-progress",
            "-o", "train.checkpoint_every=50", "--track", TRACKERS)
    env_keys = {"MLFLOW_TRACKING_URI": server, "WANDB_MODE": "", "WANDB_API_KEY": ""}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_keys.items():
            mp.setenv(key, value) if value else mp.delenv(key, raising=False)
        first = bench(tmp_path, *argv)
        results = tmp_path / "results"

        def past_a_checkpoint() -> bool:
            found = list(results.glob("store-e2e/*/progress.json"))
            progress = read_progress(found[0].parent) if found else None
            return progress is not None and progress["step"] > 110
        wait_for(past_a_checkpoint, "the run past its checkpoint of step 100", timeout=300)
        first.send_signal(signal.SIGKILL)
        first.wait()
        (folder,) = results.glob("store-e2e/*")
        assert read_live_curve(folder)[-1]["step"] > 100
        code, out, err = finish(bench(tmp_path, *argv), timeout=600)
    assert code == 0, out + err
    assert "stage pretrain: resuming at step 100" in (folder / "run.log").read_text()
    assert "warning" not in err.lower(), err
    curve, metrics = read_curve(folder / "curve.csv"), read_metrics(folder)
    steps = list(range(1, 401))
    loss = [r["loss"] for r in curve]

    series = scalars(folder / "tensorboard")
    assert [s for s, _ in series["curve/loss"]] == steps
    assert [v for _, v in series["curve/loss"]] == pytest.approx(loss, rel=1e-6)
    assert [s for s, _ in series["curve/val_loss"]] == list(range(5, 401, 5))
    assert series["final/lambada.acc"] == [(400, pytest.approx(metrics["lambada.acc"]))]

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("store-e2e")
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = folder.name
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[f"bench.{k}"] for k in ("run_id", "suite", "variant", "seed",
                                                     "budget")} == {
        "run_id": run_id, "suite": "store-e2e", "variant": "cwt", "seed": "0",
        "budget": "400 steps"}
    config = json.loads((folder / "config.json").read_text())
    assert run.data.params["config.objective"] == config["config"]["objective"] == "cwt"
    history_ = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history_) == steps, "each step once"
    assert [m.value for m in sorted(history_, key=lambda m: m.step)] == loss
    assert run.data.metrics["lambada.acc"] == metrics["lambada.acc"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "config.json", "provenance.json", "metrics.json", "curve.csv", "points.json", "run.log"}

    offline = sorted((folder / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 2, "one offline run a process, of one W&B run id"
    rows = history(offline[-1] / f"run-{run_id}.wandb")  # the resumed one: the whole curve
    assert [r["_step"] for r in rows] == steps
    assert [r["loss"] for r in rows] == loss
    final = summary(offline[-1] / f"run-{run_id}.wandb")
    assert final["lambada.acc"] == metrics["lambada.acc"]


def test_a_run_starting_from_a_branch_checkpoint_sends_its_shared_steps(tmp_path: Path) -> None:
    """A lower rung of a wsd ladder starts from a longer rung's checkpoint, whose curve holds
    the shared steps: at the run's first start its trackers get them all; where the same run
    resumes later, only what follows its checkpoint."""
    from bench.contract import StageResult

    shared = [{"stage": "toy", "step": k, "tokens": 6 * k, "flops": 1.0 * k, "lr": 0.01,
               "loss": 1.0 / k, "wall": 0.1 * k} for k in range(1, 9)]
    for first_start in (True, False):
        live = LiveRun(tmp_path, ["toy"], [], Trackers(("tensorboard",), LOG),
                       tracked(tmp_path))
        live.started(StageResult("toy", steps=8, curve=list(shared)))
        assert live.trackers is not None
        assert live.trackers.held["tensorboard"] == (0 if first_start else 8)
        live.close("interrupted")
    assert [s for s, _ in scalars(tmp_path / "tensorboard")["curve/loss"]] == list(range(1, 9))
