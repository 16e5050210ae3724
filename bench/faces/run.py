"""One SSH run: train the detector through the training loop on padded batches of WIDER-layout
images, save it and hand it to the face evaluators as an `SSHDetector` (the family's
`execute`)."""

from pathlib import Path

import torch

from bench.contract import RunContext, RunSpec, Stage, loop_options
from bench.faces.anchors import module_anchors
from bench.faces.batches import TrainingBatch, TrainingBatches
from bench.faces.config import FacesConfig
from bench.faces.data import WiderTrainSet
from bench.faces.detector import SSHDetector
from bench.faces.model import build_ssh, load_ssh_weights, load_vgg16_imagenet, parameter_counts
from bench.faces.targets import border_for, image_generators, ssh_loss
from bench.training.distributed import world
from bench.training.loading import StepLoader
from bench.util.atomic import save_torch


def execute(run: RunSpec, ctx: RunContext) -> None:
    """Build, train and, on the main process, save and score one run."""
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
    loop = loop_options(cfg.train, device)

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
            loss=loss, items=lambda batch: int(batch.images.shape[0]), seed=run.seed, **loop)
        ctx.train(stage)
    if not ctx.main:  # rank 0 alone saves and scores the model
        return
    save_torch(model.state_dict(), ctx.dir / "model.pt")

    model.eval()
    ctx.evaluate(SSHDetector(model, specs, device, loop["bf16"], workers))


def score(run: RunSpec, ctx: RunContext) -> None:
    """Score an SSH weights file (a detector trained elsewhere) with the suite's face
    evaluators, built by the variant's model settings and run as a trained run's detector is;
    trains nothing."""
    assert run.variant.checkpoint is not None  # the runner scores reference variants only
    cfg: FacesConfig = run.config
    model = build_ssh(cfg.model)
    load_ssh_weights(model, Path(run.variant.checkpoint),
                     f"variants.{run.variant.name}.checkpoint")
    ctx.record({f"model.{k}_params": float(v) for k, v in parameter_counts(model).items()})
    model.to(ctx.device).eval()
    ctx.log.info("scoring the SSH weights %s", run.variant.checkpoint)
    ctx.evaluate(SSHDetector(model, cfg.model.module_specs(), ctx.device,
                             cfg.train.autocast_bf16(ctx.device.type),
                             loader_workers(cfg.data.workers, ctx.device)))


def loader_workers(setting: int | None, device: torch.device) -> int:
    """Processes reading images ahead: the setting, else 4 on a GPU (decoding must keep up with
    it) and none on a CPU, whose cores the model's own kernels already use."""
    if setting is not None:
        return setting
    return 4 if device.type == "cuda" else 0
