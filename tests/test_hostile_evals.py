"""Hostile input to `bench eval fddb|pascal|wider|glue`: every case gets exit 2 and one `error:`
line naming the file, with no traceback and no numpy warning; hostile but acceptable input is
scored without warning text; MATLAB files are checked before scipy allocates anything."""

import json
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from support.shared_data import SHARED_DATA
from test_wider_eval import SMALL, SMALL_COUNTED, write_mat_gt

from bench.cli import main
from bench.evals import matfile
from bench.evals.io import SHOWN_CHARS, shown
from bench.evals.wider import load_wider_mat

JUNK = bytes(range(256)) * 4  # binary, and not UTF-8
LONG = "x" * 4000


# ---- hand-made MAT-files: the v5 layout, element by element -----------------------------------

def element(mdtype: int, data: bytes) -> bytes:
    return struct.pack("<II", mdtype, len(data)) + data + b"\0" * (-len(data) % 8)


def matrix(cls: int, dims: tuple[int, ...], name: bytes, *parts: bytes) -> bytes:
    """An miMATRIX: array flags (class `cls`), dimensions, name, then the class's parts."""
    body = (element(6, struct.pack("<II", cls, 0))
            + element(5, struct.pack(f"<{len(dims)}i", *dims)) + element(1, name)
            + b"".join(parts))
    return element(14, body)


def mat_file(*variables: bytes, version: int = 0x0100) -> bytes:
    header = b"MATLAB 5.0 MAT-file, hand-made".ljust(116) + b"\0" * 8
    return header + struct.pack("<H", version) + b"IM" + b"".join(variables)


def compressed(variable: bytes) -> bytes:
    data = zlib.compress(variable)
    return struct.pack("<II", 15, len(data)) + data


def doubles(dims: tuple[int, ...], name: bytes = b"x", data: bytes = b"\0" * 8) -> bytes:
    return matrix(6, dims, name, element(9, data))


# ---- valid inputs for the four evaluators, which each case then spoils ------------------------

@pytest.fixture
def root(tmp_path: Path) -> Path:
    folds = tmp_path / "folds"
    folds.mkdir()
    (folds / "FDDB-fold-01.txt").write_text("img_a\n")
    (folds / "FDDB-fold-01-ellipseList.txt").write_text("img_a\n1\n40 30 0 50 50 1\n")
    (tmp_path / "fddb.txt").write_text("img_a\n1\n20 10 60 80 0.9\n")
    (tmp_path / "sizes.txt").write_text("img_a 100 100\n")
    (tmp_path / "gt.txt").write_text("a.jpg 10 10 100 100\n")
    (tmp_path / "pascal.txt").write_text("a 0.9 10 10 100 100\n")
    write_mat_gt(tmp_path / "wider_gt", SMALL, SMALL_COUNTED)
    write_pred(tmp_path, "p1.txt", "p1.jpg\n1\n0 0 9 9 0.9\n")
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "dev.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\n"
                                                "c\td\t4.0\n")
    return tmp_path


def write_pred(root: Path, name: str, text: str | bytes) -> Path:
    path = root / "pred" / "0--Parade" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def folder(path: Path) -> Path:
    path.mkdir()
    return path


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def fddb(root: Path, dets: Path | None = None, sizes: Path | None = None,
         kind: str = "rect") -> list[str]:
    return ["eval", "fddb", "--folds", str(root / "folds"), "--folds-used", "1",
            "--dets", str(dets or root / "fddb.txt"), "--sizes", str(sizes or root / "sizes.txt"),
            "--kind", kind]


def pascal(root: Path, gt: Path | None = None, dets: Path | None = None) -> list[str]:
    return ["eval", "pascal", "--gt", str(gt or root / "gt.txt"),
            "--dets", str(dets or root / "pascal.txt")]


def wider(root: Path, gt: Path | None = None) -> list[str]:
    return ["eval", "wider", "--gt", str(gt or root / "wider_gt"), "--pred", str(root / "pred")]


def glue(root: Path, predictions: Path, task: str = "sst2") -> list[str]:
    return ["eval", "glue", "--data", str(root), "--task", task,
            "--predictions", str(predictions)]


def wider_gt_with(root: Path, name: str, content: bytes) -> Path:
    write(root / "wider_gt" / name, content)
    return root / "wider_gt"


def coco(images: object, annotations: object = ()) -> str:
    return json.dumps({"images": images, "annotations": list(annotations)})


