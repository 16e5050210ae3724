"""Validated configuration of the SSH detector (no torch import: validation stays fast)."""

from typing import Literal

from pydantic import Field

from bench.schema import Float, InputPath, Int, LoopConfig, OptimConfig, Strict

# Detection modules as published: stride and anchor sizes (px, aspect ratio 1, base 16).
MODULES: dict[str, tuple[int, tuple[int, ...]]] = {
    "M1": (8, (16, 32)),
    "M2": (16, (64, 128)),
    "M3": (32, (256, 512)),
}
# The "M2 only" ablation: one module at stride 16 carrying every anchor size.
M2_ONLY: dict[str, tuple[int, tuple[int, ...]]] = {"M2": (16, (16, 32, 64, 128, 256, 512))}


class SSHModelConfig(Strict):
    """SSH variants as switches: the paper's model is every default at width 1."""

    backbone: Literal["vgg16_headless", "vgg16_full"] = Field(
        "vgg16_headless", description="full keeps pool5 + fc6/fc7 as convolutions feeding M3")
    context: bool = Field(True, description="context modules (5x5 and 7x7 branches)")
    fusion: bool = Field(True, description="M1 fuses conv4_3 with upsampled conv5_3")
    modules: Literal["all", "m2_only"] = "all"
    width: Float = Field(1.0, gt=0, le=1, description="channel multiplier for CPU-sized runs")
    pool_mode: Literal["ceil", "floor"] = Field(
        "ceil", description="max-pool rounding: ceil as in Caffe, floor as in torchvision")
    pretrained: InputPath | None = Field(
        None, description="ImageNet VGG-16 weights (.pth); 'torchvision' for torchvision's cache")
    freeze_conv12: bool = Field(True, description="conv1_x and conv2_x frozen, as published")

    def module_specs(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        return M2_ONLY if self.modules == "m2_only" else MODULES


class FacesDataConfig(Strict):
    """Training images in the WIDER FACE layout (WIDER_<split>/images, wider_face_split/)."""

    root: InputPath
    split: Literal["train", "val"] = "train"
    max_images: Int | None = Field(None, gt=0, description="train on the first N images only")
    # Not part of a run's identity (left out of the resolved config): changing it resumes runs;
    # a sweep's trials take the default.
    workers: Int | None = Field(
        None, ge=0, exclude=True, description="processes decoding and resizing images ahead of "
        "training and evaluation (results do not depend on it); default 4 on a GPU, 0 (inline) "
        "on a CPU")


class SSHBatchConfig(Strict):
    """SSH's training batches as published: images per step, their sizes, flips and padding,
    and OHEM over their anchors."""

    batch_size: Int = Field(4, gt=0, description="images per optimizer step (padded together)")
    short: Int = Field(1200, gt=0, description="shortest side of a training image")
    long_max: Int = Field(1600, gt=0, description="cap on the longest side")
    flip: bool = True
    ohem: bool = True
    pad_to: Int = Field(32, gt=0, description="batch padding multiple (bounds distinct shapes)")


# pydantic lays out fields from the last base to the class itself: a resolved config lists the
# batches, then the loop settings, in the order stored runs' configs do.
class FacesTrainConfig(LoopConfig, SSHBatchConfig):
    """SSH's training recipe; the defaults are the published ones."""

    optim: OptimConfig = OptimConfig(name="sgd", lr=0.004, momentum=0.9, weight_decay=5e-4,
                                     schedule="step", milestones=(18 / 21,), gamma=0.1,
                                     clip=None)
    checkpoint_every: Int = Field(200, gt=0)


class FacesConfig(Strict):
    """Everything that defines one SSH run apart from its seed and budget."""

    model: SSHModelConfig = SSHModelConfig()
    data: FacesDataConfig
    train: FacesTrainConfig = FacesTrainConfig()
