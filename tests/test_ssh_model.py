"""The SSH network: parameter counts and map sizes derived by hand from the published layer table,
the fixed upsampler, freezing, FLOPs, and the ImageNet weight mapping."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch.nn import functional as F

from bench.errors import UserError
from bench.faces.config import SSHModelConfig
from bench.faces.model import (
    PIXEL_MEANS_BGR,
    build_ssh,
    load_vgg16_imagenet,
    parameter_counts,
    ssh_flops,
    to_input,
)


def conv_params(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


# VGG-16 conv1_1 .. conv5_3, layer by layer.
VGG16_CONVS = [
    conv_params(3, 64, 3),      # conv1_1      1,792
    conv_params(64, 64, 3),     # conv1_2     36,928
    conv_params(64, 128, 3),    # conv2_1     73,856
    conv_params(128, 128, 3),   # conv2_2    147,584
    conv_params(128, 256, 3),   # conv3_1    295,168
    conv_params(256, 256, 3),   # conv3_2    590,080
    conv_params(256, 256, 3),   # conv3_3    590,080
    conv_params(256, 512, 3),   # conv4_1  1,180,160
    conv_params(512, 512, 3),   # conv4_2  2,359,808
    conv_params(512, 512, 3),   # conv4_3
    conv_params(512, 512, 3),   # conv5_1
    conv_params(512, 512, 3),   # conv5_2
    conv_params(512, 512, 3),   # conv5_3
]
CONV12 = sum(VGG16_CONVS[:4])
FC6 = conv_params(512, 4096, 7)
FC7 = conv_params(4096, 4096, 1)
# M1's input: two 1x1 512->128 reductions and the 3x3 128->128 after the sum; the bilinear
# ConvTranspose2d (128 groups of one 4x4 kernel, no bias) is a fixed parameter: in the total,
# not in the trainable count.
FUSION_TRAINED = conv_params(512, 128, 1) * 2 + conv_params(128, 128, 3)
UPSAMPLER = 128 * 4 * 4


def detection_module(c: int, x: int, anchors: int, context: bool = True) -> int:
    if context:
        body = (conv_params(c, x, 3)               # "3x3"
                + conv_params(c, x // 2, 3)        # context dim-reduction
                + conv_params(x // 2, x // 2, 3)   # "5x5"
                + 2 * conv_params(x // 2, x // 2, 3))  # "7x7" (two 3x3)
    else:
        body = conv_params(c, 2 * x, 3)            # one 3x3 conv of the same width 2X
    return body + conv_params(2 * x, 2 * anchors, 1) + conv_params(2 * x, 4 * anchors, 1)


def counts(**overrides) -> dict[str, int]:
    with torch.device("meta"):
        return parameter_counts(build_ssh(SSHModelConfig(**overrides)))


def test_headless_parameter_count_matches_the_layer_table():
    assert sum(VGG16_CONVS) == 14_714_688
    modules = (FUSION_TRAINED + UPSAMPLER + detection_module(128, 128, 2)
               + detection_module(512, 256, 2) * 2)
    assert counts() == {
        "backbone": 14_714_688, "fc": 0, "modules": modules, "total": 14_714_688 + modules,
        "trainable": 14_714_688 + modules - CONV12 - UPSAMPLER}
    assert counts()["total"] == 19_768_420


def test_variant_parameter_counts():
    assert FC6 == 102_764_544 and FC7 == 16_781_312
    full = counts(backbone="vgg16_full")
    assert full["fc"] == FC6 + FC7
    assert full["modules"] == (FUSION_TRAINED + UPSAMPLER + detection_module(128, 128, 2)
                               + detection_module(512, 256, 2) + detection_module(4096, 256, 2))
    assert full["total"] == 151_700_580
    assert counts(modules="m2_only")["total"] == 14_714_688 + detection_module(512, 256, 6)
    no_context = (FUSION_TRAINED + UPSAMPLER + detection_module(128, 128, 2, context=False)
                  + detection_module(512, 256, 2, context=False) * 2)
    assert counts(context=False)["modules"] == no_context
    assert (counts(fusion=False)["modules"]
            == counts()["modules"] - conv_params(512, 128, 1) - UPSAMPLER)
    assert counts(freeze_conv12=False)["trainable"] == counts()["total"] - UPSAMPLER


# (H, W, pool_mode) -> (M1, M2, M3) map sizes. 200 -> 100 -> 50 -> 25 (M1) -> 13|12 -> 7|6;
# 330 -> 165 -> 83|82 -> 42|41 (M1) -> 21|20 -> 11|10: Caffe's ceil rounding vs floor.
MAP_SIZES = {
    (224, 320, "ceil"): ((28, 40), (14, 20), (7, 10)),
    (224, 320, "floor"): ((28, 40), (14, 20), (7, 10)),
    (200, 330, "ceil"): ((25, 42), (13, 21), (7, 11)),
    (200, 330, "floor"): ((25, 41), (12, 20), (6, 10)),
}


@pytest.mark.parametrize(("h", "w", "mode"), list(MAP_SIZES))
@pytest.mark.parametrize("backbone", ["vgg16_headless", "vgg16_full"])
def test_output_shapes_and_strides(h, w, mode, backbone):
    model = build_ssh(SSHModelConfig(width=0.125, pool_mode=mode, backbone=backbone))
    assert model.strides == {"M1": 8, "M2": 16, "M3": 32}
    assert model.sizes == {"M1": (16, 32), "M2": (64, 128), "M3": (256, 512)}
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    for name, size in zip(["M1", "M2", "M3"], MAP_SIZES[h, w, mode], strict=True):
        cls, reg = out[name]
        assert cls.shape == (2, 2 * 2, *size) and reg.shape == (2, 2 * 4, *size)


def test_m2_only_carries_six_anchor_sizes():
    model = build_ssh(SSHModelConfig(width=0.125, modules="m2_only"))
    assert model.strides == {"M2": 16}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert set(out) == {"M2"}
    assert out["M2"][0].shape == (1, 12, 4, 6) and out["M2"][1].shape == (1, 24, 4, 6)


def test_full_backbone_needs_m3():
    with pytest.raises(UserError, match="M3"):
        build_ssh(SSHModelConfig(width=0.125, modules="m2_only", backbone="vgg16_full"))


@pytest.mark.parametrize("backbone", ["vgg16_headless", "vgg16_full"])
def test_skipped_module_is_not_computed(backbone):
    model = build_ssh(SSHModelConfig(width=0.125, backbone=backbone))
    m3_input = model.fc if model.fc is not None else model.m3_pool
    calls = []
    for module in (model.heads["M3"], m3_input):
        module.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), modules={"M1", "M2"})
    assert set(out) == {"M1", "M2"} and calls == []
    with pytest.raises(ValueError, match="M4"):
        model(torch.randn(1, 3, 64, 64), modules={"M4"})


def test_conv1_conv2_frozen():
    model = build_ssh(SSHModelConfig(width=0.125))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"backbone.conv{b}_{i}.{k}" for b in (1, 2) for i in (1, 2)
                      for k in ("weight", "bias")} | {"m1_input.upsample.weight"}
    out = model(torch.randn(1, 3, 64, 64))
    sum(t.sum() for pair in out.values() for t in pair).backward()
    assert model.backbone.conv2_2.weight.grad is None
    assert model.backbone.conv3_1.weight.grad is not None
    unfrozen = build_ssh(SSHModelConfig(width=0.125, freeze_conv12=False))
    assert unfrozen.backbone.conv1_1.weight.requires_grad


def test_bilinear_upsampler_is_fixed_and_bilinear():
    up = build_ssh(SSHModelConfig(width=0.125)).m1_input.upsample
    assert up.weight.shape == (16, 1, 4, 4) and not up.weight.requires_grad
    with torch.no_grad():
        flat = up(torch.full((1, 16, 5, 6), 3.0))
        # A ramp along x: output pixel o sits at input coordinate (o - 0.5) / 2.
        ramp = up(torch.arange(6.0).expand(1, 16, 5, 6))
    assert flat.shape == (1, 16, 10, 12)
    torch.testing.assert_close(flat[..., 1:-1, 1:-1], torch.full((1, 16, 8, 10), 3.0))
    # The border pixels see one 0.75 tap of the kernel's two.
    torch.testing.assert_close(flat[0, 0, 0, 1:-1], torch.full((10,), 3 * 0.75))
    assert flat[0, 0, 0, 0].item() == pytest.approx(3 * 0.75 * 0.75)
    torch.testing.assert_close(ramp[0, 0, 4, 1:-1], (torch.arange(1.0, 11.0) - 0.5) / 2)


def test_width_multiplier_shrinks_channels():
    model = build_ssh(SSHModelConfig(width=0.25))
    assert model.backbone.conv1_1.out_channels == 16
    assert model.backbone.conv5_3.out_channels == 128
    assert model.m1_input.reduce4.out_channels == 32
    assert model.heads["M1"].conv.out_channels == 32
    assert model.heads["M2"].conv.out_channels == 64
    assert model.heads["M2"].ctx_reduce.out_channels == 32
    assert model.heads["M2"].cls.out_channels == 4
    assert parameter_counts(model)["total"] < counts()["total"] / 10


def test_new_layers_are_gaussian_001():
    model = build_ssh(SSHModelConfig())
    weight = model.heads["M2"].conv.weight
    assert weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert model.heads["M2"].conv.bias.abs().sum() == 0


def test_headless_flops_below_full_by_fc_and_m3_input():
    def flops(backbone: str) -> int:
        with torch.device("meta"):
            return ssh_flops(build_ssh(SSHModelConfig(backbone=backbone)), 224, 320)

    # pool5 / M3 grid 7x10 = 70 positions; forward 2 FLOPs per multiply-add, backward twice that
    # (input and weight gradients). Full adds fc6 and fc7, and M3's two convs on its input
    # (3x3 -> 256 and context 3x3 -> 128) read 4096 channels instead of 512.
    extra_macs = 4096 * 512 * 49 + 4096 * 4096 + 9 * (256 + 128) * (4096 - 512)
    assert flops("vgg16_full") - flops("vgg16_headless") == 3 * 2 * 70 * extra_macs
    assert flops("vgg16_headless") < flops("vgg16_full")


def test_to_input_subtracts_bgr_means_and_moves_channels():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[1, 2] = (200, 100, 50)
    x = to_input(image)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    assert x[:, 1, 2].tolist() == pytest.approx([200 - 102.98, 100 - 115.95, 50 - 122.77])
    assert x[:, 0, 0].tolist() == pytest.approx([-m for m in PIXEL_MEANS_BGR])
    assert to_input(np.stack([image, image]).astype(np.float32)).shape == (2, 3, 2, 3)


def hankel(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A rows x cols view with w[i, j] = base[i + j]: distinct rows and columns, tiny on disk."""
    base = torch.randn(rows + cols, generator=torch.Generator().manual_seed(seed))
    return base, base.as_strided((rows, cols), (1, 1))


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A state dict with torchvision VGG-16's keys and shapes, saved as its file is."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) for k, s in shapes.items()
             if not k.startswith("classifier")}
    for i, key in enumerate(["classifier.0", "classifier.3", "classifier.6"]):
        rows, cols = shapes[f"{key}.weight"]
        state[f"{key}.weight"] = hankel(rows, cols, seed=i + 1)[1]
        state[f"{key}.bias"] = torch.randn(rows, generator=gen)
    path = tmp_path_factory.mktemp("tv") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, state