def fold_ellipses(root: Path, text: str) -> Path:
    return write(root / "folds" / "FDDB-fold-01-ellipseList.txt", text)


GOOD_COCO = [{"id": 1, "file_name": "a.jpg"}]
GOOD_ANN = [{"id": 1, "image_id": 1, "bbox": [10, 10, 90, 90]}]
# id -> (argv for the spoiled input, the file the error must name)
Case = Callable[[Path], tuple[list[str], Path]]
CASES: dict[str, Case] = {
    # FDDB
    "fddb ellipse axis >= 2^31": lambda r: (
        fddb(r), fold_ellipses(r, "img_a\n1\n3000000000 30 0 50 50 1\n")),
    "fddb ellipse centre 1e39 (float32 overflow)": lambda r: (
        fddb(r), fold_ellipses(r, "img_a\n1\n40 30 0 1e39 50 1\n")),
    "fddb ellipse angle 1e300": lambda r: (
        fddb(r), fold_ellipses(r, "img_a\n1\n40 30 1e300 50 50 1\n")),
    "fddb ellipse detection axis 1e12": lambda r: (
        fddb(r, write(r / "e.txt", "img_a\n1\n1e12 5 0 50 50 0.5\n"), kind="ellipse"), r / "e.txt"),
    "fddb sizes 1e9 x 1e9": lambda r: (
        fddb(r, sizes=write(r / "s.txt", "img_a 1000000000 1000000000\n")), r / "s.txt"),
    "fddb sizes 65536 wide": lambda r: (
        fddb(r, sizes=write(r / "s.txt", "img_a 65536 10\n")), r / "s.txt"),
    "fddb sizes of 5000 digits": lambda r: (
        fddb(r, sizes=write(r / "s.txt", f"img_a {'9' * 5000} 10\n")), r / "s.txt"),
    "fddb sizes in superscript digits": lambda r: (
        fddb(r, sizes=write(r / "s.txt", "img_a ²³ 10\n")), r / "s.txt"),
    "fddb sizes negative": lambda r: (
        fddb(r, sizes=write(r / "s.txt", "img_a -5 10\n")), r / "s.txt"),
    "fddb empty detections": lambda r: (fddb(r, write(r / "d.txt", "")), r / "d.txt"),
    "fddb binary detections": lambda r: (fddb(r, write(r / "d.txt", JUNK)), r / "d.txt"),
    "fddb detections a folder": lambda r: (fddb(r, r / "folds"), r / "folds"),
    "fddb NaN score": lambda r: (
        fddb(r, write(r / "d.txt", "img_a\n1\n1 2 3 4 nan\n")), r / "d.txt"),
    "fddb inf score": lambda r: (
        fddb(r, write(r / "d.txt", "img_a\n1\n1 2 3 4 -inf\n")), r / "d.txt"),
    "fddb negative width": lambda r: (
        fddb(r, write(r / "d.txt", "img_a\n1\n1 2 -3 4 0.5\n")), r / "d.txt"),
    "fddb count 10^12": lambda r: (
        fddb(r, write(r / "d.txt", "img_a\n1000000000000\n1 2 3 4 0.5\n")), r / "d.txt"),
    "fddb count of 5000 digits": lambda r: (
        fddb(r, write(r / "d.txt", f"img_a\n{'9' * 5000}\n")), r / "d.txt"),
    "fddb image listed twice": lambda r: (
        fddb(r, write(r / "d.txt", "img_a\n0\nimg_a\n0\n")), r / "d.txt"),
    "fddb 4000-character line": lambda r: (
        fddb(r, write(r / "d.txt", f"img_a\n1\n{LONG}\n")), r / "d.txt"),
    "fddb image a folder": lambda r: (
        ["eval", "fddb", "--folds", str(r / "folds"), "--folds-used", "1", "--dets",
         str(r / "fddb.txt"), "--images", str(r)], folder(r / "img_a.jpg")),
    # Pascal Faces
    "pascal pickle renamed .mat": lambda r: (
        pascal(r, write(r / "p.mat", pickle.dumps({"Annotations": [1, 2]}))), r / "p.mat"),
    "pascal empty .mat": lambda r: (pascal(r, write(r / "e.mat", b"")), r / "e.mat"),
    "pascal MAT v7.3": lambda r: (
        pascal(r, write(r / "h.mat", mat_file(version=0x0200) + JUNK)), r / "h.mat"),
    "pascal .mat declaring 4 GB, compressed": lambda r: (
        pascal(r, write(r / "big.mat", mat_file(compressed(doubles((2**29, 1), b"Annotations"))))),
        r / "big.mat"),
    "pascal .mat cell of 10^9 slots": lambda r: (
        pascal(r, write(r / "c.mat", mat_file(compressed(matrix(1, (10**9, 1), b"Annotations"))))),
        r / "c.mat"),
    "pascal .mat cell slots past its bytes": lambda r: (
        pascal(r, write(r / "c.mat", mat_file(matrix(1, (1000, 1), b"Annotations")))),
        r / "c.mat"),
    "pascal .mat struct field-name length 0": lambda r: (
        pascal(r, write(r / "s.mat", mat_file(matrix(2, (1, 1), b"Annotations",
                                                     element(5, b"\0" * 4), element(1, b"")))),),
        r / "s.mat"),
    "pascal .mat inflating past the bound": lambda r: (
        pascal(r, write(r / "z.mat", mat_file(compressed(matrix(
            1, (3, 1), b"Annotations", *[doubles((3_000_000, 1), b"", b"\0" * 24_000_000)] * 3))))),
        r / "z.mat"),
    "pascal .mat a negative dimension": lambda r: (
        pascal(r, write(r / "n.mat", mat_file(doubles((-1, 1), b"Annotations")))), r / "n.mat"),
    "pascal .mat nested 40 deep": lambda r: (
        pascal(r, write(r / "d.mat", mat_file(nested_cells(40)))), r / "d.mat"),
    "pascal gt a folder": lambda r: (pascal(r, r / "folds"), r / "folds"),
    "pascal gt binary text": lambda r: (pascal(r, write(r / "g.txt", JUNK)), r / "g.txt"),
    "pascal COCO images not objects": lambda r: (
        pascal(r, write(r / "c.json", coco([1, 2]))), r / "c.json"),
    "pascal COCO image id a string": lambda r: (
        pascal(r, write(r / "c.json", coco([{"id": "1", "file_name": "a.jpg"}]))), r / "c.json"),
    "pascal COCO annotation without image_id": lambda r: (
        pascal(r, write(r / "c.json", coco(GOOD_COCO, [{"id": 1, "bbox": [0, 0, 9, 9]}]))),
        r / "c.json"),
    "pascal COCO duplicate image ids": lambda r: (
        pascal(r, write(r / "c.json", coco(GOOD_COCO * 2))), r / "c.json"),
    "pascal COCO annotations not a list": lambda r: (
        pascal(r, write(r / "c.json", json.dumps({"images": GOOD_COCO, "annotations": 3}))),
        r / "c.json"),
    "pascal COCO a number of 5000 digits": lambda r: (
        pascal(r, write(r / "c.json", "[" + "9" * 5000 + "]")), r / "c.json"),
    "pascal COCO nested 100000 deep": lambda r: (
        pascal(r, write(r / "c.json", "[" * 100_000 + "]" * 100_000)), r / "c.json"),
    "pascal COCO results image_id a list": lambda r: (
        pascal(r, write(r / "c.json", coco(GOOD_COCO, GOOD_ANN)), write(r / "r.json", json.dumps(
            [{"image_id": [1], "bbox": [0, 0, 50, 50], "score": 1}]))), r / "r.json"),
    "pascal corner 1e308": lambda r: (
        pascal(r, dets=write(r / "d.txt", "a 0.9 -1e308 -1e308 1e308 1e308\n")), r / "d.txt"),
    "pascal inf score": lambda r: (
        pascal(r, dets=write(r / "d.txt", "a inf 10 10 100 100\n")), r / "d.txt"),
    "pascal COCO bbox 1e300": lambda r: (
        pascal(r, write(r / "c.json", coco(GOOD_COCO, [{"id": 1, "image_id": 1,
                                                        "bbox": [0, 0, 1e300, 9]}]))),
        r / "c.json"),
    "pascal 4000-character line": lambda r: (
        pascal(r, dets=write(r / "d.txt", f"a 0.9 {LONG} 1 2 3\n")), r / "d.txt"),
    # WIDER FACE
    "wider pickle renamed .mat": lambda r: (
        wider(r, wider_gt_with(r, "wider_easy_val.mat", pickle.dumps([1]))),
        r / "wider_gt" / "wider_easy_val.mat"),
    "wider .mat declaring 4 GB": lambda r: (
        wider(r, wider_gt_with(r, "wider_face_val.mat",
                               mat_file(compressed(doubles((2**29, 1), b"event_list"))))),
        r / "wider_gt" / "wider_face_val.mat"),
    "wider gt a file": lambda r: (wider(r, r / "gt.txt"), r / "gt.txt"),
    "wider gt_list NaN": lambda r: (
        wider(r, nan_gt_list(r)), r / "wider_gt" / "wider_easy_val.mat"),
    "wider count of 5000 digits": lambda r: (
        wider(r), write_pred(r, "p1.txt", f"p1.jpg\n{'9' * 5000}\n")),
    "wider count 10^12": lambda r: (
        wider(r), write_pred(r, "p1.txt", "p1.jpg\n1000000000000\n0 0 9 9 1\n")),
    "wider NaN score": lambda r: (wider(r), write_pred(r, "p1.txt", "p1.jpg\n1\n0 0 9 9 nan\n")),
    "wider negative height": lambda r: (
        wider(r), write_pred(r, "p1.txt", "p1.jpg\n1\n0 0 9 -9 0.5\n")),
    "wider binary predictions": lambda r: (wider(r), write_pred(r, "p1.txt", JUNK)),
    "wider empty predictions": lambda r: (wider(r), write_pred(r, "p1.txt", "")),
    "wider 4000-character line": lambda r: (
        wider(r), write_pred(r, "p1.txt", f"p1.jpg\n1\n0 0 9 9 {LONG}\n")),
    # GLUE
    "glue predictions invalid UTF-8": lambda r: (
        glue(r, write(r / "p.jsonl", JUNK)), r / "p.jsonl"),
    "glue predictions empty": lambda r: (glue(r, write(r / "p.jsonl", "")), r / "p.jsonl"),
    "glue predictions a folder": lambda r: (glue(r, r / "folds"), r / "folds"),
    "glue prediction NaN": lambda r: (
        glue(r, write(r / "p.jsonl", '{"split": "dev", "idx": 0, "prediction": NaN}\n')),
        r / "p.jsonl"),
    "glue prediction of 400 digits (past float)": lambda r: (
        glue(r, write(r / "p.jsonl", '{"split": "dev", "idx": 0, "prediction": 1%s}\n'
                      % ("0" * 400)), "stsb"), r / "p.jsonl"),
    "glue idx of 5000 digits": lambda r: (
        glue(r, write(r / "p.jsonl", '{"split": "dev", "idx": %s, "prediction": 1}\n'
                      % ("9" * 5000))), r / "p.jsonl"),
    "glue nested 100000 deep": lambda r: (
        glue(r, write(r / "p.jsonl", "[" * 100_000 + "\n")), r / "p.jsonl"),
    "glue 4000-character line": lambda r: (glue(r, write(r / "p.jsonl", LONG)), r / "p.jsonl"),
    "glue dev.tsv binary": lambda r: (
        glue(r, write(r / "p.jsonl", '{"split": "dev", "idx": 0, "prediction": 1}\n')),
        write(r / "SST-2" / "dev.tsv", JUNK)),
}


