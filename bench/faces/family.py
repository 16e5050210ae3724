"""The face-detection family: train SSH under a budget and hand it to the face evaluators
(WIDER FACE, FDDB, Pascal Faces, speed) as a `FaceDetector`.

Budgets count images (or FLOPs, steps, seconds). Training images are resized by the shortest /
longest-side policy and padded together, so a step's shape varies: FLOPs are measured on the
first step of every padded shape, and `bench plan` prices a step at the largest shape the policy
allows (an upper bound).

What needs torch (a step's price, `costs.py`; a run, `run.py`) sits behind one lazy import, so
validating a suite reads this module without importing torch.
"""

from pathlib import Path
from typing import Any

from bench.contract import Family, RunContext, RunSpec, StepCost
from bench.evals.adapters import FaceDetector
from bench.faces.config import FacesConfig

# What only training reads of the model settings: given weights make them irrelevant.
TRAINING_ONLY = {"pretrained", "freeze_conv12"}


class FacesFamily:
    name = "faces"
    item_unit = "images"
    text_layout: str | None = None
    config_model = FacesConfig
    adapters = (FaceDetector,)
    default_metrics = ["wider.single.easy", "wider.single.medium", "wider.single.hard"]
    report_curve = "curve.train_loss"
    checkpoint_form = "an SSH weights file (the state dict a run saves as model.pt)"
    higher_is_better = {"model.*_params": None}  # parameter counts point neither way

    def stages(self, config: FacesConfig) -> list[str]:
        return ["train"]

    def step_costs(self, config: FacesConfig, processes: int = 1) -> dict[str, StepCost]:
        from bench.faces.costs import step_costs

        return step_costs(config, processes)

    def inputs(self, config: FacesConfig) -> dict[str, str]:
        """The training split and the ImageNet weights when used (the paths the reader opens,
        so the other split of a WIDER root is never hashed)."""
        from bench.faces.model import vgg16_source

        root, split = Path(config.data.root), config.data.split
        found = {"data.annotations": str(root / "wider_face_split" /
                                         f"wider_face_{split}_bbx_gt.txt"),
                 "data.images": str(root / f"WIDER_{split}" / "images")}
        weights = config.model.pretrained and vgg16_source(config.model.pretrained)
        return found | ({"model.pretrained": str(weights)} if weights else {})

    def derived_inputs(self, config: FacesConfig) -> dict[str, dict[str, str]]:
        return {}  # images are read as stored

    def data_root(self, config: FacesConfig) -> str:
        """A WIDER root holds the val split too: WIDER FACE scoring defaults to it."""
        return config.data.root

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        from bench.faces.run import execute

        execute(run, ctx)

    def scoring(self, config: FacesConfig) -> dict[str, Any]:
        """The architecture the weights are loaded into and the precision of inference (the
        ImageNet initialisation and what training freezes do not matter to given weights)."""
        return {"model": config.model.model_dump(mode="json", exclude=TRAINING_ONLY),
                "train": {"precision": config.train.precision}}

    def score(self, run: RunSpec, ctx: RunContext) -> None:
        from bench.faces.run import score

        score(run, ctx)


FAMILY: Family[FacesConfig] = FacesFamily()
