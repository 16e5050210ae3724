"""A third study family on synthetic data: the whole family contract in one short module.

Training fits a linear model to random rows; evaluation hands the GLUE evaluator a
`PairClassifier` that classifies by word counts, so GLUE's own loading, scoring and epoch
selection run on it.
"""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.contract import Family, RunContext, RunSpec, Stage, StepCost, loop_options
from bench.evals.adapters import Example, FinetuneConfig, Finetuned, PairClassifier, TaskSpec
from bench.schema import Int, LoopConfig, OptimConfig


class ToyConfig(LoopConfig):
    """The loop settings (optimiser, precision, checkpoints) and the model's width and batch."""

    optim: OptimConfig = OptimConfig(lr=0.05)
    width: Int = Field(8, gt=0)
    batch_size: Int = Field(16, gt=0)


class WordCounts:
    """Each epoch counts the words of one more part of the training examples per label, then
    predicts the label whose words the sentence shares most."""

    def finetune(self, task: TaskSpec, train: Sequence[Example],
                 dev: Mapping[str, Sequence[Example]], settings: FinetuneConfig, *, seed: int,
                 scratch: Path,
                 score_epoch: Callable[[int, dict[str, list[float]]], dict[str, float]]
                 ) -> Finetuned:
        counts: list[Counter[str]] = [Counter() for _ in range(task.num_labels)]

        def label(ex: Example) -> int:
            words = ex.text_a.split()
            return max(range(task.num_labels), key=lambda c: sum(counts[c][w] for w in words))

        part, epochs = -(-len(train) // settings.epochs), []
        for epoch in range(1, settings.epochs + 1):
            for ex in train[(epoch - 1) * part: epoch * part]:
                counts[int(ex.label)].update(ex.text_a.split())
            guess: dict[str, list[float]] = {split: [label(ex) for ex in rows]
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
    # It records val.mse; the report tests write other val.* metrics into its stores, which
    # point neither way.
    higher_is_better = {"val.mse": False, "val.*": None}
    report_curve = "curve.train_loss"
    checkpoint_form = "a toy weights file (torch.save of the linear model's state dict)"

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
                        items=len, seed=run.seed, **loop_options(cfg, ctx.device)))
        if ctx.main:
            _score(model, cfg, ctx, run.seed)

    def scoring(self, config: ToyConfig) -> dict[str, Any]:
        return {"width": config.width}

    def score(self, run: RunSpec, ctx: RunContext) -> None:
        """The linear model saved in the checkpoint file, scored as a trained one is."""
        cfg: ToyConfig = run.config
        model = torch.nn.Linear(cfg.width, 1, bias=False)
        assert run.variant.checkpoint is not None
        model.load_state_dict(torch.load(run.variant.checkpoint, weights_only=True))
        _score(model, cfg, ctx, run.seed)


def _score(model: torch.nn.Linear, cfg: ToyConfig, ctx: RunContext, seed: int) -> None:
    """The held-out error on rows no training step reads, and the GLUE evaluators' scores."""
    truth = torch.randn(cfg.width, generator=torch.Generator().manual_seed(0))
    unread = torch.Generator().manual_seed(seed * 1_000_003 + 10**9)
    x = torch.randn(cfg.batch_size, cfg.width, generator=unread)
    with torch.no_grad():
        ctx.record({"val.mse": float(F.mse_loss(model(x).squeeze(-1), x @ truth))})
    ctx.evaluate(WordCounts())


FAMILY: Family[ToyConfig] = ToyFamily()