# what the message must say besides the file's name, where the case has a point to make
SAYS = {
    "pascal COCO images not objects": "images[0]: 1: expected an object with id, file_name",
    "pascal COCO image id a string": "images[0].id: '1': expected an integer",
    "pascal COCO annotation without image_id": "annotations[0].image_id: None",
    "pascal COCO duplicate image ids": "images[1].id: 1 again (first in images[0])",
    "pascal .mat declaring 4 GB, compressed": "more than the 64 MiB bound on a MATLAB array",
    "wider .mat declaring 4 GB": "more than the 64 MiB bound on a MATLAB array",
    "pascal .mat cell of 10^9 slots": "more than the 64 MiB bound on a MATLAB array",
    "pascal .mat inflating past the bound": "inflates to more than the 64 MiB bound",
    "pascal .mat nested 40 deep": "nested more than 16 deep",
    "pascal MAT v7.3": "v7.3",
    "fddb ellipse axis >= 2^31": "line 3: major_axis_radius is '3000000000'; expected a number "
                                 "from -131072 to 131072",
    "fddb sizes 1e9 x 1e9": "from 1 to 65535 (JPEG's limit)",
}


def nested_cells(depth: int) -> bytes:
    inner = doubles((1, 1), b"")
    for _ in range(depth):
        inner = matrix(1, (1, 1), b"", inner)
    return inner


