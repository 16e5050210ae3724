"""`bench eval wider`: score a folder of per-image prediction files against the official WIDER FACE
val ground truth, with the official MATLAB tool's rules (see bench.evals.wider)."""

import argparse
import sys
import warnings

from bench.evals.io import check_outputs, write_outputs
from bench.evals.wider import SETTINGS


def add_parser(evaluators: argparse._SubParsersAction) -> None:
    p = evaluators.add_parser(
        "wider", help="WIDER FACE val AP (easy / medium / hard), as the official MATLAB tool",
        description="WIDER FACE val AP per setting, computed with the official MATLAB tool's "
        "rules (sorted files, one global score normalisation, +1-pixel IoU, ignore regions, "
        "1000 thresholds, VOC all-points AP). Predictions: <pred>/<event>/<image name>.txt "
        "holding the image name, the box count, then one 'x y w h score' line per box; a "
        "missing file counts as no detections.")
    p.add_argument("--gt", required=True, help="folder with wider_face_val.mat and "
                   "wider_{easy,medium,hard}_val.mat (eval_tools/ground_truth)")
    p.add_argument("--pred", required=True, help="prediction folder, one file per image")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                   help="settings to score (default: all three)")
    p.add_argument("--json", help="also write the APs and the 1000-point PR curves here")
    p.add_argument("--plot", help="also draw the PR curves here (.svg, .png or .pdf)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.evals.wider import WiderEval, load_wider_mat, read_wider_predictions

    check_outputs(args.json, args.plot)
    gt = load_wider_mat(args.gt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = read_wider_predictions(args.pred, gt)
        evaluator = WiderEval(gt, predictions, args.settings)
        metrics = evaluator.summarize()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    for setting, ap in metrics.items():
        print(f"wider.{setting}.ap = {ap:.6f}")
    curves = [evaluator.curves[s] for s in args.settings]
    write_outputs({"gt": str(args.gt), "pred": str(args.pred), "images": len(gt.boxes),
                   "images_with_predictions": len(predictions),
                   "metrics": {f"{s}.ap": ap for s, ap in metrics.items()}},
                  curves, "WIDER FACE val", args.json, args.plot)
    return 0
