"""The causal-LM family: pretrain (softmax or CWT), maybe fine-tune a head, hand the model to its
evaluators as a `ContinuationScorer` (LAMBADA through lm-eval).

What needs torch (a step's price, `costs.py`; a run, `run.py`) sits behind one lazy import, so
validating a suite reads this module without importing torch."""

from typing import Any

from bench.contract import Family, RunContext, RunSpec, StepCost
from bench.evals.adapters import ContinuationScorer
from bench.lm.config import LMConfig


class LMFamily:
    name = "lm"
    item_unit = "tokens"
    text_layout: str | None = "causal"
    config_model = LMConfig
    adapters = (ContinuationScorer,)
    default_metrics = ["lambada.acc", "lambada.ppl", "val.nll"]
    report_curve = "curve.val_nll"
    checkpoint_form = "a saved Hugging Face causal-LM folder (config.json, weights, tokenizer)"
    # held-out losses overall and per language (`val.<lang>.*`) down; parameter counts and
    # CWT's negatives are settings, not scores (see Family.higher_is_better)
    higher_is_better = {"val.nll": False, "val.*.nll": False, "val.loss": False,
                        "val.*.loss": False, "model.*_params": None, "cwt.*": None}

    def stages(self, config: LMConfig) -> list[str]:
        return config.stages()

    def step_costs(self, config: LMConfig, processes: int = 1) -> dict[str, StepCost]:
        from bench.lm.costs import step_costs

        return step_costs(config, processes)

    def inputs(self, config: LMConfig) -> dict[str, str]:
        from bench.text.data import text_inputs

        return text_inputs(config.data)

    def derived_inputs(self, config: LMConfig) -> dict[str, dict[str, str]]:
        from bench.text.shards import shards_input

        return shards_input(config.data, "causal")

    def data_root(self, config: LMConfig) -> str | None:
        """LAMBADA files are named in full: there is no data folder to find them beside."""
        return None

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        from bench.lm.run import execute

        execute(run, ctx)

    def scoring(self, config: LMConfig) -> dict[str, Any]:
        """Nothing: a saved model is scored as `bench eval lambada --model` scores it."""
        return {}

    def score(self, run: RunSpec, ctx: RunContext) -> None:
        from bench.lm.run import score

        score(run, ctx)


FAMILY: Family[LMConfig] = LMFamily()
