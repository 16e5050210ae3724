"""GPU check in one command: MFU at the Pythia-70M shape, softmax vs CWT step cost, SSH Table 2.

- MFU of a training step (forward, backward, AdamW) at the shape of
  suites/cwt/pythia70m-lambada.yaml (its preset, micro-batch and sequence length, Pythia's 50,304
  embedding rows), softmax and CWT, eager and with `torch.compile`, bf16 autocast: FLOPs counted
  on the eager step (`bench.training.flops.count_flops`), time the median of interleaved rounds
  after warm-up (`bench.util.timing`), peak from `bench.training.accelerators`; the goal is MFU >=
  35% compiled;
- softmax vs CWT step time and peak memory at the BERT-base shape of suites/cwt/bert-base-glue.yaml
  (its micro-batches and head positions) and at the Pythia-70M shape;
- SSH Table 2: ms per image, headless vs full VGG-16 at the paper's four sizes (bf16,
  channels-last), beside the paper's Quadro P6000 figures.

    python benchmarks/gpu_check.py --out reports/gpu-check.json            # a CUDA device
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu-check.json       # tiny shapes, CPU

`--smoke` runs every part at tiny shapes on the CPU in seconds (torch.compile left out unless
`--compile`: inductor needs tens of seconds per model there), so that the code path is tested.
"""

import argparse
import json
import sys
from argparse import Namespace
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from mlm_step import Step, step_memory
from mlm_step import make_step as make_mlm_step
from step_time import OBJECTIVES, Shape
from step_time import make_step as make_lm_step

from bench.config.suite import load_suite
from bench.errors import UserError
from bench.faces.config import SSHModelConfig
from bench.faces.detection_timing import PAPER_MS_P6000, sync, time_detection
from bench.faces.model import build_ssh
from bench.training.accelerators import efficiency_metrics, peak_flops
from bench.training.flops import count_flops
from bench.util.atomic import write_text
from bench.util.timing import interleaved

SUITES = Path(__file__).resolve().parent.parent / "suites" / "cwt"
PYTHIA_VOCAB = 50304  # Pythia's embedding rows: its tokenizer's 50,277 padded to 128s
MFU_GOAL = 0.35
BACKBONES = ("vgg16_headless", "vgg16_full")
# The suites read data from these; the check reads only their shapes.
_UNUSED_INPUTS = dict.fromkeys(
    ("OWT2_TRAIN", "PYTHIA_TOKENIZER", "LAMBADA_OPENAI", "GLUE_DIR"), "unused")


@dataclass(frozen=True)
class Plan:
    """What one check measures: the suites' shapes on a GPU, tiny ones in a smoke run."""

    lm: Shape
    encoder: dict[str, Namespace]  # objective -> mlm_step's arguments and head positions
    ssh_sizes: list[tuple[int, int]]
    ssh_width: float
    compiled: bool
    warmup: int
    repeats: int


def suite_plan(compiled: bool) -> Plan:
    """The shapes of the paper suites: Pythia-70M's micro-batch, BERT-base's per objective."""
    lm_cfg = load_suite(SUITES / "pythia70m-lambada.yaml", env=_UNUSED_INPUTS).variants[
        "softmax"].config
    lm = Shape(lm_cfg.model.preset, lm_cfg.model.preset, PYTHIA_VOCAB,
               lm_cfg.train.micro_batch_size or lm_cfg.train.batch_size, lm_cfg.data.seq_len)
    bert = load_suite(SUITES / "bert-base-glue.yaml", env=_UNUSED_INPUTS).variants
    encoder = {objective: _encoder_args(bert[objective].config.model.preset,
                                        bert[objective].config.train.micro_batch_size,
                                        bert[objective].config.data.seq_len, PYTHIA_VOCAB,
                                        bert[objective].config.head_positions)
               for objective in OBJECTIVES}
    return Plan(lm, encoder, list(PAPER_MS_P6000), 1.0, compiled, warmup=3, repeats=10)


def smoke_plan(compiled: bool) -> Plan:
    """Every part at tiny shapes: seconds on a CPU."""
    encoder = {"softmax": _encoder_args("bert-tiny", 2, 16, 512, "all"),
               "cwt": _encoder_args("bert-tiny", 4, 16, 512, "all")}
    return Plan(Shape("micro", "micro", 512, 2, 16), encoder, [(64, 96)], 0.125, compiled,
                warmup=1, repeats=2)


