"""`bench eval fddb`: the official FDDB ROC from the FDDB-folds files and a detection file."""

import argparse
from pathlib import Path

from bench.errors import UserError
from bench.evals.io import check_outputs, write_outputs

_FOLDS = list(range(1, 11))


def add_parser(evaluators: argparse._SubParsersAction) -> None:
    p = evaluators.add_parser(
        "fddb", help="FDDB discrete and continuous ROC (the official evaluate.cpp protocol)",
        description="FDDB's official discrete and continuous ROC: pixel-mask IoU between the "
        "ellipse faces and the detections, one-to-one matching re-solved at every detection "
        "score, TPR read at a number of false positives (the best TPR with at most that many). "
        "The detection file uses the official layout (per image: name, count, one line per "
        "detection) and lists the evaluated images in the folds' order.")
    p.add_argument("--folds", required=True, type=Path, metavar="DIR",
                   help="the FDDB-folds folder (FDDB-fold-NN.txt, FDDB-fold-NN-ellipseList.txt)")
    p.add_argument("--dets", required=True, type=Path, metavar="FILE",
                   help="detections in the official layout")
    p.add_argument("--kind", choices=["rect", "ellipse"], default="rect",
                   help="detection lines: rect = 'left top width height score' (default), "
                   "ellipse = 'major_radius minor_radius angle center_x center_y score'; "
                   "scored as given, no conversion")
    sizes = p.add_mutually_exclusive_group(required=True)
    sizes.add_argument("--images", type=Path, metavar="DIR",
                       help="folder holding <name>.jpg (FDDB's originalPics): image sizes are "
                       "read from the images")
    sizes.add_argument("--sizes", type=Path, metavar="FILE",
                       help="image sizes as 'name width height' lines, instead of the images")
    p.add_argument("--folds-used", type=int, nargs="+", default=_FOLDS, metavar="N",
                   help="evaluate these folds, in this order (default: all ten)")
    p.add_argument("--fp", type=float, default=1000.0,
                   help="false positives at which the TPR is read (default 1000)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write metrics and both ROCs")
    p.add_argument("--plot", type=Path, metavar="FILE",
                   help="also plot both ROCs (SVG, PNG or PDF by suffix)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.evals.fddb import (
        FDDBEval,
        image_sizes_from_dir,
        read_fddb_detections,
        read_fddb_folds,
        read_image_sizes,
    )

    if len(set(args.folds_used)) != len(args.folds_used):
        raise UserError(f"--folds-used {' '.join(map(str, args.folds_used))}: a fold is repeated")
    if not args.fp >= 0:
        raise UserError(f"--fp {args.fp}: expected a number of false positives >= 0")
    check_outputs(args.json, args.plot)
    annotations = read_fddb_folds(args.folds, args.folds_used)
    names = list(annotations)
    detections = read_fddb_detections(args.dets, args.kind, names)
    if args.images is not None:
        sizes = image_sizes_from_dir(args.images, names)
    else:
        sizes = read_image_sizes(args.sizes)
        missing = [n for n in names if n not in sizes]
        if missing:
            raise UserError(f"{args.sizes}: no size for {len(missing)} evaluated images, "
                            f"e.g. {missing[0]!r}")
    ev = FDDBEval(annotations, detections, sizes, kind=args.kind)
    disc, cont = ev.accumulate()
    metrics = ev.summarize(args.fp)
    for key, value in metrics.items():
        print(f"fddb.{key} = {value:.6g}")
    n_dets = sum(len(d) for d in detections.values())
    print(f"fddb.n_faces = {ev.n_faces}\nfddb.n_images = {len(names)}\n"
          f"({args.kind} detections: {n_dets}; folds {' '.join(map(str, args.folds_used))}; "
          f"TPR = best true-positive rate among ROC points with at most {args.fp:g} FPs)")
    write_outputs({"metrics": metrics, "n_faces": ev.n_faces, "n_images": len(names),
                   "n_detections": n_dets, "kind": args.kind, "folds": args.folds_used,
                   "reading": f"best TPR among ROC points with FP <= {args.fp:g}"},
                  [disc, cont], f"FDDB, {len(names)} images, {args.kind} detections",
                  args.json, args.plot)
    return 0
