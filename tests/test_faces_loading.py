"""SSH's training batches built in loader workers and split over processes: the same images,
padding, sampling, loss and gradients whatever the number of workers or processes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.faces.anchors import module_anchors
from bench.faces.batches import TrainingBatch, TrainingBatches
from bench.faces.config import FacesConfig
from bench.faces.data import WiderTrainSet, resize_for_training, resized_shape, training_scale
from bench.faces.model import build_ssh
from bench.faces.targets import border_for, image_generators, ssh_loss
from bench.training.distributed import World
from bench.training.loading import StepLoader

SEED = 3


def config(root: Path, ohem: bool = True) -> FacesConfig:
    return FacesConfig(data={"root": str(root)}, model={"width": 0.125},
                       train={"batch_size": 4, "short": 160, "long_max": 240, "ohem": ohem})


def batches(root: Path, cfg: FacesConfig, world: World | None = None) -> TrainingBatches:
    data = WiderTrainSet(root)
    return TrainingBatches(data, len(data), cfg.train, SEED, world or World())


def equal(a: TrainingBatch, b: TrainingBatch) -> bool:
    return (torch.equal(a.images, b.images) and a.sizes == b.sizes and a.step == b.step
            and a.first == b.first and len(a.boxes) == len(b.boxes)
            and all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True)))


def test_resized_shape_is_what_cv2_resize_gives():
    rng = np.random.default_rng(0)
    for h, w in rng.integers(20, 700, size=(200, 2)).tolist():
        scale = training_scale(h, w, 160, 240)
        resized, _, _ = resize_for_training(np.zeros((h, w, 3), np.uint8), np.zeros((0, 4)),
                                            160, 240)
        assert resized.shape[:2] == resized_shape(h, w, scale)


def test_batches_from_workers_and_after_a_restart_are_the_inline_ones(faces_root):
    data = batches(faces_root, config(faces_root))
    inline = [data[k] for k in range(6)]
    with StepLoader(data, 2) as loader:
        assert all(equal(loader(k), inline[k]) for k in range(6))
        assert all(equal(loader(k), inline[k]) for k in range(3, 6))  # resumed at step 3
    assert len({b.images.shape for b in inline}) > 1  # shapes follow the images


def test_each_process_pads_to_the_whole_batch_and_the_shares_make_it_up(faces_root):
    cfg = config(faces_root)
    full = batches(faces_root, cfg)
    halves = [batches(faces_root, cfg, World(rank, 2)) for rank in (0, 1)]
    unequal = 0
    for step in range(8):
        whole, parts = full[step], [half[step] for half in halves]
        assert [p.first for p in parts] == [0, 2]
        assert torch.equal(torch.cat([p.images for p in parts]), whole.images)
        assert parts[0].sizes + parts[1].sizes == whole.sizes
        own = [tuple(-(-max(s[d] for s in p.sizes) // 32) * 32 for d in (0, 1)) for p in parts]
        unequal += own[0] != own[1]  # a padding per share would differ here
    assert unequal > 0


@pytest.mark.parametrize("ohem", [True, False])
def test_two_half_batches_give_the_full_batch_loss_and_gradients(faces_root, ohem):
    cfg = config(faces_root, ohem)
    specs = cfg.model.module_specs()
    torch.manual_seed(0)
    model = build_ssh(cfg.model)
    with torch.no_grad():  # face scores that vary between anchors, as in a trained model
        for head in model.heads.values():
            head.cls.weight.mul_(100)
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(batch: TrainingBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = model(batch.images)
        generators = None if ohem else image_generators(SEED, batch.step, batch.positions())
        loss, _ = ssh_loss(outputs, module_anchors(outputs, specs), batch.boxes, batch.sizes,
                           ohem, generators, border_for(specs))
        return loss.detach(), list(torch.autograd.grad(loss, params))

    whole = batches(faces_root, cfg)
    step = 2
    picks, _ = whole.picks(step)  # both halves alone would be padded smaller than the whole
    assert whole.padded_shape(picks[:2]) != whole.padded_shape(picks) != whole.padded_shape(
        picks[2:])
    full, full_grads = loss_and_grads(whole[step])
    shares = [loss_and_grads(batches(faces_root, cfg, World(rank, 2))[step]) for rank in (0, 1)]
    assert (shares[0][0] + shares[1][0]) / 2 == pytest.approx(full.item(), rel=1e-6)
    for k, grad in enumerate(full_grads):  # measured: within 1e-6 (0.12 with one generator)
        mean = (shares[0][1][k] + shares[1][1][k]) / 2
        assert (mean - grad).norm() <= 1e-4 * grad.norm()


def test_sampling_generators_are_per_image_and_keyed_by_position():
    draw = [torch.randperm(1000, generator=g)[:5] for g in image_generators(1, 2, range(4))]
    again = [torch.randperm(1000, generator=g)[:5] for g in image_generators(1, 2, range(2, 4))]
    assert torch.equal(draw[2], again[0]) and torch.equal(draw[3], again[1])
    assert not torch.equal(draw[0], draw[1])
    other_step = torch.randperm(1000, generator=image_generators(1, 3, [0])[0])[:5]
    assert not torch.equal(draw[0], other_step)


def test_an_unreadable_image_is_named_when_the_batches_open(faces_root, tmp_path):
    root = tmp_path / "wider"
    (root / "WIDER_train" / "images" / "0--a").mkdir(parents=True)
    (root / "wider_face_split").mkdir()
    (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text(
        "0--a/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    (root / "WIDER_train" / "images" / "0--a" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"x\.jpg: image missing or unreadable .*bbx_gt\.txt"):
        batches(root, config(root))


def test_evaluation_reads_images_in_workers_and_detects_the_same(faces_root):
    from bench.faces.data import read_image
    from bench.faces.detector import SSHDetector
    from bench.faces.inference import detect_scales, single_scale
    from bench.faces.model import to_input

    val = WiderTrainSet(faces_root, "val")
    paths = [val.path(i) for i in range(4)]
    cfg = config(faces_root)
    torch.manual_seed(0)
    model = build_ssh(cfg.model).eval()
    specs, cpu = cfg.model.module_specs(), torch.device("cpu")
    direct = []
    for path in paths:  # one image at a time, read in the loop
        image = read_image(path, "val")
        scale = single_scale(*image.shape[:2], 96, 160)
        direct.append(detect_scales(lambda x, m: model(x, m), to_input(image), specs,
                                    [scale]).numpy())
    for workers in (0, 2):
        dets, ms = SSHDetector(model, specs, cpu, False, workers).detect(paths, "single",
                                                                         (96, 160), "val")
        assert ms.n == 4 and len(dets) == 4
        assert all(np.array_equal(a, b) for a, b in zip(dets, direct, strict=True))
    missing = [paths[0], faces_root / "missing.jpg"]
    with pytest.raises(UserError, match=r"missing\.jpg: image missing or unreadable \(listed in "
                                        r"the ground truth\)"):
        SSHDetector(model, specs, cpu, False, 2).detect(missing, "single", (96, 160),
                                                        "the ground truth")
