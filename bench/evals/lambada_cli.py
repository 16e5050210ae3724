"""`bench eval lambada`: score a saved causal-LM directory on LAMBADA through lm-eval, with the
numbers the `lm_eval` command gives on the same directory."""

import argparse
import json
import tempfile
from pathlib import Path

from bench.errors import UserError
from bench.evals.io import check_outputs
from bench.evals.saved_model import load_saved_model
from bench.util.atomic import write_text


def add_parser(evaluators: argparse._SubParsersAction) -> None:
    e = evaluators.add_parser(
        "lambada", help="LAMBADA through lm-eval on a saved model directory",
        description="LAMBADA through lm-eval on a saved model directory; the numbers equal "
        "those of the lm_eval command on the same directory")
    e.add_argument("--model", required=True, help="a saved Hugging Face causal-LM directory")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--path", help="JSON lines, one {'text': ...} per passage")
    source.add_argument("--task", help="an installed lm-eval task whose data is cached locally")
    e.add_argument("--name", default="lambada_local", help="task name given to a local file")
    e.add_argument("--limit", type=int, help="score only the first N passages")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda")
    e.add_argument("--json", help="also write metrics and per-passage outputs to this file")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from bench.evals.lambada import HFScorer, LambadaEvalConfig, evaluate_lambada
    from bench.training.distributed import pick_device

    try:
        cfg = LambadaEvalConfig(path=args.path, task=args.task, name=args.name,
                                limit=args.limit, batch_size=args.batch_size)
    except ValidationError as e:
        raise UserError(f"bench eval lambada: {e.errors()[0]['msg']}") from None
    check_outputs(args.json)
    model_dir = Path(args.model)
    model, tokenizer = load_saved_model(model_dir)
    scorer = HFScorer(model, tokenizer, str(pick_device(args.device)), saved=model_dir)
    with tempfile.TemporaryDirectory() as work:
        result = evaluate_lambada(scorer, cfg, workdir=Path(work))
    for k, v in result.metrics.items():
        print(f"{result.task}.{k} = {v:.6g}")
    print(f"{result.task}.n = {result.n}")
    if args.json:
        write_text(Path(args.json), json.dumps(
            {"task": result.task, "n": result.n, "metrics": result.metrics,
             "samples": result.samples, "lm_eval": result.lm_eval_config}, indent=2,
            default=str) + "\n")
        print(f"wrote {args.json}")
    return 0
