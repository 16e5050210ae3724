"""A saved Hugging Face model folder read without running code from it: what `bench eval lambada
--model` scores, and what a reference variant of a text family (`checkpoint:`) names."""

from pathlib import Path
from typing import Any

from bench.errors import UserError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _weights_file(model_dir: Path, named: str) -> Path:
    """The file `from_pretrained` reads the weights from (safetensors first, as it does)."""
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise UserError(f"{named} {model_dir}: no weights (expected one of {', '.join(WEIGHT_FILES)})")


def load_saved_model(model_dir: Path, model_class: Any = None, named: str = "--model"
                     ) -> tuple[Any, Any]:
    """Model (as `model_class`, default a causal LM) and tokenizer of a saved folder: pickled
    weights only as tensors (`weights_only`), no repository code; any failure is a UserError
    naming the file, or the folder as `named` (the option or field that gave it) calls it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.training.checkpoints import describe_load_error

    if not (model_dir / "config.json").is_file():
        raise UserError(f"{named} {model_dir}: not a saved Hugging Face model folder "
                        "(no config.json)")
    weights = _weights_file(model_dir, named)
    try:
        model = (model_class or AutoModelForCausalLM).from_pretrained(
            model_dir, local_files_only=True, weights_only=True, trust_remote_code=False)
    except Exception as err:  # a damaged or planted file: say which, without a traceback
        raise UserError(f"{weights}: cannot load the model: {describe_load_error(err)}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False)
    except Exception as err:
        raise UserError(f"{named} {model_dir}: cannot load the tokenizer: "
                        f"{describe_load_error(err)}") from None
    return model, tokenizer