def test_imagenet_features_land_on_the_backbone(torchvision_file):
    path, state = torchvision_file
    model = build_ssh(SSHModelConfig())
    head_before = model.heads["M1"].cls.weight.clone()
    assert load_vgg16_imagenet(model, str(path)) == f"imagenet:{path}"
    for name, index in [("conv1_2", 2), ("conv2_1", 5), ("conv3_1", 10), ("conv4_3", 21),
                        ("conv5_3", 28)]:
        conv = getattr(model.backbone, name)
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    assert torch.equal(model.heads["M1"].cls.weight, head_before)

    # conv1_1 on a Caffe-style input equals torchvision's conv1_1 on its own normalised input
    # (inside the zero padding).
    bgr = np.random.default_rng(0).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    rgb01 = torch.from_numpy(bgr[..., ::-1].copy()).float() / 255
    normalised = ((rgb01 - torch.tensor([0.485, 0.456, 0.406]))
                  / torch.tensor([0.229, 0.224, 0.225])).permute(2, 0, 1)[None]
    expected = F.conv2d(normalised, state["features.0.weight"], state["features.0.bias"],
                        padding=1)
    with torch.no_grad():
        ours = model.backbone.conv1_1(to_input(bgr)[None])
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1],
                               rtol=1e-4, atol=1e-3)


