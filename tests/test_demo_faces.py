"""The demo face set: read back by the WIDER and FDDB loaders, boxes that hold the pasted faces,
byte-identical rebuilds, nested settings, perfect AP for perfect predictions; the WIDER training
reader and its transforms on hand-made cases."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from bench.data.demo_faces import build_demo_faces, is_complete
from bench.errors import UserError
from bench.evals.fddb import (
    FDDBEval,
    image_sizes_from_dir,
    pixel_iou,
    read_ellipse_annotations,
    read_fold_list,
    read_image_sizes,
)
from bench.evals.wider import SETTINGS, WiderEval, load_wider_bbx_gt, load_wider_mat
from bench.faces.data import WiderTrainSet, hflip, resize_for_training


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_faces(tmp_path_factory.mktemp("faces") / "demo-faces")


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_wider_files_read_back_with_consistent_counts(built: Path) -> None:
    mat = load_wider_mat(built / "eval_tools" / "ground_truth")
    txt = load_wider_bbx_gt(built / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    train = load_wider_bbx_gt(built / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    splits = manifest(built)["splits"]
    assert mat.images == txt.images and len(mat.images) == splits["val"]["images"] == 60
    assert len(train.images) == splits["train"]["images"] == 160
    assert len(mat.events) == 10 and mat.events[0].startswith("0--")
    for key in mat.images:
        np.testing.assert_array_equal(mat.boxes[key], txt.boxes[key])
        assert (built / "WIDER_val" / "images" / key[0] / f"{key[1]}.jpg").is_file()
    for gt, split in ((mat, "val"), (train, "train")):
        empty = [k for k, b in gt.boxes.items() if not b.any()]
        assert len(empty) == splits[split]["face_free_images"] > 0
        assert all(gt.boxes[k].shape == (1, 4) for k in empty)
        real = sum(len(b) for k, b in gt.boxes.items() if k not in empty)
        assert real == splits[split]["faces"]
    assert mat.count_faces("hard") == splits["val"]["faces"]
    face_free = [k for k, b in mat.boxes.items() if not b.any()]
    assert all(not mat.counted[s][k].any() for s in SETTINGS for k in face_free)


def test_settings_are_nested_by_face_size(built: Path) -> None:
    gt = load_wider_mat(built / "eval_tools" / "ground_truth")
    counts = manifest(built)["splits"]["val"]["counted"]
    for key, boxes in gt.boxes.items():
        if not boxes.any():
            continue
        side = boxes[:, 2]
        np.testing.assert_array_equal(boxes[:, 2], boxes[:, 3])
        np.testing.assert_array_equal(gt.counted["easy"][key], side >= 50)
        np.testing.assert_array_equal(gt.counted["medium"][key], side >= 25)
        assert gt.counted["hard"][key].all()
    easy, medium, hard = (gt.count_faces(s) for s in SETTINGS)
    assert 0 < easy < medium < hard
    assert [easy, medium, hard] == [counts[s] for s in SETTINGS]


def test_fddb_files_read_back(built: Path) -> None:
    names = read_fold_list(built / "FDDB-folds" / "FDDB-fold-01.txt")
    faces = read_ellipse_annotations(built / "FDDB-folds" / "FDDB-fold-01-ellipseList.txt",
                                     names)
    sizes = read_image_sizes(built / "FDDB-image-sizes.txt")
    assert sizes == image_sizes_from_dir(built / "originalPics", names)
    wider = load_wider_bbx_gt(built / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    assert names == [f"{e}/{n}" for e, n in wider.images]
    assert sum(len(f) for f in faces.values()) == manifest(built)["fddb"]["faces"]
    for (event, name), boxes in wider.boxes.items():
        ellipses = faces[f"{event}/{name}"]
        real = boxes[boxes.any(axis=1)]
        assert len(ellipses) == len(real)
        for (x, y, w, h), (ra, rb, angle, cx, cy) in zip(real, ellipses, strict=True):
            assert (ra, rb) == pytest.approx((0.6 * h, 0.45 * w), abs=1e-6)
            assert (cx, cy) == pytest.approx((x + (w - 1) / 2, y + (h - 1) / 2), abs=1e-6)
            assert angle == pytest.approx(math.pi / 2, abs=1e-6)
    # the box of every face, as a rectangle detection, matches it (pixel IoU > 0.5)
    detections = {f"{e}/{n}": np.column_stack([b[b.any(axis=1)], np.ones(b.any(axis=1).sum())])
                  for (e, n), b in wider.boxes.items()}
    ev = FDDBEval(faces, detections, sizes)
    assert ev.summarize()["tpr_disc@1000"] == 1.0
    # the major axis is vertical in the pixels the FDDB evaluator draws
    name, ellipse = next((n, f[:1]) for n, f in faces.items() if len(f) and f[0, 0] > 30)
    ra, rb, _, cx, cy = ellipse[0]
    tall = [[cx - rb, cy - ra, 2 * rb, 2 * ra, 1.0]]
    wide = [[cx - ra, cy - rb, 2 * ra, 2 * rb, 1.0]]
    assert pixel_iou(ellipse, tall, "rect", sizes[name])[0, 0] > 0.7
    assert pixel_iou(ellipse, wide, "rect", sizes[name])[0, 0] < 0.6


def pasted(crop: np.ndarray, size: int, flipped: bool) -> np.ndarray:
    """The documented paste: flip, then cv2 resize (INTER_AREA below 25 px, else LINEAR)."""
    crop = np.ascontiguousarray(crop[:, ::-1]) if flipped else crop
    interpolation = cv2.INTER_AREA if size < 25 else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def test_boxes_hold_the_pasted_faces(built: Path) -> None:
    crops = np.rint(skimage.data.lfw_subset() * 255).astype(np.uint8)
    composition = json.loads((built / "composition.json").read_text())
    gt = load_wider_bbx_gt(built / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    checked = 0
    for split, plans in composition.items():
        for plan in plans:
            faces = [p for p in plan["pastes"] if p["face"]]
            assert all(p["source"] < 100 and (p["source"] % 4 == 3) == (split == "val")
                       for p in faces)
            assert all(p["source"] >= 100 for p in plan["pastes"] if not p["face"])
            if split == "val":
                np.testing.assert_array_equal(
                    gt.boxes[plan["event"], plan["name"]],
                    [[p["x"], p["y"], p["size"], p["size"]] for p in faces] or [[0, 0, 0, 0]])
            path = built / f"WIDER_{split}" / "images" / plan["event"] / f"{plan['name']}.jpg"
            image = cv2.imread(str(path))
            assert image.shape == (plan["height"], plan["width"], 3)
            # the faces are grey: their luminance is the crop's (JPEG keeps luminance best)
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(float)
            for p in faces:
                x, y, s, ramp = p["x"], p["y"], p["size"], max(1, p["size"] // 10)
                want = pasted(crops[p["source"]], s, p["flipped"]).astype(float)
                inner = (slice(y + ramp, y + s - ramp), slice(x + ramp, x + s - ramp))
                error = np.abs(grey[inner] - want[ramp:s - ramp, ramp:s - ramp]).mean()
                assert error < 3
                # half a face off, the same comparison fails
                shifted = (slice(y + ramp, y + s - ramp), slice(x + ramp + s // 2,
                                                                 x + s - ramp + s // 2))
                if grey[shifted].shape == want[ramp:s - ramp, ramp:s - ramp].shape:
                    assert np.abs(grey[shifted] - want[ramp:s - ramp, ramp:s - ramp]).mean() > 10
                checked += 1
    assert checked == sum(s["faces"] for s in manifest(built)["splits"].values())


def test_exact_pixels_before_jpeg() -> None:
    from bench.data.demo_faces import load_sources, plan_split, render

    sources = load_sources()
    plan = next(p for p in plan_split("val", 10, seed=3, sources=sources)
                if any(q.face and q.size >= 40 for q in p.pastes))
    image = render(plan, sources)
    p = next(q for q in plan.pastes if q.face and q.size >= 40)
    ramp = p.size // 10
    want = pasted(sources.crops[p.source], p.size, p.flipped)[ramp:-ramp, ramp:-ramp]
    got = image[p.y + ramp:p.y + p.size - ramp, p.x + ramp:p.x + p.size - ramp]
    for channel in range(3):
        np.testing.assert_array_equal(got[..., channel], want)
    # the outermost ring is blended with the background, so not the crop
    ring = image[p.y, p.x:p.x + p.size].astype(int)
    assert np.abs(ring - pasted(sources.crops[p.source], p.size, p.flipped)[0, :, None]).max() > 0


def test_builds_are_byte_identical_and_idempotent(built: Path, tmp_path: Path) -> None:
    again = build_demo_faces(tmp_path / "again")
    assert files_of(again) == files_of(built)
    mat = (again / "eval_tools" / "ground_truth" / "wider_face_val.mat").read_bytes()
    assert mat.startswith(b"MATLAB 5.0 MAT-file")

    stamp = (again / "manifest.json").stat().st_mtime_ns
    assert build_demo_faces(again) == again
    assert (again / "manifest.json").stat().st_mtime_ns == stamp

    damaged = again / "WIDER_val" / "images"
    victim = next(damaged.rglob("*.jpg"))
    victim.write_bytes(b"broken")
    assert not is_complete(again)
    build_demo_faces(again)
    assert files_of(again) == files_of(built)

    other = build_demo_faces(again, seed=1)
    assert is_complete(other, seed=1) and not is_complete(other, seed=0)
    assert files_of(other)["wider_face_split/wider_face_val_bbx_gt.txt"] != files_of(
        built)["wider_face_split/wider_face_val_bbx_gt.txt"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a demo-faces build"):
        build_demo_faces(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_ground_truth_as_predictions_scores_ap_1(built: Path) -> None:
    gt = load_wider_mat(built / "eval_tools" / "ground_truth")
    predictions = {}
    for i, (key, boxes) in enumerate(gt.boxes.items()):
        real = boxes[boxes.any(axis=1)]
        scores = 1 + i + np.arange(len(real)) / 10
        predictions[key] = np.column_stack([real, scores])
    assert WiderEval(gt, predictions).summarize() == {s: 1.0 for s in SETTINGS}
    # a face left out costs recall in every setting that counts it
    key = next(k for k, b in gt.boxes.items() if (b[:, 2] >= 50).any())
    big = int(np.flatnonzero(gt.boxes[key][:, 2] >= 50)[0])
    predictions[key] = np.delete(predictions[key], big, axis=0)
    ap = WiderEval(gt, predictions).summarize()
    assert all(ap[s] < 1.0 for s in SETTINGS)


def test_train_set_reads_the_built_split(built: Path) -> None:
    data = WiderTrainSet(built)
    gt = load_wider_bbx_gt(built / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    assert len(data) == 160 and data.keys == gt.images
    empty = 0
    for i, key in enumerate(data.keys):
        raw = gt.boxes[key]
        if not raw.any():
            assert data.boxes[i].shape == (0, 4)
            empty += 1
            continue
        x, y, w, h = raw.T
        np.testing.assert_array_equal(data.boxes[i], np.stack([x, y, x + w - 1, y + h - 1], 1))
    assert empty == manifest(built)["splits"]["train"]["face_free_images"]
    image, boxes = data.load_image(0)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (boxes[:, 2] < image.shape[1]).all() and (boxes[:, 3] < image.shape[0]).all()
    boxes[:] = -1
    assert (data.boxes[0] >= 0).all()  # load_image hands out a copy


def write_layout(root: Path, text: str, images: dict[str, tuple[int, int]]) -> None:
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text(text)
    for rel, (h, w) in images.items():
        path = root / "WIDER_train" / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def test_train_set_filters_invalid_and_empty_boxes(tmp_path: Path) -> None:
    text = ("0--Parade/a.jpg\n3\n"
            "10 20 30 40 0 0 0 0 0 0\n"   # kept: [10 20 39 59]
            "5 5 8 8 2 0 0 1 0 0\n"       # invalid
            "7 7 0 9 0 0 0 0 0 0\n"       # zero width
            "1--Handshaking/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
            "1--Handshaking/c.jpg\n1\n0 0 4 4 0 0 0 0 0 0\n")
    write_layout(tmp_path, text, {"0--Parade/a.jpg": (80, 100), "1--Handshaking/b.jpg": (8, 8)})
    data = WiderTrainSet(tmp_path, "train")
    assert data.keys == [("0--Parade", "a"), ("1--Handshaking", "b"), ("1--Handshaking", "c")]
    np.testing.assert_array_equal(data.boxes[0], [[10, 20, 39, 59]])
    assert data.boxes[1].shape == (0, 4)
    np.testing.assert_array_equal(data.boxes[2], [[0, 0, 3, 3]])
    image, boxes = data.load_image(0)
    assert image.shape == (80, 100, 3) and boxes.dtype == np.float32
    missing = tmp_path / "WIDER_train" / "images" / "1--Handshaking" / "c.jpg"
    with pytest.raises(UserError, match=str(missing)):
        data.load_image(2)
    with pytest.raises(UserError, match="split 'test'"):
        WiderTrainSet(tmp_path, "test")


def test_resize_scales_shortest_side_within_longest_limit() -> None:
    boxes = np.array([[10, 20, 39, 59]], np.float32)
    image, out, scale = resize_for_training(np.zeros((300, 400, 3), np.uint8), boxes, 600, 1000)
    assert scale == 2.0 and image.shape == (600, 800, 3)
    np.testing.assert_allclose(out, [[20, 40, 78, 118]])
    # longest side would reach 1800 > 1000: the longest side gets 1000 instead
    image, _, scale = resize_for_training(np.zeros((100, 300, 3), np.uint8), boxes, 600, 1000)
    assert scale == pytest.approx(1000 / 300) and image.shape == (333, 1000, 3)
    # the limit is checked after rounding, as prep_im_for_blob does: 1429 * 0.7 = 1000.3 -> 1000
    _, _, scale = resize_for_training(np.zeros((10, 1429, 3), np.uint8), boxes, 7, 1000)
    assert scale == pytest.approx(0.7)
    _, _, scale = resize_for_training(np.zeros((10, 1430, 3), np.uint8), boxes, 7, 1000)
    assert scale == pytest.approx(1000 / 1430)
    np.testing.assert_array_equal(boxes, [[10, 20, 39, 59]])  # input untouched


def test_hflip_mirrors_pixels_and_inclusive_boxes() -> None:
    image = np.zeros((5, 10, 3), np.uint8)
    image[2:5, 1:4] = 255  # a box covering columns 1..3, rows 2..4
    boxes = np.array([[1, 2, 3, 4]], np.float32)
    flipped, out = hflip(image, boxes)
    np.testing.assert_array_equal(out, [[6, 2, 8, 4]])
    columns = np.flatnonzero(flipped[:, :, 0].any(axis=0))
    assert columns.tolist() == [6, 7, 8]
    assert flipped.flags.c_contiguous
    back, again = hflip(flipped, out)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(again, boxes)
