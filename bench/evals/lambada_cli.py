"""`bench eval lambada`: score a saved causal-LM directory on LAMBADA through lm-eval, with the
numbers the `lm_eval` command gives on the same directory."""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.evals.io import check_outputs
from bench.util.atomic import write_text

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


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


def _weights_file(model_dir: Path) -> Path:
    """The file `from_pretrained` reads the weights from (safetensors first, as it does)."""
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise UserError(f"--model {model_dir}: no weights (expected one of {', '.join(WEIGHT_FILES)})")


def load_saved_model(model_dir: Path) -> tuple[Any, Any]:
    """Model and tokenizer of a saved directory, read without running code from it: pickled
    weights only as tensors (`weights_only`), no repository code; any failure is a UserError
    naming the file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.training.checkpoints import describe_load_error

    if not (model_dir / "config.json").is_file():
        raise UserError(f"--model {model_dir}: not a saved Hugging Face model directory "
                        "(no config.json)")
    weights = _weights_file(model_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, weights_only=True, trust_remote_code=False)
    except Exception as err:  # a damaged or planted file: say which, without a traceback
        raise UserError(f"{weights}: cannot load the model: {describe_load_error(err)}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False)
    except Exception as err:
        raise UserError(f"--model {model_dir}: cannot load the tokenizer: "
                        f"{describe_load_error(err)}") from None
    return model, tokenizer


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
