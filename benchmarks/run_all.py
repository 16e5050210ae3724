"""Every benchmark, one after the other, each printing ratios measured side by side."""

import sys

import faces_paired
import fddb_eval
import flop_meter
import harness_overhead
import mlm_step
import ssh_speed
import step_time
import store_scale
import tracking_overhead
import wider_eval


def main() -> int:
    for name, module in (("FLOP meter", flop_meter), ("harness overhead", harness_overhead),
                         ("step time, cwt vs softmax", step_time),
                         ("masked-LM step, cwt vs softmax", mlm_step),
                         ("WIDER FACE evaluation", wider_eval),
                         ("FDDB evaluation", fddb_eval),
                         ("WIDER FACE and FDDB paired tests over images", faces_paired),
                         ("SSH speed and FLOPs, headless vs full", ssh_speed),
                         ("results store at scale: bench ls and report", store_scale),
                         ("watching runs: live files and trackers", tracking_overhead)):
        print(f"\n=== {name} ===", flush=True)
        module.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
