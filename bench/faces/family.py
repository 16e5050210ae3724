"""The face-detection family: train SSH under a budget, score it with the WIDER FACE protocol.

Budgets count images (or FLOPs, steps, seconds). Training images are resized by the shortest /
longest-side policy and padded together, so a step's shape varies: FLOPs are measured on the
first step of every padded shape, and `bench plan` prices a step at the largest shape the policy
allows (an upper bound).
"""

from functools import partial
from typing import Any

import numpy as np

from bench.faces.config import (
    FacesConfig,
    FDDBEvalConfig,
    PascalEvalConfig,
    SpeedEvalConfig,
    WiderEvalConfig,
)
from bench.family import StepCost
from bench.timing import Timing, summarize, timed


class FacesFamily:
    name = "faces"
    item_unit = "images"
    config_model = FacesConfig
    eval_models = {"wider": WiderEvalConfig, "fddb": FDDBEvalConfig, "pascal": PascalEvalConfig,
                   "speed": SpeedEvalConfig}
    default_metrics = ["wider.single.easy", "wider.single.medium", "wider.single.hard"]
    report_curve = "curve.train_loss"
    higher_is_better = {f"wider.{m}.{s}": True for m in ("single", "pyramid")
                        for s in ("easy", "medium", "hard")} | {
        f"wider.{m}.ms_per_image": False for m in ("single", "pyramid")}

    def stages(self, config: FacesConfig) -> list[str]:
        return ["train"]

    def step_costs(self, config: FacesConfig, processes: int = 1) -> dict[str, StepCost]:
        """Every share is padded to the global batch's shape: the processes change no cost."""
        from bench.distributed import World, local_part
        from bench.faces.model import build_ssh, ssh_flops

        local_part(config.train.batch_size, current=World(0, processes))

        t = config.train
        side = -(-t.short // t.pad_to) * t.pad_to, -(-t.long_max // t.pad_to) * t.pad_to
        per_image = ssh_flops(_meta(build_ssh, config.model), *side)
        return {"train": StepCost(per_image * t.batch_size, t.batch_size)}

    def inputs(self, config: FacesConfig, evals: list[tuple[str, Any]]) -> dict[str, str]:
        """The training split, every evaluation set, and the ImageNet weights when used (the
        paths each reader opens, so an unused split of a WIDER root is never hashed)."""
        from pathlib import Path

        from bench.faces.model import vgg16_source

        root, split = Path(config.data.root), config.data.split
        found = {"data.annotations": str(root / "wider_face_split" /
                                         f"wider_face_{split}_bbx_gt.txt"),
                 "data.images": str(root / f"WIDER_{split}" / "images")}
        for name, cfg in evals:
            if isinstance(cfg, WiderEvalConfig):
                val = Path(cfg.root or config.data.root)
                found |= {f"evals.{name}.ground_truth": str(val / "eval_tools" / "ground_truth"),
                          f"evals.{name}.images": str(val / "WIDER_val" / "images")}
            elif isinstance(cfg, FDDBEvalConfig):
                found |= {f"evals.{name}.{part}": str(Path(cfg.root) / part)
                          for part in ("FDDB-folds", "originalPics")}
            elif isinstance(cfg, PascalEvalConfig):
                found |= {f"evals.{name}.annotations": cfg.annotations,
                          f"evals.{name}.images": cfg.images}
        weights = config.model.pretrained and vgg16_source(config.model.pretrained)
        return found | ({"model.pretrained": str(weights)} if weights else {})

    def derived_inputs(self, config: FacesConfig) -> dict[str, dict[str, str]]:
        return {}  # images are read as stored

    def execute(self, run: Any, ctx: Any) -> None:
        import torch

        from bench.atomic import save_torch
        from bench.distributed import world
        from bench.faces.anchors import module_anchors
        from bench.faces.batches import TrainingBatch, TrainingBatches
        from bench.faces.data import WiderTrainSet
        from bench.faces.model import build_ssh, load_vgg16_imagenet, parameter_counts
        from bench.faces.targets import border_for, image_generators, ssh_loss
        from bench.loading import StepLoader
        from bench.train import Stage

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
        for name, eval_cfg in run.variant.evals:
            if isinstance(eval_cfg, SpeedEvalConfig):  # every mode in the same timing rounds
                metrics = _speed(model, specs, eval_cfg, device, bf16)
                ctx.record({f"{name}.{k}": v for k, v in metrics.items()})
                ctx.log.info("%s: %s", name, metrics)
                continue
            for mode in eval_cfg.modes:
                curves: dict[str, Any] = {}
                if isinstance(eval_cfg, FDDBEvalConfig):
                    metrics, curves = _score_fddb(model, specs, eval_cfg, mode,
                                                  ctx.dir / f"fddb_detections_{mode}.txt",
                                                  device, bf16, workers)
                elif isinstance(eval_cfg, PascalEvalConfig):
                    metrics, curves = _score_pascal(model, specs, eval_cfg, mode,
                                                    ctx.dir / f"pascal_detections_{mode}.txt",
                                                    device, bf16, workers)
                else:
                    metrics, curves = _score_wider(model, specs, eval_cfg,
                                                   eval_cfg.root or cfg.data.root, mode,
                                                   ctx.dir / f"predictions_{mode}", device, bf16,
                                                   workers)
                ctx.record({f"{name}.{mode}.{k}": v for k, v in metrics.items()})
                for key, curve in curves.items():
                    kind = "roc" if hasattr(curve, "tpr") else "pr"
                    x, y = ((curve.false_positives, curve.tpr) if kind == "roc"
                            else (curve.recall, curve.precision))
                    ctx.record_curve(f"{kind}:{name}.{mode}.{key}", x, y)
                ctx.log.info("%s %s: %s", name, mode, metrics)


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


def _speed(model: Any, specs: dict, cfg: SpeedEvalConfig, device: Any,
           bf16: bool) -> dict[str, float]:
    """ms per image at each maximum input size and mode (the paper's Table 2 on this device):
    `<mode>.<short>x<long>_ms` (the median), with its `.iqr` and `.n`."""
    import torch

    from bench.faces.speed import time_detection

    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    timings = time_detection({"model": (model, specs)}, [tuple(s) for s in cfg.sizes],
                             cfg.modes, device, warmup=cfg.warmup, repeats=cfg.repeats,
                             bf16=bf16, channels_last=cfg.channels_last)
    out: dict[str, float] = {}
    for (_, mode, (short, long)), timing in timings.items():
        out |= timing.metrics(f"{mode}.{short}x{long}_ms")
    return out


def _detect_all(model: Any, specs: dict, images: Any, mode: str, sizes: dict[str, tuple],
                device: Any, bf16: bool, workers: int) -> tuple[list[np.ndarray], Timing]:
    """Detections [x1 y1 x2 y2 score] of every image of `images` (a `DetectionImages`; read by
    `workers` processes ahead of the model), single scale or the pyramid, in original pixels,
    and the ms each image took to detect, summarized (`ms_per_image`: the median over the
    images, after one untimed warm-up detection of the first)."""
    from bench.faces.inference import detect_scales, pyramid_scales, single_scale
    from bench.faces.speed import detector_fn, sync
    from bench.loading import StepLoader, to_device

    model_fn = detector_fn(model, device, bf16)
    out, ms = [], []
    with StepLoader(images, workers, pin_memory=device.type == "cuda") as loader:
        for i in range(len(images)):
            tensor = to_device(loader(i), device)
            h, w = tensor.shape[-2:]
            if mode == "pyramid":
                scales = pyramid_scales(h, w, *sizes["pyramid"])
            else:
                scales = [single_scale(h, w, *sizes["single"])]
            detect = partial(detect_scales, model_fn, tensor, specs, scales,
                             skip_on_largest={"M3"} if mode == "pyramid" else set())
            if i == 0:
                detect()  # untimed warm-up: allocator, kernel choice, caches
            dets, took = timed(detect, sync=lambda: sync(device))
            ms.append(took)
            out.append(dets.float().cpu().numpy())
    return out, summarize(ms)


def _score_wider(model: Any, specs: dict, cfg: WiderEvalConfig, root: str, mode: str,
                 out_dir: Any, device: Any, bf16: bool, workers: int
                 ) -> tuple[dict[str, float], dict]:
    """Detect on every val image, write the predictions in the official per-image format, and
    score them with the official protocol; the metrics and the PR curves."""
    from pathlib import Path

    from bench.evals.wider import WiderEval, load_wider_mat, write_wider_predictions
    from bench.faces.batches import DetectionImages

    listed_in = Path(root) / "eval_tools" / "ground_truth"
    gt = load_wider_mat(listed_in)
    images = Path(root) / "WIDER_val" / "images"
    paths = [images / e / f"{n}.jpg" for e, n in gt.images]
    dets, ms = _detect_all(model, specs, DetectionImages(paths, str(listed_in)), mode,
                           cfg.sizes(), device, bf16, workers)
    predictions = {key: np.c_[d[:, :2], d[:, 2:4] - d[:, :2] + 1, d[:, 4]]
                   for key, d in zip(gt.images, dets, strict=True)}
    write_wider_predictions(out_dir, predictions)
    evaluator = WiderEval(gt, predictions)
    return evaluator.summarize() | ms.metrics("ms_per_image"), evaluator.curves


def _score_fddb(model: Any, specs: dict, cfg: FDDBEvalConfig, mode: str, out_file: Any,
                device: Any, bf16: bool, workers: int) -> tuple[dict[str, float], dict]:
    """Detect on the chosen folds' images, write the official detection file (rectangles), and
    score the discrete and continuous ROC with the official protocol."""
    from pathlib import Path

    from bench.evals.fddb import (
        FDDBEval,
        image_sizes_from_dir,
        read_fddb_folds,
        write_fddb_detections,
    )
    from bench.faces.batches import DetectionImages

    root = Path(cfg.root)
    faces = read_fddb_folds(root / "FDDB-folds", cfg.folds)
    names = list(faces)
    images = root / "originalPics"
    paths = [images / f"{n}.jpg" for n in names]
    dets, ms = _detect_all(model, specs, DetectionImages(paths, str(root / "FDDB-folds")), mode,
                           cfg.sizes(), device, bf16, workers)
    # inclusive corners x1..x2 are drawn by the official tool as round(x)..round(x + w)
    rects = {n: np.c_[d[:, :2], d[:, 2:4] - d[:, :2], d[:, 4]]
             for n, d in zip(names, dets, strict=True)}
    write_fddb_detections(out_file, rects, "rect")
    ev = FDDBEval(faces, rects, image_sizes_from_dir(images, names), kind="rect")
    metrics = ev.summarize(cfg.fp) | ms.metrics("ms_per_image")
    return metrics, {"discrete": ev.disc, "continuous": ev.cont}


def _score_pascal(model: Any, specs: dict, cfg: PascalEvalConfig, mode: str, out_file: Any,
                  device: Any, bf16: bool, workers: int) -> tuple[dict[str, float], dict]:
    """Detect on every annotated image, write the toolbox's detection lines, and score AP with
    the toolbox's rules (calibrated and plain)."""
    from pathlib import Path

    from bench.evals.pascal import Detections, PascalFacesEval, load_gt, write_toolbox_dets
    from bench.faces.batches import DetectionImages

    gt = load_gt(Path(cfg.annotations), None if cfg.format == "auto" else cfg.format)
    keys = list(gt.boxes)
    paths = [Path(cfg.images) / f"{k}.jpg" for k in keys]
    dets, ms = _detect_all(model, specs, DetectionImages(paths, cfg.annotations), mode,
                           cfg.sizes(), device, bf16, workers)
    found = Detections([k for k, d in zip(keys, dets, strict=True) for _ in d],
                       np.concatenate([d[:, 4] for d in dets]) if dets else np.zeros(0),
                       np.concatenate([d[:, :4] for d in dets]) if dets else np.zeros((0, 4)))
    write_toolbox_dets(out_file, found)
    evaluator = PascalFacesEval(gt, found, nit=cfg.nit)
    return evaluator.summarize() | ms.metrics("ms_per_image"), evaluator.curves


FAMILY = FacesFamily()
