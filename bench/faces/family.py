"""The face-detection family: train SSH under a budget and hand it to the face evaluators
(WIDER FACE, FDDB, Pascal Faces, speed) as a `FaceDetector`.

Budgets count images (or FLOPs, steps, seconds). Training images are resized by the shortest /
longest-side policy and padded together, so a step's shape varies: FLOPs are measured on the
first step of every padded shape, and `bench plan` prices a step at the largest shape the policy
allows (an upper bound).
"""

from typing import Any

from bench.contract import Family, RunContext, RunSpec, StepCost
from bench.evals.adapters import FaceDetector
from bench.faces.config import FacesConfig


class FacesFamily:
    name = "faces"
    item_unit = "images"
    text_layout: str | None = None
    config_model = FacesConfig
    adapters = (FaceDetector,)
    default_metrics = ["wider.single.easy", "wider.single.medium", "wider.single.hard"]
    report_curve = "curve.train_loss"
    higher_is_better = {"model.*_params": None}  # parameter counts point neither way

    def stages(self, config: FacesConfig) -> list[str]:
        return ["train"]

    def step_costs(self, config: FacesConfig, processes: int = 1) -> dict[str, StepCost]:
        """Every share is padded to the global batch's shape: the processes change no cost."""
        from bench.faces.model import build_ssh, ssh_flops
        from bench.training.distributed import World, local_part

        local_part(config.train.batch_size, current=World(0, processes))

        t = config.train
        side = -(-t.short // t.pad_to) * t.pad_to, -(-t.long_max // t.pad_to) * t.pad_to
        per_image = ssh_flops(_meta(build_ssh, config.model), *side)
        return {"train": StepCost(per_image * t.batch_size, t.batch_size)}

    def inputs(self, config: FacesConfig) -> dict[str, str]:
        """The training split and the ImageNet weights when used (the paths the reader opens,
        so the other split of a WIDER root is never hashed)."""
        from pathlib import Path

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
        import torch

        from bench.contract import Stage
        from bench.faces.anchors import module_anchors
        from bench.faces.batches import TrainingBatch, TrainingBatches
        from bench.faces.data import WiderTrainSet
        from bench.faces.detector import SSHDetector
        from bench.faces.model import build_ssh, load_vgg16_imagenet, parameter_counts
        from bench.faces.targets import border_for, image_generators, ssh_loss
        from bench.training.distributed import world
        from bench.training.loading import StepLoader
        from bench.util.atomic import save_torch

        cfg: FacesConfig = run.config
        device = ctx.device
        specs = cfg.model.module_specs()
        data = WiderTrainSet(cfg.data.root, cfg.data.split)
        n_images = min(len(data), cfg.data.max_images or len(data))
        batches = TrainingBatches(data, n_images, cfg.train, run.seed, world())
        workers = loader_workers(cfg.data.workers, device)
        torch.manual_seed(run.seed)
        model = build_ssh(cfg.model)
        ctx.provenance["backbone_weights"] = load_vgg16_imagenet(model, cfg.model.pretrained)
        ctx.log.info("backbone weights: %s", ctx.provenance["backbone_weights"])
        model.to(device)
        ctx.record({f"model.{k}_params": float(v) for k, v in parameter_counts(model).items()})
        bf16 = cfg.train.precision == "bf16" or (
            cfg.train.precision == "auto" and device.type == "cuda")

        def loss(batch: TrainingBatch) -> torch.Tensor:
            outputs = model(batch.images)
            generators = (None if cfg.train.ohem else
                          image_generators(run.seed, batch.step, batch.positions()))
            total, _ = ssh_loss(outputs, module_anchors(outputs, specs), batch.boxes,
                                batch.sizes, cfg.train.ohem, generators, border_for(specs))
            return total

        with StepLoader(batches, workers, pin_memory=device.type == "cuda") as loader:
            stage = Stage(
                name="train", model=model,
                parameters=[p for p in model.parameters() if p.requires_grad],
                optim=cfg.train.optim, micro_batches=lambda k: [loader(k).to(device)],
                loss=loss, items=lambda batch: int(batch.images.shape[0]),
                checkpoint_every=cfg.train.checkpoint_every, bf16=bf16,
                compile=cfg.train.compile, seed=run.seed)
            ctx.train(stage)
        if not ctx.main:  # rank 0 alone saves and scores the model
            return
        save_torch(model.state_dict(), ctx.dir / "model.pt")

        model.eval()
        ctx.evaluate(SSHDetector(model, specs, device, bf16, workers))


def _meta(build: Any, model_cfg: Any) -> Any:
    """The network on the meta device: shapes without memory, for pricing a step."""
    import torch

    with torch.device("meta"):
        return build(model_cfg)


def loader_workers(setting: int | None, device: Any) -> int:
    """Processes reading images ahead: the setting, else 4 on a GPU (decoding must keep up with
    it) and none on a CPU, whose cores the model's own kernels already use."""
    if setting is not None:
        return setting
    return 4 if device.type == "cuda" else 0


FAMILY: Family = FacesFamily()
