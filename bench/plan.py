"""Plans: variants x seeds -> RunSpecs with content-addressed ids."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bench.errors import UserError
from bench.suite import Suite, Variant


@dataclass(frozen=True)
class RunSpec:
    """One run: a resolved variant and a seed; its id is a hash of exactly those."""

    suite: str
    variant: Variant
    seed: int
    run_id: str

    @property
    def config(self) -> Any:
        return self.variant.config

    @property
    def resolved(self) -> dict[str, Any]:
        """Everything the run depends on, as stored in its folder and in the index."""
        return {**self.variant.resolved, "seed": self.seed}


def run_id(resolved: dict[str, Any], seed: int) -> str:
    """Content address of a run: same config and seed -> same id, on any machine and any day."""
    blob = json.dumps({**resolved, "seed": seed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan(suite: Suite, only: list[str] | None = None,
         seeds: list[int] | None = None) -> list[RunSpec]:
    """The runs of a suite, optionally restricted to some variants and seeds."""
    for name in only or []:
        if name not in suite.variants:
            raise UserError(f"--only {name}: not a variant of {suite.name}; "
                            f"variants: {', '.join(suite.variants)}")
    chosen = [v for n, v in suite.variants.items() if not only or n in only]
    return [
        RunSpec(suite.name, v, seed, run_id(v.resolved, seed))
        for v in chosen
        for seed in (seeds if seeds is not None else suite.head.seeds)
    ]
