"""The SSH network (Najibi et al., ICCV 2017) on a headless or a full VGG-16.

Follows the released Caffe model (mahyarnajibi/SSH); choices the paper leaves open:

- Pooling: `pool_mode` sets the rounding of every max-pool (pool1-4, M3's pool, pool5); "ceil"
  reproduces Caffe's map and anchor-grid sizes, "floor" torchvision's.
- M1 fusion: the x2 bilinear upsampling of conv5_3 (fixed ConvTranspose2d, kernel 4, stride 2,
  pad 1, one group per channel, no bias) is cropped at the top-left to conv4_3's size, as Caffe's
  Crop layer with offset 0. In floor mode an odd conv4_3 map is one row/column larger than the
  upsampled map; the missing border is zero-padded there (conv5_3 has no feature for it).
- `fusion=False` (the paper's "no fusion" ablation) drops only the conv5_3 branch: M1 is fed by
  the conv4_3 1x1 reduction followed by the same 3x3 128->128 conv, so the ablation measures what
  conv5_3 contributes, not the loss of a layer.
- `context=False` (the no-context ablation) replaces the 3x3 / 5x5 / 7x7 branches by one 3x3 conv
  of the same output width 2X + ReLU: the classifiers see the same width, and the module keeps
  about the same parameters (M2: 2.36M against 2.21M with context).
- Full VGG: pool5 + fc6 (7x7 conv 512->4096) + fc7 (1x1 conv 4096->4096), ReLU after each, no
  dropout (the layers run as in evaluation). fc6 is padded by 3, unlike FCN, so maps smaller than
  7x7 survive and M3 keeps the headless grid: pool5 has stride 32, M3's stride.
- Output layout: cls_logits [B, A*2, H, W] is viewed as [B, A, 2, H, W] (index 1 = face),
  bbox_deltas [B, A*4, H, W] as [B, A, 4, H, W] with (dx, dy, log dw, log dh). Caffe orders the
  scores class-major; the layer is trained from scratch, so only this documented order matters.
- Initialisation: the new layers draw N(0, 0.01) with zero bias, as published; a backbone without
  ImageNet weights gets torchvision's VGG init (He normal, fan-out), which keeps 13+ ReLU layers
  trainable from scratch where N(0, 0.01) would not.
- Inputs are Caffe-style: BGR, 0-255, mean-subtracted (`to_input`). Torchvision's ImageNet
  weights expect RGB in [0, 1] normalised by mean and std, so `load_vgg16_imagenet` folds that
  normalisation into conv1_1 (channel order flipped, weights scaled, bias shifted).
"""

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.errors import UserError
from bench.faces.config import SSHModelConfig
from bench.training.flops import count_flops

PIXEL_MEANS_BGR = (102.98, 115.95, 122.77)

VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_WIDTH = 4096
M1_REDUCTION = 128
# Module width X (the 3x3 detection conv; each context branch is X/2).
MODULE_WIDTH = {"M1": 128, "M2": 256, "M3": 256}

TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
# The normalisation torchvision's VGG-16 weights were trained with (RGB in [0, 1]).
_TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _init_new(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.normal_(conv.weight, std=0.01)
    assert conv.bias is not None  # built with Conv2d's default bias=True
    nn.init.zeros_(conv.bias)
    return conv


def _init_vgg(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    assert conv.bias is not None  # built with Conv2d's default bias=True
    nn.init.zeros_(conv.bias)
    return conv


def _max_pool(ceil_mode: bool) -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode)


def vgg16_conv_names() -> list[list[str]]:
    """conv1_1 .. conv5_3, block by block."""
    return [[f"conv{b + 1}_{i + 1}" for i in range(len(block))]
            for b, block in enumerate(VGG16_BLOCKS)]


class VGG16Convs(nn.Module):
    """conv1_1 .. conv5_3 with pool1-4; returns conv4_3 (stride 8) and conv5_3 (stride 16)."""

    def __init__(self, width: float, ceil_mode: bool) -> None:
        super().__init__()
        self.blocks = vgg16_conv_names()
        in_ch = 3
        for names, block in zip(self.blocks, VGG16_BLOCKS, strict=True):
            for name, out in zip(names, block, strict=True):
                conv = _init_vgg(nn.Conv2d(in_ch, _scaled(out, width), 3, padding=1))
                self.add_module(name, conv)
                in_ch = conv.out_channels
        self.pool = _max_pool(ceil_mode)
        self.out_channels = in_ch

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = []
        for b, block in enumerate(self.blocks):
            if b > 0:
                x = self.pool(x)
            for name in block:
                x = F.relu(getattr(self, name)(x))
            feats.append(x)
        return feats[3], feats[4]


class FullVGGHead(nn.Module):
    """pool5 + fc6 + fc7 as convolutions (FCN-style), stride 32."""

    def __init__(self, in_ch: int, width: float, ceil_mode: bool) -> None:
        super().__init__()
        self.pool5 = _max_pool(ceil_mode)
        self.fc6 = _init_vgg(nn.Conv2d(in_ch, _scaled(FC_WIDTH, width), 7, padding=3))
        self.fc7 = _init_vgg(nn.Conv2d(self.fc6.out_channels, _scaled(FC_WIDTH, width), 1))
        self.out_channels = self.fc7.out_channels

    def forward(self, conv5_3: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(self.pool5(conv5_3)))))


