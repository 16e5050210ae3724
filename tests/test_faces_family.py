"""The face-detection family end to end: a real learning check, and a suite run whose exported
WIDER-format predictions score the same through `bench eval wider`."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from bench.budget import StageBudget
from bench.cli import main
from bench.distributed import World
from bench.evals.wider import WiderEval, load_wider_bbx_gt
from bench.faces.anchors import module_anchors
from bench.faces.batches import TrainingBatches
from bench.faces.config import FacesConfig
from bench.faces.data import WiderTrainSet
from bench.faces.inference import detect_scales, single_scale
from bench.faces.model import build_ssh, to_input
from bench.faces.targets import border_for, ssh_loss
from bench.schema import OptimConfig
from bench.train import Stage, train_stage


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
    pascal = tmp_path / "pascal"  # a few demo val images in the Pascal Faces layout
    (pascal / "JPEGImages").mkdir(parents=True)
    val = WiderTrainSet(faces_root, "val")
    lines = []
    for i in range(6):
        key = val.keys[i][1]
        shutil.copy(val.path(i), pascal / "JPEGImages" / f"{key}.jpg")
        lines += [f"{key}.jpg " + " ".join(f"{v:g}" for v in box) for box in val.boxes[i]]
    (pascal / "annotations.txt").write_text("\n".join(lines) + "\n")
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
                     "1", "--dets", str(run_dir / "fddb_detections_single.txt"),
                     "--sizes", str(faces_root / "FDDB-image-sizes.txt")]) == 0
        out = capsys.readouterr().out
        assert f"fddb.tpr_disc@1000 = {metrics['fddb.single.tpr_disc@1000']:.6g}" in out
        assert main(["eval", "pascal", "--gt", str(pascal / "annotations.txt"), "--dets",
                     str(run_dir / "pascal_detections_single.txt")]) == 0
        out = capsys.readouterr().out
        assert f"{metrics['pascal.single.ap']:.6f}" in out
        capsys.readouterr()
        assert main(["eval", "wider", "--gt", str(faces_root / "eval_tools" / "ground_truth"),
                     "--pred", str(run_dir / "predictions_single")]) == 0
        out = capsys.readouterr().out
        for setting in ("easy", "medium", "hard"):
            assert f"wider.{setting}.ap = {metrics[f'wider.single.{setting}']:.6f}" in out
    assert main(["report", str(suite), "--results", str(results),
                 "--out", str(tmp_path / "reports")]) == 0
    html = (tmp_path / "reports" / "faces-e2e.html").read_text()
    assert ">headless<" in html and ">m2_only<" in html
    assert html.count("<svg") == 3  # training loss, key metrics, evaluation curves
    for curve in ("wider.single.hard", "fddb.single.discrete", "pascal.single.calibrated"):
        assert curve in html