def _encoder_args(preset: str, batch_size: int, seq_len: int, vocab_size: int,
                  head_positions: str) -> Namespace:
    return Namespace(preset=preset, batch_size=batch_size, seq_len=seq_len,
                     vocab_size=vocab_size, head_positions=head_positions)


def measure(steps: Mapping[Hashable, Step], device: torch.device, plan: Plan
            ) -> dict[Hashable, dict[str, float]]:
    """Median step milliseconds (interleaved rounds after warm-up) and peak bytes of a step
    (what it holds between steps plus what it allocates during one) of each step."""
    timings = interleaved({key: step.run for key, step in steps.items()}, warmup=plan.warmup,
                          repeats=plan.repeats, sync=lambda: sync(device))
    result = {}
    for key, step in steps.items():
        baseline, step_bytes = step_memory(step, device)
        result[key] = {"step_ms": timings[key].median, "step_ms_iqr": timings[key].iqr,
                       "peak_memory_bytes": float(baseline + step_bytes)}
    return result


def ratios(rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """softmax over CWT of step time and peak memory: CWT's saving."""
    return {key: rows["softmax"][key] / rows["cwt"][key]
            for key in ("step_ms", "peak_memory_bytes")}


def lm_check(plan: Plan, device: torch.device, device_name: str) -> dict[str, Any]:
    """FLOPs, step time, FLOP/s, MFU and peak memory of each objective, eager and compiled."""
    modes = ["eager", "compiled"] if plan.compiled else ["eager"]
    steps = {(objective, mode): make_lm_step(plan.lm, objective, device,
                                             compiled=mode == "compiled")
             for objective in OBJECTIVES for mode in modes}
    flops = {objective: count_flops(steps[objective, "eager"].run) for objective in OBJECTIVES}
    measured = measure(steps, device, plan)
    result: dict[str, Any] = {"shape": asdict(plan.lm)}
    for (objective, mode), row in measured.items():
        rates = efficiency_metrics(flops[objective], row["step_ms"] / 1000, device_name)
        result.setdefault(objective, {})[mode] = {"step_flops": float(flops[objective]),
                                                  **row, **rates}
    result["softmax/cwt"] = ratios({o: result[o]["eager"] for o in OBJECTIVES})
    return result


def encoder_check(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Step time and peak memory of a masked-LM step per objective, at its own micro-batch."""
    steps = {objective: make_mlm_step(args, objective, args.head_positions, device)
             for objective, args in plan.encoder.items()}
    result: dict[str, Any] = {"shape": {o: vars(a) for o, a in plan.encoder.items()}}
    result.update(measure(steps, device, plan))
    result["softmax/cwt"] = ratios(result)
    return result


def ssh_check(plan: Plan, device: torch.device) -> list[dict[str, Any]]:
    """ms per image at single scale, headless vs full, beside the paper's P6000 figures."""
    models = {}
    for backbone in BACKBONES:
        cfg = SSHModelConfig(backbone=backbone, width=plan.ssh_width)
        torch.manual_seed(0)
        model = build_ssh(cfg).to(device).eval()
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        models[backbone] = (model, cfg.module_specs())
    on_gpu = device.type == "cuda"
    timings = time_detection(models, plan.ssh_sizes, ["single"], device, warmup=plan.warmup,
                             repeats=plan.repeats, bf16=on_gpu, channels_last=on_gpu)
    rows = []
    for size in plan.ssh_sizes:
        ms = {b: timings[b, "single", size].median for b in BACKBONES}
        paper = PAPER_MS_P6000.get(size)
        rows.append({"size": f"{size[0]}x{size[1]}", "headless_ms": ms["vgg16_headless"],
                     "full_ms": ms["vgg16_full"],
                     "full/headless": ms["vgg16_full"] / ms["vgg16_headless"],
                     "paper_p6000_ms": paper,
                     "headless/paper": ms["vgg16_headless"] / paper if paper else None})
    return rows


def mfu_goal(lm: Mapping[str, Any]) -> dict[str, Any]:
    """Met when every objective's compiled step reaches the goal; None where not measurable
    (no compiled step, or no known peak)."""
    mfu = {o: lm[o].get("compiled", {}).get("mfu") for o in OBJECTIVES}
    met = None if None in mfu.values() else all(v >= MFU_GOAL for v in mfu.values())
    return {"target": MFU_GOAL, "compiled_mfu": mfu, "met": met}


def check_device(smoke: bool) -> tuple[torch.device, str]:
    """The CUDA device and its name; the CPU only for a smoke run."""
    if smoke:
        return torch.device("cpu"), "cpu"
    if not torch.cuda.is_available():
        raise UserError("no CUDA device: torch.cuda.is_available() is False (torch "
                        f"{torch.__version__}); the GPU check needs one, or --smoke for tiny "
                        "shapes on the CPU")
    return torch.device("cuda"), torch.cuda.get_device_name()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every part of the check, as one JSON-ready record."""
    device, name = check_device(args.smoke)
    compiled = not args.smoke if args.compile is None else args.compile
    plan = smoke_plan(compiled) if args.smoke else suite_plan(compiled)
    lm = lm_check(plan, device, name)
    return {"device": name, "smoke": args.smoke, "torch": torch.__version__,
            "peak_flops": peak_flops(name), "warmup": plan.warmup, "repeats": plan.repeats,
            "lm": lm, "encoder": encoder_check(plan, device), "ssh": ssh_check(plan, device),
            "mfu_goal": mfu_goal(lm)}


def report(record: Mapping[str, Any]) -> str:
    """The numbers as a plain-text table."""
    gib = 2**30
    peak = record["peak_flops"]
    lines = [f"device {record['device']}, torch {record['torch']}, peak "
             f"{f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown (no MFU)'}; medians of "
             f"{record['repeats']} interleaved rounds after {record['warmup']} warm-up",
             "", f"{'shape':<22}{'objective':<10}{'mode':<10}{'step ms':>9}{'TFLOP/s':>9}"
             f"{'MFU':>7}{'peak GiB':>10}"]
    lm = record["lm"]
    for objective in OBJECTIVES:
        for mode, row in lm[objective].items():
            mfu = f"{100 * row['mfu']:.1f}%" if "mfu" in row else "-"
            lines.append(f"{'lm ' + lm['shape']['name']:<22}{objective:<10}{mode:<10}"
                         f"{row['step_ms']:>9.2f}{row['flops_per_s'] / 1e12:>9.2f}{mfu:>7}"
                         f"{row['peak_memory_bytes'] / gib:>10.2f}")
    enc = record["encoder"]
    for objective in OBJECTIVES:
        shape = enc["shape"][objective]
        label = f"{shape['preset']} {shape['batch_size']}x{shape['seq_len']}"
        lines.append(f"{label:<22}{objective:<10}{'eager':<10}{enc[objective]['step_ms']:>9.2f}"
                     f"{'':>16}{enc[objective]['peak_memory_bytes'] / gib:>10.2f}")
    for name, part in (("lm", lm), ("encoder", enc)):
        r = part["softmax/cwt"]
        lines.append(f"softmax/cwt ({name}): step time x{r['step_ms']:.2f}, "
                     f"peak memory x{r['peak_memory_bytes']:.2f}")
    lines += ["", f"{'SSH size':<12}{'headless ms':>12}{'full ms':>10}{'full/headless':>15}"
              f"{'paper P6000':>13}"]
    for row in record["ssh"]:
        paper = f"{row['paper_p6000_ms']} ms" if row["paper_p6000_ms"] else "-"
        lines.append(f"{row['size']:<12}{row['headless_ms']:>12.1f}{row['full_ms']:>10.1f}"
                     f"{row['full/headless']:>15.2f}{paper:>13}")
    goal = record["mfu_goal"]
    verdict = {True: "MET", False: "NOT MET", None: "not measured (no compiled step or peak)"}
    shown = ", ".join(f"{o} {100 * v:.1f}%" for o, v in goal["compiled_mfu"].items()
                      if v is not None)
    lines += ["", f"MFU goal >= {100 * goal['target']:.0f}% at the pythia-70m shape, compiled: "
              f"{verdict[goal['met']]}" + (f" ({shown})" if shown else "")]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the numbers here as JSON")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU: tests the code path in seconds")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile'd steps (default: on a GPU only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        record = run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(record))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
