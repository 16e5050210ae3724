"""The face-detection family end to end: a real learning check, each face evaluator scoring an
SSH detector exactly as its own command scores the files it wrote, and a suite run whose
exported predictions score the same through `bench eval`."""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from bench.cli import main
from bench.errors import UserError
from bench.evals.evaluator import EvalResult, EvalSetting
from bench.evals.fddb import FDDBEvalConfig
from bench.evals.pascal import PascalEvalConfig
from bench.evals.registry import get_evaluator
from bench.evals.wider import SETTINGS, WiderEval, WiderEvalConfig, load_wider_bbx_gt
from bench.faces.anchors import module_anchors
from bench.faces.batches import TrainingBatches
from bench.faces.config import FacesConfig, SSHModelConfig
from bench.faces.data import WiderTrainSet
from bench.faces.detector import SSHDetector
from bench.faces.inference import detect_scales, single_scale
from bench.faces.model import build_ssh, to_input
from bench.faces.targets import border_for, ssh_loss
from bench.report.paired import example_arrays
from bench.schema import OptimConfig
from bench.training.budget import StageBudget
from bench.training.distributed import World
from bench.training.train import Stage, train_stage


@pytest.mark.slow
def test_small_ssh_overfits_a_handful_of_images_and_finds_their_faces(faces_root, tmp_path):
    n = 4
    cfg = FacesConfig(
        data={"root": str(faces_root), "max_images": n}, model={"width": 0.25},
        train={"batch_size": 2, "short": 240, "long_max": 400,
               "optim": OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                    schedule="step", milestones=(0.85,), warmup=0.05,
                                    clip=10.0)})
    data = WiderTrainSet(faces_root, "train")
    specs = cfg.model.module_specs()
    torch.manual_seed(0)
    model = build_ssh(cfg.model)
    full = load_wider_bbx_gt(faces_root / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    keys = data.keys[:n]
    gt = dataclasses.replace(
        full, boxes={k: full.boxes[k] for k in keys}, attributes=None,
        counted={s: {k: full.counted[s][k] for k in keys} for s in full.counted})

    def hard_ap() -> float:
        model.eval()
        predictions = {}
        for i, key in enumerate(keys):
            image, _ = data.load_image(i)
            scale = single_scale(*image.shape[:2], 240, 400)
            d = detect_scales(lambda x, m: model(x, m), to_input(image), specs, [scale]).numpy()
            predictions[key] = np.c_[d[:, :2], d[:, 2:4] - d[:, :2] + 1, d[:, 4]]
        model.train()
        return WiderEval(gt, predictions, ("hard",)).summarize()["hard"]

    def loss(batch) -> torch.Tensor:
        outputs = model(batch.images)
        return ssh_loss(outputs, module_anchors(outputs, specs), batch.boxes, batch.sizes,
                        ohem=True, allowed_border=border_for(specs))[0]

    untrained = hard_ap()
    batches = TrainingBatches(data, n, cfg.train, 0, World())
    stage = Stage("train", model, [p for p in model.parameters() if p.requires_grad],
                  cfg.train.optim, lambda k: [batches[k]], loss,
                  lambda batch: batch.images.shape[0])
    result = train_stage(stage, StageBudget("steps", 300), tmp_path, torch.device("cpu"),
                         logging.getLogger("overfit"), progress=False)
    trained = hard_ap()
    assert result.curve[-1]["loss"] < 0.2 * result.curve[0]["loss"]
    assert untrained < 0.05  # measured 0.009
    assert trained > 0.3  # measured 0.59


@pytest.fixture(scope="module")
def detector() -> SSHDetector:
    """An untrained SSH at width 1/8: real boxes and scores, quick on a CPU."""
    cfg = SSHModelConfig(width=0.125)
    torch.manual_seed(0)
    return SSHDetector(build_ssh(cfg).eval(), cfg.module_specs(), torch.device("cpu"), False, 0)


def pascal_faces(faces_root: Path, folder: Path) -> Path:
    """A few demo val images in the Pascal Faces layout (JPEGImages/, annotations.txt)."""
    (folder / "JPEGImages").mkdir(parents=True)
    val = WiderTrainSet(faces_root, "val")
    lines = []
    for i in range(6):
        key = val.keys[i][1]
        shutil.copy(val.path(i), folder / "JPEGImages" / f"{key}.jpg")
        lines += [f"{key}.jpg " + " ".join(f"{v:g}" for v in box) for box in val.boxes[i]]
    (folder / "annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def evaluated(name: str, cfg: BaseModel, detector: SSHDetector, workdir: Path,
              data_root: Path | None = None) -> EvalResult:
    """What evaluator `name` returns for the detector, its files written under `workdir`."""
    setting = EvalSetting(workdir, logging.getLogger(name), data_root=data_root and str(data_root))
    result = get_evaluator(name).evaluate(cfg, detector, setting)
    assert sorted(result.metrics) == sorted(get_evaluator(name).metrics(cfg))  # what it says
    return result


def scored(argv: list[str], out: Path) -> dict[str, float]:
    """The metrics `bench eval ...` writes to its --json file (null: NaN)."""
    assert main([*argv, "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    return {k: np.nan if v is None else v for k, v in metrics.items()}


def test_wider_evaluator_scores_the_prediction_files_it_writes(detector, faces_root, tmp_path):
    cfg = WiderEvalConfig(modes=["single", "pyramid"], short=96, long=160, pyramid_short=64,
                          pyramid_long=96)
    result = evaluated("wider", cfg, detector, tmp_path, data_root=faces_root)
    for mode in cfg.modes:
        files = scored(["eval", "wider", "--gt", str(faces_root / "eval_tools" / "ground_truth"),
                        "--pred", str(tmp_path / f"predictions_{mode}")], tmp_path / "w.json")
        assert {s: result.metrics[f"{mode}.{s}"] for s in SETTINGS} == {
            s: files[f"{s}.ap"] for s in SETTINGS}
        assert result.metrics[f"{mode}.ms_per_image.n"] == 60
        for setting in SETTINGS:  # the per-image rows paired tests read give the same APs
            per = get_evaluator("wider").per_example(f"{mode}.{setting}")
            found = example_arrays(result.samples[mode], per)
            assert found is not None and len(found[0]) == 60
            assert per.aggregate(found[1]) == result.metrics[f"{mode}.{setting}"]
    assert sorted(result.samples) == sorted(cfg.modes)
    assert {k: c.kind for k, c in result.curves.items()} == {
        f"{m}.{s}": "pr" for m in cfg.modes for s in SETTINGS}
    timed = [f"{m}.ms_per_image{x}" for m in cfg.modes for x in ("", ".iqr", ".n")]
    assert sorted(result.metrics) == sorted([f"{m}.{s}" for m in cfg.modes for s in SETTINGS]
                                            + timed)


def test_fddb_evaluator_scores_the_detection_file_it_writes(detector, faces_root, tmp_path):
    cfg = FDDBEvalConfig(root=str(faces_root), folds=[1], short=96, long=160, fp=3000)
    result = evaluated("fddb", cfg, detector, tmp_path)
    files = scored(["eval", "fddb", "--folds", str(faces_root / "FDDB-folds"), "--folds-used",
                    "1", "--fp", "3000", "--dets", str(tmp_path / "fddb_detections_single.txt"),
                    "--images", str(faces_root / "originalPics")], tmp_path / "f.json")
    assert {k: result.metrics[f"single.{k}"] for k in files} == files
    assert set(files) == {"tpr_disc@3000", "tpr_cont@3000"}
    for name in files:  # the per-image rows paired tests read give the same readings
        per = get_evaluator("fddb").per_example(f"single.{name}")
        found = example_arrays(result.samples["single"], per)
        assert found is not None and len(found[0]) == result.metrics["single.ms_per_image.n"]
        assert per.aggregate(found[1]) == pytest.approx(files[name], abs=1e-12)
    assert {k: c.kind for k, c in result.curves.items()} == {"single.discrete": "roc",
                                                            "single.continuous": "roc"}


def test_pascal_evaluator_scores_the_detection_file_it_writes(detector, faces_root, tmp_path):
    pascal = pascal_faces(faces_root, tmp_path / "pascal")
    cfg = PascalEvalConfig(annotations=str(pascal / "annotations.txt"),
                           images=str(pascal / "JPEGImages"), short=96, long=160)
    result = evaluated("pascal", cfg, detector, tmp_path)
    files = scored(["eval", "pascal", "--gt", cfg.annotations, "--dets",
                    str(tmp_path / "pascal_detections_single.txt")], tmp_path / "p.json")
    np.testing.assert_equal({k: result.metrics[f"single.{k}"] for k in files}, files)
    assert set(files) == {"ap", "ap_11pt", "ap_plain", "ap_11pt_plain"}
    assert {k: c.kind for k, c in result.curves.items()} == {"single.calibrated": "pr",
                                                            "single.plain": "pr"}


def test_face_evaluators_find_missing_data_before_training(faces_root, tmp_path):
    get_evaluator("wider").check(WiderEvalConfig(), str(faces_root))
    get_evaluator("fddb").check(FDDBEvalConfig(root=str(faces_root), folds=[1]), None)
    with pytest.raises(UserError, match="give the WIDER FACE root"):
        get_evaluator("wider").check(WiderEvalConfig(), None)
    pascal = pascal_faces(faces_root, tmp_path / "pascal")
    cfg = PascalEvalConfig(annotations=str(pascal / "annotations.txt"),
                           images=str(pascal / "JPEGImages"))
    get_evaluator("pascal").check(cfg, None)
    first = (pascal / "annotations.txt").read_text().split(".jpg")[0]
    (pascal / "JPEGImages" / f"{first}.jpg").unlink()
    with pytest.raises(UserError, match=rf"{first}\.jpg: image missing \(listed in "
                                        rf".*annotations\.txt\); 1 of the \d+ images"):
        get_evaluator("pascal").check(cfg, None)


SUITE = """\
suite: faces-e2e
family: faces
seeds: [0]
budget: {{images: 8}}
model: {{width: 0.125}}
data: {{root: {root}, max_images: 8}}
train: {{batch_size: 2, short: 160, long_max: 240, checkpoint_every: 2}}
evals:
  - wider: {{modes: [single], short: 160, long: 240}}
  - fddb: {{root: {root}, folds: [1], short: 160, long: 240}}
  - pascal: {{annotations: {pascal}/annotations.txt, images: {pascal}/JPEGImages, short: 160,
              long: 240}}
  - speed: {{sizes: [[64, 96]], modes: [single, pyramid], warmup: 0, repeats: 1}}
variants:
  headless: {{}}
  m2_only: {{model: {{modules: m2_only}}}}
report: {{baseline: headless, metrics: [wider.single.easy, wider.single.hard]}}
"""


@pytest.mark.slow
def test_suite_run_exports_predictions_that_score_the_same(faces_root, tmp_path, capsys):
    pascal = pascal_faces(faces_root, tmp_path / "pascal")
    suite = tmp_path / "faces.yaml"
    suite.write_text(SUITE.format(root=faces_root, pascal=pascal))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    for run_dir in (results / "faces-e2e").iterdir():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["train.images"] == 8 and metrics["train.steps"] == 4
        assert metrics["model.total_params"] > 0
        provenance = json.loads((run_dir / "provenance.json").read_text())
        assert provenance["backbone_weights"] == "random"
        assert metrics["speed.single.64x96_ms"] > 0 and metrics["speed.pyramid.64x96_ms"] > 0
        assert 0 <= metrics["fddb.single.tpr_disc@1000"] <= 1
        assert 0 <= metrics["fddb.single.tpr_cont@1000"] <= 1
        assert main(["eval", "fddb", "--folds", str(faces_root / "FDDB-folds"), "--folds-used",
                     "1", "--dets", str(run_dir / "fddb" / "fddb_detections_single.txt"),
                     "--sizes", str(faces_root / "FDDB-image-sizes.txt")]) == 0
        out = capsys.readouterr().out
        assert f"fddb.tpr_disc@1000 = {metrics['fddb.single.tpr_disc@1000']:.6g}" in out
        assert main(["eval", "pascal", "--gt", str(pascal / "annotations.txt"), "--dets",
                     str(run_dir / "pascal" / "pascal_detections_single.txt")]) == 0
        out = capsys.readouterr().out
        assert f"{metrics['pascal.single.ap']:.6f}" in out
        capsys.readouterr()
        assert main(["eval", "wider", "--gt", str(faces_root / "eval_tools" / "ground_truth"),
                     "--pred", str(run_dir / "wider" / "predictions_single")]) == 0
        out = capsys.readouterr().out
        for setting in ("easy", "medium", "hard"):
            assert f"wider.{setting}.ap = {metrics[f'wider.single.{setting}']:.6f}" in out
    assert main(["report", str(suite), "--results", str(results),
                 "--out", str(tmp_path / "reports")]) == 0
    html = (tmp_path / "reports" / "faces-e2e.html").read_text()
    assert ">headless<" in html and ">m2_only<" in html
    assert html.count("<svg") == 3  # training loss, key metrics, evaluation curves
    assert "paired bootstrap, p=" in html and "1 seed × 60" in html  # over the WIDER images
    for curve in ("wider.single.hard", "fddb.single.discrete", "pascal.single.calibrated"):
        assert curve in html
