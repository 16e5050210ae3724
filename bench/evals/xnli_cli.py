"""`bench eval xnli`: XNLI accuracy per language and on average from a model's per-example
predictions, as the harness stores them (`samples_xnli_<protocol>.jsonl`; see
bench/evals/xnli.py for the protocols)."""

import argparse
import json
from pathlib import Path

from bench.errors import UserError
from bench.evals.glue_cli import add_prediction_args
from bench.evals.io import check_outputs, json_safe, shown
from bench.util.atomic import write_text


def add_parser(evaluators: argparse._SubParsersAction) -> None:
    description = (
        "XNLI accuracy (fractions) of per-example predictions: <lang>.acc on each language's "
        "test split, <lang>.dev_acc on its dev split, and their unweighted means over the "
        "languages in the file, avg and dev_avg. Gold data: the official XNLI-1.0 folder "
        "(xnli.dev.tsv, xnli.test.tsv) or Hugging Face's xnli parquet (<lang>/validation-*, "
        '<lang>/test-*). Predictions: JSON lines {"split": "test.de", "idx": 0, "prediction": '
        '2}, one per example of each split named (splits dev.<lang> and test.<lang>; idx = the '
        "0-based row of that language in its split; 0 entailment, 1 neutral, 2 contradiction), "
        "as the training harness writes them (samples_xnli_zero_shot.jsonl, ...).")
    p = evaluators.add_parser("xnli", help="XNLI accuracy of per-example predictions",
                              description=description)
    p.add_argument("--data", help="folder holding XNLI-1.0/ (the official archive unpacked) or "
                   "Hugging Face's xnli folders (ar/, bg/, ...)")
    p.add_argument("--xnli", help="the folder of xnli.dev.tsv and xnli.test.tsv, where it is "
                   "not <data>/XNLI-1.0")
    add_prediction_args(p)
    p.set_defaults(func=run)


def _parsed(splits: list[str], path: Path) -> dict[str, tuple[str, str]]:
    """split -> ("dev" or "test", language) of every split the predictions name."""
    from bench.evals.xnli import parse_split

    out = {}
    for split in splits:
        parsed = parse_split(split)
        if parsed is None:
            raise UserError(f"{path}: predictions for split {shown(split)}; expected dev.<lang> "
                            "or test.<lang> with an XNLI language")
        out[split] = parsed
    return out


def run(args: argparse.Namespace) -> int:
    from bench.evals.glue import read_predictions
    from bench.evals.glue_cli import aligned
    from bench.evals.xnli import SPEC, load_eval_splits, xnli_metrics

    if args.data is None and args.xnli is None:
        raise UserError("give --data (or --xnli): the folder holding the XNLI gold data")
    check_outputs(args.json)
    path = Path(args.predictions)
    predictions = read_predictions(path)
    parsed = _parsed(list(predictions), path)
    layout, data = load_eval_splits(args.data, args.xnli, args.layout,
                                    list(dict.fromkeys(lang for _, lang in parsed.values())))
    splits = {}
    for split, by_idx in predictions.items():
        kind, lang = parsed[split]
        gold = data[lang][kind]
        splits[split] = ([e.label for e in gold], aligned(SPEC, split, gold, by_idx, path))
    metrics = xnli_metrics(splits)
    counts = {s: len(labels) for s, (labels, _) in splits.items()}
    print(f"xnli: {layout} data; " + ", ".join(f"{s} {n} examples" for s, n in counts.items()))
    for name, value in metrics.items():
        print(f"{name} = {value:.4f}")
    if args.json:
        write_text(Path(args.json), json.dumps(json_safe(
            {"protocol": "xnli accuracy", "layout": layout, "data": args.data or args.xnli,
             "predictions": str(path), "n": counts, "metrics": metrics}), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
