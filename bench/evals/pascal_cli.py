"""`bench eval pascal`: score a detection file on Pascal Faces as the face-eval toolbox does."""

import argparse
import sys
import warnings
from pathlib import Path

from bench.errors import UserError
from bench.evals.io import check_outputs, write_outputs
from bench.evals.pascal import DEFAULT_NIT, DET_FORMAT, FORMATS, TEXT_FORMAT

MAX_NIT = 20  # every round keeps its boxes: memory grows with nit x detections


def add_parser(evaluators: argparse._SubParsersAction) -> None:
    description = (
        "Pascal Faces AP with the face-eval toolbox's rules (Mathias et al. 2014, plot_AP.py): "
        "faces under 30 px are ignore regions, detections with both sides <= 21 px are dropped, "
        "overlap > 0.5 with +1 areas, all-points AP; with box calibration (--nit, toolbox "
        "default 5) and without (nit 1). Ground truth: the toolbox's .mat "
        f"(Annotations_Face_PASCALLayout_large_fixed.mat), text ('{TEXT_FORMAT}' per line) or "
        f"COCO JSON. Detections: '{DET_FORMAT}' per line, or COCO results (.json).")
    p = evaluators.add_parser("pascal", help="Pascal Faces AP (face-eval toolbox protocol)",
                              description=description)
    p.add_argument("--gt", required=True, help="ground-truth file")
    p.add_argument("--format", choices=FORMATS,
                   help="ground-truth format (default by suffix: .mat, .json = coco, else text)")
    p.add_argument("--dets", required=True, help="detection file")
    p.add_argument("--nit", type=int, default=DEFAULT_NIT,
                   help=f"evaluation rounds of box calibration (default {DEFAULT_NIT}; 1 = none; "
                   f"at most {MAX_NIT})")
    p.add_argument("--coco-check", action="store_true",
                   help="also print pycocotools' AP@0.5 as a cross-check (not the protocol's AP)")
    p.add_argument("--json", help="write metrics, counts and curves to this file")
    p.add_argument("--plot", help="write the PR curves to this figure (.svg, .png, .pdf)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.evals.pascal import PascalFacesEval, coco_ap50, load_dets, load_gt

    if not 1 <= args.nit <= MAX_NIT:
        raise UserError(f"--nit {args.nit}: expected 1 to {MAX_NIT} rounds (1 = no calibration; "
                        f"the toolbox's default is {DEFAULT_NIT})")
    check_outputs(args.json, args.plot)
    gt_path = Path(args.gt)
    gt = load_gt(gt_path, args.format)
    if gt.n_faces == 0:
        raise UserError(f"{gt_path}: no face counts towards recall (none listed, or all are "
                        "ignore regions): expected at least one face of 30 px or more")
    dets = load_dets(Path(args.dets), gt)
    ev = PascalFacesEval(gt, dets, nit=args.nit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev.evaluate()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    metrics = ev.summarize(verbose=True)
    check = None
    if args.coco_check:
        check = coco_ap50(gt, dets)
        print(f"  cross-check: pycocotools AP@0.5 {check['value']:.6f} (COCO conventions, not "
              "the protocol's number)")
    curves = list(ev.curves.values()) if args.nit > 1 else [ev.curves["plain"]]
    write_outputs({"protocol": "pascal-faces (face-eval toolbox)", "gt": str(gt_path),
                   "dets": args.dets, "nit": args.nit, "metrics": metrics, "counts": ev.counts,
                   "cross_check": check}, curves, "Pascal Faces (face-eval protocol)",
                  args.json, args.plot)
    return 0
