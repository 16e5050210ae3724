"""The offline demo face-detection set: real LFW face crops pasted at known positions onto real
photographs, written in the official WIDER FACE and FDDB layouts so that the same loaders,
evaluators and training reader take it. It is a PROXY for WIDER FACE and FDDB, not them.

Sources, all inside the scikit-image wheel (no download):
- skimage.data.lfw_subset(): 200 grey 25x25 crops from LFW; its docstring says "100 first
  images are faces and subsequent 100 are non-faces". The face crops run from about the hairline
  to the chin and from cheek to cheek, so a ground-truth box (the pasted crop's square) is a
  tight-ish face box like WIDER's. Faces with index % 4 == 3 (25) go to val, the other 75 to
  train, so no crop appears in both splits. Non-face crops are pasted the same way, unannotated,
  so that the pasting itself (a grey square with a soft edge) does not give a face away.
- Photographs without faces as backgrounds (BACKGROUNDS); astronaut and camera show a person's
  face and are excluded. Both splits use all of them, through different random crops, flips
  and colour jitter.

Composition, per image (deterministic given the seed): a background crop of aspect W:H resized
to W x H (320..480 x 240..360), maybe flipped, with per-channel gain and a global bias; then up
to MAX_FACES faces of side 12..120 px (log-uniform) and up to MAX_DISTRACTORS non-faces, each
resized with cv2 (INTER_AREA below 25 px, INTER_LINEAR above), maybe flipped, and blended with
an alpha that ramps over the outer max(1, side // 10) pixels; no two pasted squares overlap or
touch. Every FACE_FREE_EVERY-th image gets no face at all. A face's box [x y w h] = [x y s s]
covers exactly the pasted pixels x..x+s-1, y..y+s-1; inside the ramp the pixels are the resized
crop's. composition.json records every paste (crop index, position, size, flip).

Annotations: WIDER attributes are all 0 (not labelled). Settings by face side s, nested like
WIDER's: easy s >= 50, medium s >= 25, hard every face. FDDB (val images, one fold): an upright
ellipse per face, centred on the box's centre pixel (x + (w - 1)/2, y + (h - 1)/2), major radius
0.6 h, minor radius 0.45 w. The first radius lies along the angle (OpenCV's ellipse, which the
official tool draws), so an upright face has angle +-pi/2, as FDDB's angles cluster near +-pi/2;
we write pi/2. Every face is annotated, even those under FDDB's ~20 px floor.

The build is deterministic (same bytes for the same seed and package versions: JPEGs through cv2
at a fixed quality, .mat headers without scipy's time stamp), atomic (bench.util.atomic.build_dir)
and idempotent: manifest.json lists every file's hash, and a folder whose files do not match it
is rebuilt.
"""

import io
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.data.manifest import file_entries, matches_manifest, read_manifest, sha256_bytes
from bench.errors import UserError
from bench.util.atomic import build_dir
from bench.util.paths import cache_home

# Bump when the output changes, so that existing builds are redone.
BUILD_FORMAT = 1
NAME = "demo-faces"
SPLITS = {"train": 160, "val": 60}
BACKGROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "brick", "grass", "gravel", "coins", "clock")
EXCLUDED = {"astronaut": "a portrait, a face", "camera": "the cameraman, a face"}
N_FACES = 100
CROP = 25
WIDTHS, HEIGHTS = (320, 480), (240, 360)
FACE_SIDES = (12, 120)
MAX_FACES, MAX_DISTRACTORS = 6, 2
FACE_FREE_EVERY = 20
PLACEMENT_TRIES = 50
JPEG_QUALITY = 95
EASY_MIN, MEDIUM_MIN = 50, 25
SETTING_RULES = {"easy": f"side >= {EASY_MIN} px", "medium": f"side >= {MEDIUM_MIN} px",
                 "hard": "every face"}
FDDB_NAME = "FDDB-folds/FDDB-fold-01"
FDDB_SIZES = "FDDB-image-sizes.txt"
_MAT_HEADER = b"MATLAB 5.0 MAT-file, demo-faces proxy ground truth"


@dataclass(frozen=True)
class Paste:
    """One crop of lfw_subset() pasted as an s x s square at (x, y); faces are annotated."""

    source: int
    x: int
    y: int
    size: int
    flipped: bool
    face: bool


