"""`bench eval glue`: a GLUE task's dev-set metrics from a model's per-example predictions, as
the CWT paper reports them (see bench/evals/glue.py for the protocol)."""

import argparse
import json
from pathlib import Path

from bench.errors import UserError
from bench.evals.adapters import Example, TaskSpec
from bench.evals.glue import LAYOUTS, TASKS
from bench.evals.io import check_outputs, json_safe, shown
from bench.util.atomic import write_text

_SHOWN = 5  # idx listed in an error about missing or unknown examples


def add_parser(evaluators: argparse._SubParsersAction) -> None:
    description = (
        "GLUE dev-set metrics (fractions) of per-example predictions: CoLA Matthews correlation, "
        "STS-B Pearson and Spearman, accuracy (and F1 for MRPC and QQP) elsewhere; MNLI over "
        "matched + mismatched dev concatenated, and each. 'score' is the CWT paper's headline "
        "metric. Gold data: the official GLUE folders (CoLA/dev.tsv, ...) or Hugging Face's "
        "nyu-mll/glue parquet (cola/validation-*.parquet, ...). Predictions: JSON lines "
        '{"split": "dev", "idx": 0, "prediction": 1}, one per dev example (idx = the 0-based '
        "data row of the split file), as the training harness writes them.")
    p = evaluators.add_parser("glue", help="GLUE dev-set metrics of per-example predictions",
                              description=description)
    p.add_argument("--data", required=True,
                   help="folder holding the task folders (official CoLA/, MRPC/, ... or "
                   "Hugging Face's cola/, mrpc/, ...)")
    p.add_argument("--task", required=True, choices=list(TASKS), help="the GLUE task")
    add_prediction_args(p)
    p.set_defaults(func=run)


def add_prediction_args(p: argparse.ArgumentParser) -> None:
    """The options every command scoring a GLUE-style prediction file takes: the gold data's
    layout, the predictions and the optional JSON output."""
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="tsv (official), parquet (Hugging Face), or auto (default: tsv where "
                   "the official folder exists)")
    p.add_argument("--predictions", required=True, help="JSON lines, one prediction per line")
    p.add_argument("--json", help="write metrics, counts and layout to this file")


def _listed(idxs: list[int]) -> str:
    return ", ".join(map(shown, idxs[:_SHOWN])) + (", ..." if len(idxs) > _SHOWN else "")


def aligned(spec: TaskSpec, split: str, gold: list[Example], predictions: dict[int, int | float],
           path: Path) -> list[int | float]:
    """The predictions in the order of `gold`; exactly one per example, of the task's kind."""
    missing = [e.idx for e in gold if e.idx not in predictions]
    if missing:
        raise UserError(f"{path}: {len(missing)} of the {len(gold)} {split} examples have no "
                        f"prediction (idx {_listed(missing)}); expected one per example")
    unknown = sorted(set(predictions) - {e.idx for e in gold})
    if unknown:
        raise UserError(f"{path}: {len(unknown)} {split} predictions for idx the {split} data "
                        f"does not have ({_listed(unknown)}); expected 0..{len(gold) - 1}")
    values = [predictions[e.idx] for e in gold]
    if spec.is_regression:
        return [float(v) for v in values]
    bad = [e.idx for e, v in zip(gold, values, strict=True) if v not in range(spec.num_labels)]
    if bad:
        raise UserError(f"{path}: {split} idx {bad[0]}: prediction {shown(predictions[bad[0]])} "
                        f"({len(bad)} such); expected a {spec.name} class id "
                        f"0..{spec.num_labels - 1}")
    return [int(v) for v in values]


def run(args: argparse.Namespace) -> int:
    from bench.evals.glue import evaluate_task, find_layout, read_predictions, read_split

    check_outputs(args.json)
    spec = TASKS[args.task]
    layout, folder = find_layout(args.data, spec.name, args.layout)
    path = Path(args.predictions)
    predictions = read_predictions(path)
    unknown = [s for s in predictions if s not in spec.dev_splits]
    if unknown:
        raise UserError(f"{path}: predictions for split {shown(unknown[0])}; expected only "
                        f"{spec.name}'s dev split(s) {', '.join(spec.dev_splits)}")
    dev = {}
    for split in spec.dev_splits:
        gold = read_split(args.data, spec.name, split, layout)
        dev[split] = ([e.label for e in gold],
                      aligned(spec, split, gold, predictions.get(split, {}), path))
    metrics = evaluate_task(spec.name, dev)
    counts = {s: len(labels) for s, (labels, _) in dev.items()}
    print(f"glue {spec.name}: {layout} data in {folder}; "
          + ", ".join(f"{s} {n} examples" for s, n in counts.items()))
    for name, value in metrics.items():
        note = f"  ({spec.score}, the CWT paper's headline metric)" if name == "score" else ""
        print(f"{spec.name}.{name} = {value:.4f}{note}")
    if args.json:
        write_text(Path(args.json), json.dumps(json_safe(
            {"protocol": "glue dev (CWT paper)", "task": spec.name, "layout": layout,
             "data": str(folder), "predictions": str(path), "n": counts,
             "score_metric": spec.score, "metrics": metrics}), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
