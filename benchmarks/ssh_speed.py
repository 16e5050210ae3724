"""SSH speed and cost, headless vs full VGG-16, side by side in one process.

- inference ms/image at maximum input sizes, single scale and pyramid, with the paper's Quadro
  P6000 numbers beside (Table 2): every (backbone, size, mode) timed in the same interleaved
  rounds after warm-up (synchronised on a GPU), the median with its interquartile range;
- training FLOPs per image (forward + backward, FlopCounterMode on the meta device) at the
  benchmark size and at the published training size 1200 x 1600.

    python benchmarks/ssh_speed.py                       # CPU: 400 x 800, single scale
    python benchmarks/ssh_speed.py --device cuda --bf16 --channels-last --sizes all --pyramid
"""

import argparse
import sys

import torch

from bench.faces.config import SSHModelConfig
from bench.faces.detection_timing import PAPER_MS_P6000, time_detection
from bench.faces.model import build_ssh, parameter_counts, ssh_flops

BACKBONES = ("vgg16_headless", "vgg16_full")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="400x800",
                        help="comma-separated SHORTxLONG, or 'all' for the paper's four")
    parser.add_argument("--pyramid", action="store_true", help="also time the image pyramid")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    args = parser.parse_args(argv)
    sizes = (list(PAPER_MS_P6000) if args.sizes == "all" else
             [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")])
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"SSH at width 1 on {name} ({torch.get_num_threads()} threads), bf16={args.bf16}, "
          f"channels_last={args.channels_last}, median [IQR] of {args.repeats} interleaved "
          f"rounds after {args.warmup} warm-up")

    models = {}
    for backbone in BACKBONES:
        cfg = SSHModelConfig(backbone=backbone)
        torch.manual_seed(0)
        model = build_ssh(cfg).to(device).eval()
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        models[backbone] = (model, cfg.module_specs())
        print(f"  {backbone:<15} {parameter_counts(model)['total']:>12,} parameters")

    modes = ["single", "pyramid"] if args.pyramid else ["single"]
    timings = time_detection(models, sizes, modes, device, warmup=args.warmup,
                             repeats=args.repeats, bf16=args.bf16,
                             channels_last=args.channels_last)
    print(f"\n{'size':<10}{'mode':<9}" + "".join(f"{b:>27}" for b in BACKBONES)
          + f"{'full/headless':>15}{'paper P6000':>13}")
    for size in sizes:
        for mode in modes:
            ms = {b: timings[b, mode, size] for b in BACKBONES}
            paper = PAPER_MS_P6000.get(size) if mode == "single" else None
            print(f"{size[0]}x{size[1]:<6}{mode:<9}"
                  + "".join(f"{ms[b].median:>14.1f} ms [{ms[b].q1:.1f}-{ms[b].q3:.1f}]"
                            for b in BACKBONES)
                  + f"{ms['vgg16_full'].median / ms['vgg16_headless'].median:>15.2f}"
                  + (f"{paper:>10} ms" if paper else f"{'':>13}"))

    print("\ntraining FLOPs per image (forward + backward):")
    for size in dict.fromkeys([sizes[0], (1200, 1600)]):
        flops = {}
        for backbone in BACKBONES:
            with torch.device("meta"):
                flops[backbone] = ssh_flops(build_ssh(SSHModelConfig(backbone=backbone)), *size)
        print(f"  {size[0]}x{size[1]}: headless {flops['vgg16_headless'] / 1e9:.1f} GFLOPs, "
              f"full {flops['vgg16_full'] / 1e9:.1f} GFLOPs, "
              f"ratio {flops['vgg16_full'] / flops['vgg16_headless']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
