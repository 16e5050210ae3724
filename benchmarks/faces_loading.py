"""SSH training images per second with the batches built inline vs in loader workers, side by
side in one process.

- `demo`: the demo suite's shape (suites/demo/faces.yaml: batch 2, 240 / 400, width 0.25) on the
  demo faces: loading alone, and loading plus a training step (forward, backward, SGD);
- `wider`: loading alone at the published training size (1200 / 1600, batch 4) on WIDER-sized
  JPEGs (the demo images enlarged to 1200 x 1600 and written to a temporary WIDER layout).

Every configuration runs `--steps` steps per round, in the same interleaved rounds after a
warm-up round; each round starts its loader afresh at a new step (worker start-up included), so
no configuration profits from batches read ahead while another was timed.

    python benchmarks/faces_loading.py [--workers 0,2] [--rounds 5] [--steps 20] [--no-wider]
"""

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

from bench.faces.anchors import module_anchors
from bench.faces.batches import TrainingBatches
from bench.faces.config import FacesConfig
from bench.faces.data import WiderTrainSet
from bench.faces.model import build_ssh
from bench.faces.targets import border_for, ssh_loss
from bench.training.distributed import World
from bench.training.loading import StepLoader
from bench.util.timing import interleaved

DEMO = Path(os.environ.get("BENCH_DATA", Path.home() / ".cache" / "headless-bench")) / "demo-faces"


def wider_sized(demo: WiderTrainSet, out: Path, n: int) -> Path:
    """A WIDER layout of `n` demo images enlarged to 1200 x 1600 (JPEG quality 90)."""
    lines = []
    for i in range(n):
        image, _ = demo.load_image(i)
        event, name = demo.keys[i]
        (out / "WIDER_train" / "images" / event).mkdir(parents=True, exist_ok=True)
        big = cv2.resize(image, (1600, 1200), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(out / "WIDER_train" / "images" / event / f"{name}.jpg"), big,
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines += [f"{event}/{name}.jpg", "1", "100 100 200 200 0 0 0 0 0 0"]
    (out / "wider_face_split").mkdir(parents=True, exist_ok=True)
    (out / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    return out


def rounds_of(batches: TrainingBatches, workers: int, steps: int,
              work: Callable[[object], None]) -> Callable[[], None]:
    """One timed round: a fresh loader at the next unseen step, `steps` steps through `work`."""
    start = [0]

    def run() -> None:
        with StepLoader(batches, workers) as loader:
            for k in range(start[0], start[0] + steps):
                work(loader(k))
        start[0] += steps

    return run


def training_step(cfg: FacesConfig) -> Callable[[object], None]:
    """Forward, backward and an SGD step of the configured SSH on one batch."""
    torch.manual_seed(0)
    model = build_ssh(cfg.model).train()
    specs = cfg.model.module_specs()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step(batch: object) -> None:
        outputs = model(batch.images)
        loss, _ = ssh_loss(outputs, module_anchors(outputs, specs), batch.boxes, batch.sizes,
                           True, None, border_for(specs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--no-wider", action="store_true", help="skip the 1200 x 1600 set")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    demo = WiderTrainSet(DEMO)
    demo_cfg = FacesConfig(data={"root": str(DEMO)}, model={"width": 0.25},
                           train={"batch_size": 2, "short": 240, "long_max": 400})
    demo_batches = TrainingBatches(demo, len(demo), demo_cfg.train, 0, World())
    step = training_step(demo_cfg)
    tasks = {}
    for w in workers:
        tasks["demo load", w] = rounds_of(demo_batches, w, args.steps, lambda _: None)
        tasks["demo train", w] = rounds_of(demo_batches, w, args.steps, step)
    per_step = {"demo load": 2, "demo train": 2}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_wider:
            root = wider_sized(demo, Path(tmp), 32)
            wider_cfg = FacesConfig(data={"root": str(root)},
                                    train={"batch_size": 4, "short": 1200, "long_max": 1600})
            wider = TrainingBatches(WiderTrainSet(root), 32, wider_cfg.train, 0, World())
            for w in workers:
                tasks["wider load", w] = rounds_of(wider, w, args.steps, lambda _: None)
            per_step["wider load"] = 4
        timings = interleaved(tasks, warmup=1, repeats=args.rounds)
    print(f"{os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads; images/s, median "
          f"[IQR] of {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'':<12}" + "".join(f"{f'{w} workers':>24}" for w in workers))
    for what, images in per_step.items():
        cells = []
        for w in workers:
            t = timings[what, w]
            rate = 1000 * images * args.steps
            cells.append(f"{rate / t.median:>10.1f} [{rate / t.q3:.1f}-{rate / t.q1:.1f}]")
        print(f"{what:<12}" + "".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
