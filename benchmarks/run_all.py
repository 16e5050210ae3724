"""Every benchmark, one after the other, each printing ratios measured side by side."""

import sys

import flop_meter
import harness_overhead
import step_time


def main() -> int:
    for name, module in (("FLOP meter", flop_meter), ("harness overhead", harness_overhead),
                         ("step time, cwt vs softmax", step_time)):
        print(f"\n=== {name} ===", flush=True)
        module.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