def bilinear_upsampler(channels: int) -> nn.ConvTranspose2d:
    """x2 upsampling with Caffe's fixed "bilinear" filler (kernel 4, stride 2, pad 1)."""
    up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, groups=channels,
                            bias=False)
    factor, size = 2, 4
    center = (2 * factor - 1 - factor % 2) / (2 * factor)
    with torch.no_grad():
        taps = 1 - (torch.arange(size, dtype=up.weight.dtype) / factor - center).abs()
        up.weight.copy_(torch.outer(taps, taps).expand_as(up.weight))
    up.weight.requires_grad_(False)
    return up


class M1Input(nn.Module):
    """M1's feature map: conv4_3 reduced to 128 channels, plus upsampled conv5_3 when fused."""

    def __init__(self, conv_ch: int, width: float, fusion: bool) -> None:
        super().__init__()
        ch = _scaled(M1_REDUCTION, width)
        self.reduce4 = _init_new(nn.Conv2d(conv_ch, ch, 1))
        self.reduce5 = _init_new(nn.Conv2d(conv_ch, ch, 1)) if fusion else None
        self.upsample = bilinear_upsampler(ch) if fusion else None
        self.fuse = _init_new(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_channels = ch

    def forward(self, conv4_3: Tensor, conv5_3: Tensor) -> Tensor:
        x = F.relu(self.reduce4(conv4_3))
        if self.reduce5 is not None and self.upsample is not None:
            up = self.upsample(F.relu(self.reduce5(conv5_3)))
            h, w = x.shape[-2:]
            up = up[..., :h, :w]
            x = x + F.pad(up, (0, w - up.shape[-1], 0, h - up.shape[-2]))
        return F.relu(self.fuse(x))


class DetectionModule(nn.Module):
    """3x3 conv (X) beside a context module (5x5 and 7x7 fields, X/2 each), then cls and reg."""

    def __init__(self, in_ch: int, x: int, anchors: int, context: bool) -> None:
        super().__init__()
        half = max(1, round(x / 2))
        if context:
            self.conv = _init_new(nn.Conv2d(in_ch, x, 3, padding=1))
            self.ctx_reduce = _init_new(nn.Conv2d(in_ch, half, 3, padding=1))
            self.ctx_5x5 = _init_new(nn.Conv2d(half, half, 3, padding=1))
            self.ctx_7x7_1 = _init_new(nn.Conv2d(half, half, 3, padding=1))
            self.ctx_7x7_2 = _init_new(nn.Conv2d(half, half, 3, padding=1))
            out = x + 2 * half
        else:
            self.conv = _init_new(nn.Conv2d(in_ch, 2 * x, 3, padding=1))
            out = 2 * x
        self.context = context
        self.cls = _init_new(nn.Conv2d(out, 2 * anchors, 1))
        self.reg = _init_new(nn.Conv2d(out, 4 * anchors, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv(x)
        if self.context:
            red = F.relu(self.ctx_reduce(x))
            ctx7 = self.ctx_7x7_2(F.relu(self.ctx_7x7_1(red)))
            y = torch.cat([y, self.ctx_5x5(red), ctx7], dim=1)
        y = F.relu(y)
        return self.cls(y), self.reg(y)


class SSH(nn.Module):
    """Backbone, optional fc6/fc7, and one detection module per stride (see the module docs)."""

    def __init__(self, cfg: SSHModelConfig) -> None:
        super().__init__()
        specs = cfg.module_specs()
        full = cfg.backbone == "vgg16_full"
        if full and "M3" not in specs:
            raise UserError(f"model.backbone: {cfg.backbone} feeds fc7 to M3, which "
                            f"model.modules={cfg.modules} does not have")
        ceil_mode = cfg.pool_mode == "ceil"
        self.width = cfg.width
        self.strides = {name: stride for name, (stride, _) in specs.items()}
        self.sizes = {name: sizes for name, (_, sizes) in specs.items()}
        self.backbone = VGG16Convs(cfg.width, ceil_mode)
        conv_ch = self.backbone.out_channels
        self.fc = FullVGGHead(conv_ch, cfg.width, ceil_mode) if full else None
        self.m3_pool = None if full else _max_pool(ceil_mode)
        self.m1_input = M1Input(conv_ch, cfg.width, cfg.fusion) if "M1" in specs else None
        in_ch = {"M2": conv_ch, "M3": self.fc.out_channels if self.fc else conv_ch}
        if self.m1_input is not None:
            in_ch["M1"] = self.m1_input.out_channels
        self.heads = nn.ModuleDict({
            name: DetectionModule(in_ch[name], _scaled(MODULE_WIDTH[name], cfg.width),
                                  len(sizes), cfg.context)
            for name, sizes in self.sizes.items()})
        if cfg.freeze_conv12:
            for name in self.backbone.blocks[0] + self.backbone.blocks[1]:
                getattr(self.backbone, name).requires_grad_(False)

    def forward(self, images: Tensor, modules: set[str] | None = None
                ) -> dict[str, tuple[Tensor, Tensor]]:
        """(cls_logits, bbox_deltas) per module; `modules` picks a subset (others not computed)."""
        wanted = set(self.heads) if modules is None else modules
        if not wanted <= set(self.heads):
            raise ValueError(f"unknown modules {sorted(wanted - set(self.heads))}; "
                             f"this model has {sorted(self.heads)}")
        conv4_3, conv5_3 = self.backbone(images)
        out = {}
        if "M1" in wanted and self.m1_input is not None:
            out["M1"] = self.heads["M1"](self.m1_input(conv4_3, conv5_3))
        if "M2" in wanted:
            out["M2"] = self.heads["M2"](conv5_3)
        if "M3" in wanted:
            if self.fc is not None:
                feats = self.fc(conv5_3)
            else:
                assert self.m3_pool is not None  # built whenever fc is not
                feats = self.m3_pool(conv5_3)
            out["M3"] = self.heads["M3"](feats)
        return out


def build_ssh(cfg: SSHModelConfig) -> SSH:
    """A randomly initialised SSH; `load_vgg16_imagenet(model, cfg.pretrained)` adds ImageNet.

    Built under `torch.device("meta")` it allocates nothing (parameter and FLOP counts of
    models too big for the machine).
    """
    return SSH(cfg)


def load_ssh_weights(model: SSH, path: Path, named: str) -> None:
    """Load a weights file into `model`: the state dict a run saves as `model.pt` (a detector
    trained elsewhere), read as tensors only; one that is unreadable or does not fit the model
    (`named`: what gave the path, and the config that built the model) is a UserError."""
    from bench.training.checkpoints import describe_load_error

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or planted file: say which, without a traceback
        raise UserError(f"{path}: cannot load the weights ({named}): "
                        f"{describe_load_error(err)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict of SSH's tensors (as a run's model.pt "
                        f"holds), got a {type(state).__name__} ({named})")
    own = model.state_dict()
    absent, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)}, expected {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if absent or extra or shapes:
        found = [f"missing {', '.join(absent[:3])}" * bool(absent),
                 f"unexpected {', '.join(extra[:3])}" * bool(extra), "; ".join(shapes[:3])]
        raise UserError(f"{path}: the weights do not fit the SSH the variant's model settings "
                        f"build ({named}): {'; '.join(f for f in found if f)}; set the "
                        "variant's model.* (backbone, context, fusion, modules, width, "
                        "pool_mode) to the checkpoint's")
    model.load_state_dict(state)


def _torchvision_feature_index() -> dict[str, int]:
    """Our conv name -> its index in torchvision's `vgg16().features` (conv, ReLU, ..., pool)."""
    index, out = 0, {}
    for names in vgg16_conv_names():
        for name in names:
            out[name] = index
            index += 2
        index += 1  # the block's max-pool
    return out


def vgg16_source(source: str | Path) -> Path | None:
    if str(source) == "torchvision":
        path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_VGG16_FILE
        return path if path.is_file() else None
    path = Path(source)
    if not path.is_file():
        raise UserError(f"model.pretrained: no such file {path}")
    return path


def _fold_torchvision_normalisation(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """conv1_1 weights for BGR 0-255 mean-subtracted input from weights for normalised RGB.

    Exact away from the zero padding (the two inputs pad with different values at the border).
    """
    std = torch.tensor(_TORCHVISION_STD_RGB, dtype=weight.dtype) * 255
    # Our input in RGB order is x_rgb - caffe_mean; torchvision's is (x_rgb - 255 mean) / std.
    shift = (torch.tensor(PIXEL_MEANS_BGR[::-1], dtype=weight.dtype)
             - torch.tensor(_TORCHVISION_MEAN_RGB, dtype=weight.dtype) * 255) / std
    new_bias = bias + (weight.sum(dim=(2, 3)) * shift).sum(dim=1)
    return (weight / std[None, :, None, None]).flip(1), new_bias


def load_vgg16_imagenet(model: SSH, source: str | Path | None) -> str:
    """Copy torchvision's ImageNet VGG-16 into the backbone (and fc6/fc7); returns provenance.

    `source`: a path to torchvision's `vgg16-397923af.pth`, or "torchvision" for its hub cache,
    which falls back to random init (with a warning) where absent; None keeps random init.
    """
    if source is None:
        return "random"
    if model.width != 1:
        raise UserError(f"model.pretrained: ImageNet VGG-16 weights need model.width 1, "
                        f"not {model.width}")
    path = vgg16_source(source)
    if path is None:
        warnings.warn(f"no {TORCHVISION_VGG16_FILE} in torchvision's cache "
                      f"({torch.hub.get_dir()}); VGG-16 stays randomly initialised", stacklevel=2)
        return "random"
    state = torch.load(path, map_location="cpu", weights_only=True)
    pairs: list[tuple[nn.Conv2d, str]] = [
        (getattr(model.backbone, name), f"features.{i}")
        for name, i in _torchvision_feature_index().items()]
    if model.fc is not None:
        pairs += [(model.fc.fc6, "classifier.0"), (model.fc.fc7, "classifier.3")]
    with torch.no_grad():
        for conv, key in pairs:
            weight, bias = (_tensor(state, f"{key}.{k}", path) for k in ("weight", "bias"))
            if conv is model.backbone.conv1_1:
                weight, bias = _fold_torchvision_normalisation(weight, bias)
            if weight.numel() != conv.weight.numel() or weight.shape[0] != conv.weight.shape[0]:
                raise UserError(f"{path}: {key}.weight has shape {tuple(weight.shape)}, "
                                f"expected {tuple(conv.weight.shape)} (VGG-16?)")
            # A view of the destination: fc6's 25088 inputs are (512, 7, 7) in C, H, W order.
            conv.weight.view(weight.shape).copy_(weight)
            assert conv.bias is not None  # every VGG-16 convolution has a bias
            conv.bias.copy_(bias)
    return f"imagenet:{path}"


def _tensor(state: dict[str, Tensor], key: str, path: Path) -> Tensor:
    if key not in state:
        raise UserError(f"{path}: no {key} (not a torchvision VGG-16 state dict)")
    return state[key]


def parameter_counts(model: SSH) -> dict[str, int]:
    """Parameters of backbone convs, fc6/fc7, the rest (modules, M1 fusion incl. the fixed
    upsampler), all, and those trained (frozen conv1/conv2 and the upsampler excluded)."""
    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    total = count(model)
    backbone, fc = count(model.backbone), count(model.fc)
    return {"backbone": backbone, "fc": fc, "modules": total - backbone - fc, "total": total,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def ssh_flops(model: SSH, height: int, width: int) -> int:
    """FLOPs of a forward and backward (trained weights' gradients) of one HxW image.

    Runs on the model's device: a model built on the meta device costs no memory or arithmetic.
    """
    param = next(model.parameters())
    image = torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype)
    trained = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        outputs = model(image)
        loss = sum(t.sum() for pair in outputs.values() for t in pair)
        torch.autograd.grad(loss, trained)

    return count_flops(step)


def to_input(images: np.ndarray | Tensor) -> Tensor:
    """BGR 0-255 images, HWC or NHWC (uint8 or float), to mean-subtracted float CHW / NCHW."""
    x = torch.as_tensor(images)
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"expected HWC or NHWC BGR images, got shape {tuple(x.shape)}")
    x = x.float() - torch.tensor(PIXEL_MEANS_BGR, device=x.device)
    return x.movedim(-1, -3).contiguous()

