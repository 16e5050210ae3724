"""A third study family on synthetic data: the whole family contract in one short module.

Training fits a linear model to random rows; evaluation hands the GLUE evaluator a
`PairClassifier` that classifies by word counts, so GLUE's own loading, scoring and epoch
selection run on it.
"""

from collections import Counter

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.contract import RunContext, RunSpec, Stage, StepCost
from bench.evals.adapters import Finetuned, PairClassifier
from bench.schema import Int, OptimConfig, Strict


class ToyConfig(Strict):
    width: Int = Field(8, gt=0)
    batch_size: Int = Field(16, gt=0)
    optim: OptimConfig = OptimConfig(lr=0.05)


class WordCounts:
    """Each epoch counts the words of one more part of the training examples per label, then
    predicts the label whose words the sentence shares most."""

    def finetune(self, task, train, dev, settings, *, seed, scratch, score_epoch) -> Finetuned:
        counts = [Counter() for _ in range(task.num_labels)]
        part, epochs = -(-len(train) // settings.epochs), []
        for epoch in range(1, settings.epochs + 1):
            for ex in train[(epoch - 1) * part: epoch * part]:
                counts[int(ex.label)].update(ex.text_a.split())
            guess = {split: [max(range(task.num_labels), key=lambda c, ex=ex: sum(
                counts[c][w] for w in ex.text_a.split())) for ex in rows]
                for split, rows in dev.items()}
            epochs.append(score_epoch(epoch, guess))
        words = sum(len(ex.text_a.split()) for ex in train)  # the words it counted
        return Finetuned(epochs, steps=0, flops=0.0, tokens=words, seconds=0.0)


class ToyFamily:
    name = "toy"
    item_unit = "rows"
    text_layout: str | None = None
    config_model = ToyConfig
    adapters = (PairClassifier,)
    default_metrics = ["glue.score", "val.mse"]
    higher_is_better = {"val.mse": False}
    report_curve = "curve.train_loss"

    def stages(self, config: ToyConfig) -> list[str]:
        return ["train"]

    def step_costs(self, config: ToyConfig, processes: int = 1) -> dict[str, StepCost]:
        return {"train": StepCost(6.0 * config.width * config.batch_size, config.batch_size)}

    def inputs(self, config: ToyConfig) -> dict[str, str]:
        return {}

    def derived_inputs(self, config: ToyConfig) -> dict[str, dict[str, str]]:
        return {}

    def data_root(self, config: ToyConfig) -> str | None:
        return None

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        cfg: ToyConfig = run.config
        torch.manual_seed(run.seed)
        model = torch.nn.Linear(cfg.width, 1, bias=False)
        truth = torch.randn(cfg.width, generator=torch.Generator().manual_seed(0))

        def rows(step: int) -> list[torch.Tensor]:
            g = torch.Generator().manual_seed(run.seed * 1_000_003 + step)
            return [torch.randn(cfg.batch_size, cfg.width, generator=g)]

        def mse(x: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(model(x).squeeze(-1), x @ truth)

        ctx.train(Stage("train", model, list(model.parameters()), cfg.optim, rows, mse,
                        items=len, seed=run.seed))
        if ctx.main:
            with torch.no_grad():
                ctx.record({"val.mse": float(mse(rows(10**9)[0]))})  # rows no step reads
            ctx.evaluate(WordCounts())


FAMILY = ToyFamily()