def test_imagenet_classifier_becomes_fc6_fc7(torchvision_file):
    path, state = torchvision_file
    model = build_ssh(SSHModelConfig(backbone="vgg16_full"))
    load_vgg16_imagenet(model, path)
    fc6, fc7 = model.fc.fc6, model.fc.fc7
    base6 = hankel(4096, 25088, seed=1)[0]
    base7 = hankel(4096, 4096, seed=2)[0]
    # classifier.0's input j = c * 49 + y * 7 + x (torchvision flattens C, H, W).
    for o, c, y, x in [(0, 0, 0, 0), (5, 3, 2, 6), (4095, 511, 6, 6), (100, 200, 4, 1)]:
        assert fc6.weight[o, c, y, x] == base6[o + c * 49 + y * 7 + x]
    for o, i in [(0, 0), (7, 4000), (4095, 4095)]:
        assert fc7.weight[o, i, 0, 0] == base7[o + i]
    assert torch.equal(fc6.bias, state["classifier.0.bias"])
    assert torch.equal(fc7.bias, state["classifier.3.bias"])
    assert torch.equal(model.backbone.conv5_3.weight, state["features.28.weight"])


def test_imagenet_sources(torchvision_file, tmp_path, monkeypatch):
    path, _ = torchvision_file
    model = build_ssh(SSHModelConfig())
    assert load_vgg16_imagenet(model, None) == "random"
    with pytest.raises(UserError, match=r"missing\.pth"):
        load_vgg16_imagenet(model, tmp_path / "missing.pth")
    with pytest.raises(UserError, match="width 1"):
        load_vgg16_imagenet(build_ssh(SSHModelConfig(width=0.5)), path)
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match=r"other\.pth: no features\.0\.bias"):
        load_vgg16_imagenet(model, tmp_path / "other.pth")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert load_vgg16_imagenet(model, "torchvision") == "random"
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    assert load_vgg16_imagenet(model, "torchvision") == f"imagenet:{cached}"