@dataclass(frozen=True)
class ImagePlan:
    """Everything that decides one composed image."""

    event: str
    name: str
    background: str
    width: int
    height: int
    crop: tuple[int, int, int, int]
    flipped: bool
    gain: tuple[float, float, float]
    bias: float
    pastes: tuple[Paste, ...]

    @property
    def faces(self) -> np.ndarray:
        """N x 4 [x y w h] boxes of the pasted faces, in annotation order."""
        rows = [[p.x, p.y, p.size, p.size] for p in self.pastes if p.face]
        return np.array(rows, dtype=np.int32).reshape(-1, 4)


@dataclass(frozen=True)
class Sources:
    crops: np.ndarray  # 200 x 25 x 25 uint8: faces first, then non-faces
    photos: dict[str, np.ndarray]  # name -> H x W x 3 uint8 BGR


def load_sources() -> Sources:
    import cv2
    import skimage.data

    crops = np.rint(skimage.data.lfw_subset() * 255).astype(np.uint8)
    photos = {}
    for name in BACKGROUNDS:
        image = getattr(skimage.data, name)()
        code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR
        photos[name] = cv2.cvtColor(image, code)
    return Sources(crops, photos)


def event_name(background: str) -> str:
    """WIDER-style event folder of a background, e.g. `3--HubbleDeepField`."""
    title = background.replace("_", " ").title().replace(" ", "")
    return f"{BACKGROUNDS.index(background)}--{title}"


