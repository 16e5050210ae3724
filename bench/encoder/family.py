"""The encoder family: pretrain a BERT masked LM under the run's budget, then hand the encoder to
its evaluators as a `PairClassifier` (GLUE fine-tunes and scores it).

What needs torch (a step's price, `costs.py`; a run, `run.py`) sits behind one lazy import, so
validating a suite reads this module without importing torch."""

from typing import Any

from bench.contract import Family, RunContext, RunSpec, StepCost
from bench.encoder.config import EncoderConfig
from bench.evals.adapters import PairClassifier


class EncoderFamily:
    name = "encoder"
    item_unit = "tokens"
    text_layout: str | None = "mlm"
    config_model = EncoderConfig
    adapters = (PairClassifier,)
    default_metrics = ["glue.score", "val.mlm_nll", "val.mlm_acc", "model.total_params"]
    report_curve = "curve.val_mlm_nll"
    checkpoint_form = "a saved Hugging Face BERT folder (config.json, weights, tokenizer)"
    # held-out scores overall and per language (`val.<lang>.*`); the paper counts trained
    # parameters as a cost, the other counts and CWT's negatives are settings (see
    # Family.higher_is_better)
    higher_is_better = {"val.mlm_nll": False, "val.*.mlm_nll": False, "val.mlm_acc": True,
                        "val.*.mlm_acc": True, "val.loss": False, "val.*.loss": False,
                        "model.total_params": False, "model.*_params": None, "cwt.*": None}

    def stages(self, config: EncoderConfig) -> list[str]:
        return config.stages()

    def step_costs(self, config: EncoderConfig, processes: int = 1) -> dict[str, StepCost]:
        from bench.encoder.costs import step_costs

        return step_costs(config, processes)

    def inputs(self, config: EncoderConfig) -> dict[str, str]:
        from bench.text.data import text_inputs

        return text_inputs(config.data)

    def derived_inputs(self, config: EncoderConfig) -> dict[str, dict[str, str]]:
        from bench.text.shards import shards_input

        return shards_input(config.data, "mlm")

    def data_root(self, config: EncoderConfig) -> str | None:
        return None

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        from bench.encoder.run import execute

        execute(run, ctx)

    def scoring(self, config: EncoderConfig) -> dict[str, Any]:
        """The precision GLUE fine-tunes the encoder in (the loop's, bf16 on a GPU by default)."""
        return {"train": {"precision": config.train.precision}}

    def score(self, run: RunSpec, ctx: RunContext) -> None:
        from bench.encoder.run import score

        score(run, ctx)


FAMILY: Family[EncoderConfig] = EncoderFamily()
