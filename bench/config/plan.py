"""Plans: variants x seeds -> RunSpecs with content-addressed ids."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.config.suite import Suite, rungs, wsd_ladder
from bench.contract import Family, RunSpec, Variant
from bench.errors import UserError, did_you_mean
from bench.evals.registry import get_evaluator
from bench.family import get_family
from bench.schema import INPUT_PLACEHOLDER, without_input_paths
from bench.util.fingerprint import fingerprint_inputs


def run_id(resolved: dict[str, Any], seed: int,
           inputs: dict[str, dict[str, str]] | None = None) -> str:
    """Content address of a run: same config, seed and input contents -> same id, on any
    machine, under any mount and on any day. Where an input lies is left out (`identity`), its
    contents are in: a changed input (a truncated corpus, a retrained tokenizer) gives a new
    id, so a run never resumes or is reused on data it was not trained on."""
    return content_id(identity(resolved), seed, inputs)


def legacy_run_id(resolved: dict[str, Any], seed: int,
                  inputs: dict[str, dict[str, str]] | None = None) -> str:
    """The id a run was given before ids left input paths out: the same hash over the config
    with its paths. Only for finding runs that older stores recorded under it."""
    return content_id(resolved, seed, inputs)


def content_id(config: dict[str, Any], seed: int,
               inputs: dict[str, dict[str, str]] | None) -> str:
    """The hash both rules take: `config` (its identity, or as resolved), seed, input digests."""
    key: dict[str, Any] = {**config, "seed": seed}
    if inputs:
        key["inputs"] = {label: entry["sha256"] for label, entry in inputs.items()}
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (`Variant.resolved`, or a run folder's config.json) as its run id
    hashes it: the family's and each evaluator's `InputPath` fields hold a placeholder, not a
    path. UserError for a family or evaluator this version does not know."""
    family = get_family(resolved["family"])
    # a reference variant's checkpoint is an input: its contents are in the id, not its path
    placed = {"checkpoint": INPUT_PLACEHOLDER} if "checkpoint" in resolved else {}
    return {**resolved, **placed,
            "config": without_input_paths(resolved["config"], family.config_model),
            "evals": [{name: without_input_paths(cfg, get_evaluator(name).config_model)
                       for name, cfg in entry.items()} for entry in resolved["evals"]]}


def variant_inputs(family: Family, variant: Variant, cache_dir: Path | None
                   ) -> dict[str, dict[str, str]]:
    """The fingerprinted files and folders a variant's runs read (see bench.util.fingerprint): the
    family's (a reference variant's: its checkpoint), and each evaluator's as
    `evals.<name>.<label>`."""
    if variant.checkpoint is None:
        found, derived = family.inputs(variant.config), family.derived_inputs(variant.config)
    else:  # a reference variant reads its checkpoint, no training data
        found, derived = {"checkpoint": variant.checkpoint}, {}
    root = family.data_root(variant.config)
    for name, cfg in variant.evals:
        found |= {f"evals.{name}.{label}": path
                  for label, path in get_evaluator(name).inputs(cfg, root).items()}
    return fingerprint_inputs(found, cache_dir) | derived


def run_spec(suite: str, variant: Variant, seed: int, inputs: dict[str, dict[str, str]]
             ) -> RunSpec:
    return RunSpec(suite, variant, seed, run_id(variant.resolved, seed, inputs), inputs)


def plan(suite: Suite, only: list[str] | None = None, seeds: list[int] | None = None,
         cache_dir: Path | None = None) -> list[RunSpec]:
    """The runs of a suite, optionally restricted to some variants and seeds.

    `cache_dir` holds the fingerprint cache (default: the data cache, $BENCH_DATA)."""
    for name in only or []:
        if name not in suite.variants:
            raise UserError(f"--only {name}: not a variant of {suite.name}"
                            f"{did_you_mean(name, suite.variants)}; "
                            f"variants: {', '.join(suite.variants)}")
    for seed in seeds or []:
        if not 0 <= seed < 2**32:
            raise UserError(f"--seeds {seed}: expected a seed from 0 to 2^32 - 1, as in suites")
    runs = []
    for name, variant in suite.variants.items():
        if only and name not in only:
            continue
        inputs = variant_inputs(suite.family, variant, cache_dir)
        chosen = seeds if seeds is not None else suite.head.seeds
        if wsd_ladder(variant):
            runs += _branching_rungs(suite.name, variant, chosen, inputs)
            continue
        runs += [run_spec(suite.name, rung, seed, inputs) for rung in rungs(variant)
                 for seed in chosen]
    return [replace(run, overrides=suite.overrides, tracking=tuple(suite.head.tracking))
            for run in runs]


def _branching_rungs(suite: str, variant: Variant, seeds: list[int],
                     inputs: dict[str, dict[str, str]]) -> list[RunSpec]:
    """The runs of a wsd ladder, longest rung first (so a sequential `bench run` trains it
    before the rungs that branch off it): it learns the lower rungs' budgets, and each lower
    rung the run id of the longest rung of its seed. Run ids are those of the plain rungs."""
    longest, *lower = reversed(rungs(variant))
    sources = {seed: run_spec(suite, longest, seed, inputs) for seed in seeds}
    below = tuple(rung.budget for rung in lower)
    return [replace(run, branch_rungs=below) for run in sources.values()] + [
        replace(run_spec(suite, rung, seed, inputs), branch_source=sources[seed].run_id)
        for rung in lower for seed in seeds]