def plan_split(split: str, count: int, seed: int, sources: Sources) -> list[ImagePlan]:
    """The images of a split, ordered by event then name as in WIDER's files."""
    rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    in_val = split == "val"
    faces = [i for i in range(N_FACES) if (i % 4 == 3) == in_val]
    others = [N_FACES + i for i in faces]
    # each run of len(BACKGROUNDS) images uses every background once, in a shuffled order
    order = np.concatenate([rng.permutation(len(BACKGROUNDS))
                            for _ in range(-(-count // len(BACKGROUNDS)))])
    plans = []
    for k in range(count):
        background = BACKGROUNDS[order[k]]
        event = event_name(background)
        name = f"{event.replace('--', '_')}_{split}_{k:04d}"
        face_free = k % FACE_FREE_EVERY == FACE_FREE_EVERY - 1
        n_faces = 0 if face_free else int(rng.integers(1, MAX_FACES, endpoint=True))
        width = int(rng.integers(*WIDTHS, endpoint=True))
        height = int(rng.integers(*HEIGHTS, endpoint=True))
        photo_h, photo_w = sources.photos[background].shape[:2]
        crop_w = min(photo_w, photo_h * width / height) * rng.uniform(0.6, 1.0)
        crop_h = crop_w * height / width
        cw, ch = round(crop_w), round(crop_h)
        crop = (int(rng.integers(0, photo_w - cw, endpoint=True)),
                int(rng.integers(0, photo_h - ch, endpoint=True)), cw, ch)
        low, high = np.log(FACE_SIDES)
        sides = np.exp(rng.uniform(low, high, size=n_faces))
        wanted = [(int(faces[rng.integers(len(faces))]), round(float(s)), True) for s in sides]
        wanted += [(int(others[rng.integers(len(others))]),
                    int(rng.integers(*FACE_SIDES, endpoint=True)), False)
                   for _ in range(int(rng.integers(0, MAX_DISTRACTORS, endpoint=True)))]
        flipped = bool(rng.integers(2))
        gain = rng.uniform(0.8, 1.2, size=3)
        bias = float(rng.uniform(-20, 20))
        plans.append(ImagePlan(
            event, name, background, width, height, crop, flipped,
            (float(gain[0]), float(gain[1]), float(gain[2])), bias,
            _place(wanted, width, height, rng)))
    return sorted(plans, key=lambda p: (BACKGROUNDS.index(p.background), p.name))


def _place(wanted: list[tuple[int, int, bool]], width: int, height: int,
           rng: np.random.Generator) -> tuple[Paste, ...]:
    """Non-overlapping, non-touching squares by rejection; a square that finds no room after
    PLACEMENT_TRIES draws is left out (the first always fits)."""
    placed: list[Paste] = []
    for source, size, face in wanted:
        for _ in range(PLACEMENT_TRIES):
            x = int(rng.integers(0, width - size, endpoint=True))
            y = int(rng.integers(0, height - size, endpoint=True))
            if all(x > p.x + p.size or p.x > x + size or y > p.y + p.size or p.y > y + size
                   for p in placed):
                placed.append(Paste(source, x, y, size, bool(rng.integers(2)), face))
                break
    return tuple(placed)


def resized_crop(crop: np.ndarray, size: int, flipped: bool) -> np.ndarray:
    """The grey crop as it is pasted: flipped if asked, resized to size x size."""
    import cv2

    crop = crop[:, ::-1] if flipped else crop
    interpolation = cv2.INTER_AREA if size < CROP else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interpolation)


def edge_alpha(size: int) -> np.ndarray:
    """Blend weights: 1 inside, ramping down over the outer max(1, size // 10) pixels."""
    ramp = max(1, size // 10)
    i = np.arange(size)
    d = np.minimum(i, size - 1 - i)
    return np.minimum(1.0, (np.minimum.outer(d, d) + 1) / (ramp + 1))


def render(plan: ImagePlan, sources: Sources) -> np.ndarray:
    """The composed H x W x 3 uint8 BGR image."""
    import cv2

    x, y, w, h = plan.crop
    patch = sources.photos[plan.background][y:y + h, x:x + w]
    shrink = w > plan.width
    canvas = cv2.resize(patch, (plan.width, plan.height),
                        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if plan.flipped:
        canvas = canvas[:, ::-1]
    canvas = np.clip(canvas * np.array(plan.gain) + plan.bias, 0, 255)
    for p in plan.pastes:
        face = resized_crop(sources.crops[p.source], p.size, p.flipped)[..., None]
        alpha = edge_alpha(p.size)[..., None]
        region = canvas[p.y:p.y + p.size, p.x:p.x + p.size]
        region[:] = alpha * face + (1 - alpha) * region
    return np.rint(canvas).astype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2 could not encode a JPEG")
    return data.tobytes()


# ---------------------------------------------------------------- annotation files


def wider_bbx_gt(plans: list[ImagePlan]) -> str:
    """wider_face_<split>_bbx_gt.txt: path, count, `x1 y1 w h` + six attributes (all 0)."""
    lines = []
    for plan in plans:
        faces = plan.faces
        lines += [f"{plan.event}/{plan.name}.jpg", str(len(faces))]
        lines += [" ".join(map(str, box)) + " 0 0 0 0 0 0" for box in faces.tolist()]
        if not len(faces):
            lines.append("0 0 0 0 0 0 0 0 0 0")
    return "".join(line + "\n" for line in lines)


def counted_indices(boxes: np.ndarray, setting: str) -> np.ndarray:
    """1-based indices of the faces that count in a setting (the official gt_list)."""
    side = np.minimum(boxes[:, 2], boxes[:, 3])
    keep = {"easy": side >= EASY_MIN, "medium": side >= MEDIUM_MIN,
            "hard": np.ones(len(boxes), bool)}[setting]
    return np.flatnonzero(keep) + 1


def wider_mats(plans: list[ImagePlan]) -> dict[str, bytes]:
    """eval_tools/ground_truth files in the official structure: events x 1 cell arrays (61 x 1
    in WIDER) of per-image cells; a face-free image holds one [0 0 0 0] box and an empty
    gt_list, as in the official files; attribute labels are all 0."""
    events = list(dict.fromkeys(p.event for p in plans))
    by_event = [[p for p in plans if p.event == e] for e in events]

    def cells(values: list) -> np.ndarray:
        out = np.empty((len(values), 1), dtype=object)
        for i, v in enumerate(values):
            out[i, 0] = v
        return out

    def per_image(make) -> np.ndarray:
        return cells([cells([make(p) for p in group]) for group in by_event])

    def boxes(p: ImagePlan) -> np.ndarray:
        return p.faces if len(p.faces) else np.zeros((1, 4), np.int32)

    common = {
        "event_list": cells([np.array([e]) for e in events]),
        "file_list": per_image(lambda p: np.array([p.name])),
        "face_bbx_list": per_image(boxes),
    }
    labels = per_image(lambda p: np.zeros((len(boxes(p)), 1), np.uint8))
    for label in ("blur", "expression", "illumination", "invalid", "occlusion", "pose"):
        common[f"{label}_label_list"] = labels
    files = {"wider_face_val.mat": _savemat(common)}
    for setting in ("easy", "medium", "hard"):
        gt_list = per_image(lambda p, s=setting: (
            counted_indices(p.faces, s).astype(np.uint8).reshape(-1, 1) if len(p.faces)
            else np.zeros((0, 0), np.uint8)))
        files[f"wider_{setting}_val.mat"] = _savemat({**common, "gt_list": gt_list})
    return files


def _savemat(fields: dict[str, np.ndarray]) -> bytes:
    """MATLAB v5 bytes; scipy stamps the current time into the 116-byte text header, which is
    replaced by a fixed text so that builds are byte-identical."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, fields)
    data = buffer.getvalue()
    return _MAT_HEADER.ljust(116, b" ") + data[116:]


def fddb_ellipses(plans: list[ImagePlan]) -> str:
    """FDDB-fold-01-ellipseList.txt: `ra rb angle cx cy 1` per face, ra along the vertical."""
    lines = []
    for plan in plans:
        faces = plan.faces
        lines += [f"{plan.event}/{plan.name}", str(len(faces))]
        for x, y, w, h in faces.tolist():
            lines.append(f"{0.6 * h:.6f} {0.45 * w:.6f} {math.pi / 2:.6f} "
                         f"{x + (w - 1) / 2:.6f} {y + (h - 1) / 2:.6f} 1")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------- build


def is_complete(out_dir: Path, seed: int = 0) -> bool:
    """Whether `out_dir` holds a finished build of this format and seed, every file intact."""
    return matches_manifest(out_dir, BUILD_FORMAT, seed=seed)


def build_demo_faces(out_dir: Path | None = None, seed: int = 0) -> Path:
    """Build the set into `out_dir` (default $BENCH_DATA/demo-faces) unless already built.

    A folder there that is not a finished build is replaced when it is empty or an earlier
    demo-faces build (its manifest names it); any other folder is left alone (UserError)."""
    out_dir = Path(out_dir) if out_dir is not None else cache_home() / NAME
    if is_complete(out_dir, seed):
        return out_dir
    if out_dir.exists():
        if not _replaceable(out_dir):
            raise UserError(f"{out_dir}: exists and is not a {NAME} build; remove it or build "
                            "elsewhere")
        shutil.rmtree(out_dir)
    files = _contents(seed)
    build_dir(out_dir, lambda tmp: _write(tmp, files))
    return out_dir


def _replaceable(path: Path) -> bool:
    if path.is_dir() and not any(path.iterdir()):
        return True
    try:
        manifest = read_manifest(path)
        return isinstance(manifest, dict) and manifest.get("name") == NAME
    except (OSError, ValueError):
        return False


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _contents(seed: int) -> dict[str, bytes]:
    """Every file of the build, manifest.json last."""
    sources = load_sources()
    plans = {split: plan_split(split, count, seed, sources) for split, count in SPLITS.items()}
    files: dict[str, bytes] = {}
    for split, split_plans in plans.items():
        for plan in split_plans:
            files[f"WIDER_{split}/images/{plan.event}/{plan.name}.jpg"] = encode_jpeg(
                render(plan, sources))
        files[f"wider_face_split/wider_face_{split}_bbx_gt.txt"] = wider_bbx_gt(
            split_plans).encode()
    for name, data in wider_mats(plans["val"]).items():
        files[f"eval_tools/ground_truth/{name}"] = data
    val = plans["val"]
    for plan in val:
        files[f"originalPics/{plan.event}/{plan.name}.jpg"] = files[
            f"WIDER_val/images/{plan.event}/{plan.name}.jpg"]
    files[f"{FDDB_NAME}.txt"] = "".join(f"{p.event}/{p.name}\n" for p in val).encode()
    files[f"{FDDB_NAME}-ellipseList.txt"] = fddb_ellipses(val).encode()
    files[FDDB_SIZES] = "".join(f"{p.event}/{p.name} {p.width} {p.height}\n"
                                for p in val).encode()
    files["composition.json"] = _json({split: [asdict(p) for p in split_plans]
                                       for split, split_plans in plans.items()})
    summary = _summary(plans, sources, seed)
    files["SOURCES.md"] = _sources_md(summary).encode()
    files["manifest.json"] = _json({**summary, "files": file_entries(files)})
    return files


def _summary(plans: dict[str, list[ImagePlan]], sources: Sources, seed: int) -> dict:
    import skimage

    splits = {}
    for split, split_plans in plans.items():
        boxes = [p.faces for p in split_plans]
        sides = np.concatenate([b[:, 2] for b in boxes])
        splits[split] = {
            "images": len(split_plans),
            "face_free_images": sum(not len(b) for b in boxes),
            "faces": int(sides.size),
            "distractors": sum(not q.face for p in split_plans for q in p.pastes),
            "face_side_px": [int(sides.min()), int(sides.max())],
            "events": len({p.event for p in split_plans}),
        }
    val_boxes = [p.faces for p in plans["val"] if len(p.faces)]
    splits["val"]["counted"] = {s: sum(len(counted_indices(b, s)) for b in val_boxes)
                                for s in SETTING_RULES}
    return {
        "format": BUILD_FORMAT,
        "name": NAME,
        "proxy_for": "WIDER FACE and FDDB (their file layouts only); this is NOT WIDER FACE "
                     "or FDDB",
        "seed": seed,
        "source": {
            "package": "scikit-image",
            # skimage's __init__.pyi names __version__ in __all__ but never declares it
            "version": skimage.__version__,  # type: ignore[attr-defined]
            "faces": "skimage.data.lfw_subset() indices 0-99 (LFW face crops, 25x25 grey)",
            "distractors": "skimage.data.lfw_subset() indices 100-199 (LFW non-face crops)",
            "split": "val faces: indices with index % 4 == 3 (25); train: the other 75",
            "lfw_subset_sha256": sha256_bytes(sources.crops.tobytes()),
            "backgrounds": {name: {"shape": list(photo.shape),
                                   "sha256": sha256_bytes(photo.tobytes())}
                            for name, photo in sources.photos.items()},
            "excluded": EXCLUDED,
        },
        "splits": splits,
        "settings": SETTING_RULES,
        "box": "[x y w h] = the pasted square; pixels x..x+w-1, y..y+h-1",
        "fddb": {"images": len(plans["val"]), "faces": splits["val"]["faces"],
                 "folds": [1], "ellipse": "ra = 0.6 h, rb = 0.45 w, angle = pi/2, centre = the "
                                          "box's centre pixel (x + (w - 1)/2, y + (h - 1)/2)"},
        "jpeg_quality": JPEG_QUALITY,
    }


def _sources_md(summary: dict) -> str:
    source, splits = summary["source"], summary["splits"]
    lines = [
        f"# {NAME}: where this data set comes from",
        "",
        "A PROXY for WIDER FACE and FDDB, composed from real images; it is NOT WIDER FACE or",
        "FDDB and its numbers must never be reported as theirs. It only shares their layouts.",
        "",
        f"- Faces: {source['faces']}; {source['split']}.",
        f"- Unannotated distractors: {source['distractors']}.",
        f"- Backgrounds: {', '.join(source['backgrounds'])} (skimage.data); excluded: "
        + ", ".join(f"{k} ({v})" for k, v in source['excluded'].items()) + ".",
        f"- Package: {source['package']} {source['version']}; seed {summary['seed']}.",
        "",
        "| split | images | face-free | faces | distractors | face side (px) | events |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, s in splits.items():
        lines.append(f"| {split} | {s['images']} | {s['face_free_images']} | {s['faces']} | "
                     f"{s['distractors']} | {s['face_side_px'][0]}..{s['face_side_px'][1]} | "
                     f"{s['events']} |")
    counted = splits["val"]["counted"]
    lines += [
        "",
        f"Boxes: {summary['box']}. Settings (val): "
        + "; ".join(f"{s} = {rule} ({counted[s]} faces)"
                    for s, rule in summary["settings"].items()) + ".",
        f"FDDB: val images, fold 01 only (evaluate with folds 1), ellipses "
        f"{summary['fddb']['ellipse']}; every face annotated; sizes in {FDDB_SIZES}.",
        "composition.json records every pasted crop (index, position, size, flip).",
        "",
    ]
    return "\n".join(lines)


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()