def nan_gt_list(root: Path) -> Path:
    mat = scipy.io.loadmat(root / "wider_gt" / "wider_easy_val.mat")
    mat["gt_list"][0, 0][0, 0] = np.array([[np.nan]])
    scipy.io.savemat(root / "wider_gt" / "wider_easy_val.mat",
                     {k: v for k, v in mat.items() if not k.startswith("__")})
    return root / "wider_gt"


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_gets_a_clean_error(case: str, root: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv, named = CASES[case](root)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(named) in err and SAYS.get(case, "") in err
    assert "Traceback" not in err + out and "Warning" not in err + out
    assert len(err) < len(str(named)) + 400  # junk is quoted cut short, never whole


def test_hostile_but_valid_numbers_score_without_warning_text(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rectangles past the largest float are clipped as the official tool clips them; WIDER
    scores of +-1e308 normalise to inf / NaN as MATLAB's arithmetic does, silently."""
    write(root / "fddb.txt", "img_a\n2\n1e308 1e308 1.7e308 1.7e308 0.5\n-1e308 -1e308 1.7e308 "
                             "1.7e308 0.4\n")
    write_pred(root, "p1.txt", "p1.jpg\n2\n0 0 9 9 1e308\n40 0 9 9 -1e308\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main(fddb(root)) == 0
        assert main(wider(root)) == 0
    out, err = capsys.readouterr()
    assert "fddb.tpr_disc@1000 = 0\n" in out  # the whole-image box covers the face by < 0.5
    assert "wider.easy.ap = 0.000000" in out  # (1e308 - lo) / (hi - lo) = inf / inf: NaN
    assert "overflow" not in err and "invalid value" not in err


def test_nit_1_is_labelled_as_no_calibration(root: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*pascal(root), "--nit", "1", "--json", str(root / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "calibration, nit=1" not in out.replace("no calibration, nit=1", "")
    assert "(no calibration, nit=1)" in out
    names = [c["name"] for c in json.loads((root / "m.json").read_text())["curves"]]
    assert names == ["plain (nit=1)"]


def test_shown_cuts_long_text_with_an_ellipsis() -> None:
    assert shown("abc") == "'abc'"
    cut = shown(LONG)
    assert len(cut) == SHOWN_CHARS and cut.endswith("…") and cut.startswith("'xxx")
    assert shown(list(range(1000))).endswith("…")


def test_mat_checks_refuse_before_scipy_allocates(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is enforced on the headers alone: scipy.io.loadmat is never reached."""
    def no_loadmat(*args, **kwargs):
        raise AssertionError("loadmat called")

    monkeypatch.setattr(scipy.io, "loadmat", no_loadmat)
    path = write(tmp_path / "big.mat", mat_file(compressed(doubles((2**29, 1), b"Annotations"))))
    with pytest.raises(Exception, match=r"big\.mat: .*'Annotations' \(536870912 x 1 double\): "
                                        r"4,294,967,296 bytes declared, more than the 64 MiB"):
        matfile.load_mat(path, "unreadable")


def test_mat_checks_pass_scipy_written_files(tmp_path: Path) -> None:
    """Every class scipy writes (numeric, complex, char, logical, sparse, cell, struct), in both
    byte orders and compressed or not, loads exactly as loadmat loads it."""
    import scipy.sparse

    cell = np.empty((2, 1), object)
    cell[0, 0], cell[1, 0] = np.arange(3.0), "text"
    data = {"a": np.arange(12, dtype=np.int16).reshape(3, 4), "b": np.array([1 + 2j]),
            "c": "a string", "d": np.array([True, False]), "e": scipy.sparse.eye(3).tocsc(),
            "f": cell, "g": {"name": "x", "rows": np.ones((2, 6))}, "h": np.zeros((0, 4))}
    for compress in (False, True):
        path = tmp_path / f"all{compress}.mat"
        scipy.io.savemat(path, data, do_compression=compress)
        ours = matfile.load_mat(path, "unreadable")
        theirs = scipy.io.loadmat(path)
        assert ours.keys() == theirs.keys()
        assert np.array_equal(ours["a"], theirs["a"]) and ours["c"] == theirs["c"]


@pytest.mark.skipif(not (SHARED_DATA / "wider_val_gt").is_dir(),
                    reason="the official WIDER FACE val ground truth is not beside the project")
def test_official_wider_ground_truth_still_loads() -> None:
    gt = load_wider_mat(SHARED_DATA / "wider_val_gt")
    assert len(gt.events) == 61 and len(gt.boxes) == 3226
