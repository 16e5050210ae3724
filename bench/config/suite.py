"""Suite files: loading (extends, variants, variables), validation, and errors with places.

A suite is validated completely before anything runs: the core keys here, the family's own keys
by the family's schema, every variant's merged config, and the budget split against the stages
each variant trains. The first problem found is reported as `file:line: field.path: what was
expected`, and nothing is written.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bench.config.overrides import apply_overrides
from bench.config.sweep_config import SweepConfig
from bench.config.yaml_source import (
    Located,
    Path_,
    display_path,
    dotted,
    load_yaml,
    unset_error,
)
from bench.contract import BUDGET_FORMS, UNITS, BudgetConfig, Family, Variant
from bench.errors import UserError, did_you_mean
from bench.evals.io import shown
from bench.evals.registry import evaluators_for, get_evaluator, known_evaluators
from bench.family import get_family, known_families
from bench.resources import Resources
from bench.schema import Float, Int, OptimConfig, Strict, check_name, keys_at
from bench.tracking.registry import check_name as check_tracker
from bench.util.paths import file_kind

CORE_KEYS = {
    "suite", "family", "extends", "description", "seeds", "budget", "evals", "report",
    "reference", "variants", "sweep", "resources", "tracking",
}
# What a variant may set besides the family's config: the core's own variant keys.
VARIANT_KEYS = ("budget", "resources", "checkpoint")
MAX_EXTENDS = 32  # files in one 'extends' chain
MAX_METRIC_NAME = 200  # characters of a metric name a report lists
# What a reference key `<metric>:<kind>` gives: the paper's ratio of the metric to the
# baseline's, or the baseline's compute over the compute at which the variant matches it.
REFERENCE_KINDS = ("ratio", "compute_ratio")
Seed = Annotated[Int, Field(ge=0, lt=2**32)]  # what every random generator a family uses takes


class PaperTableConfig(Strict):
    """A paper's comparison table: variants by chosen metrics, plus costs relative to the
    baseline (parameters, throughput), the way papers report them."""

    title: str | None = None
    columns: list[str] = Field(min_length=1)
    labels: dict[str, str] = {}
    scale: Float = Field(1.0, gt=0, description="display multiplier of columns and references")
    ratios: list[str] = []

    @model_validator(mode="after")
    def _names(self) -> "PaperTableConfig":
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("columns must be distinct")
        if len(set(self.ratios)) != len(self.ratios):
            raise ValueError("ratios must be distinct")
        unused = sorted(set(self.labels) - set(self.columns) - set(self.ratios))
        if unused:  # a misspelt metric would otherwise keep its raw name silently
            raise ValueError(f"labels name {unused}, which are neither columns nor ratios")
        return self


class ReportConfig(Strict):
    title: str | None = None
    baseline: str | None = None
    metrics: list[str] | None = None
    reference_source: str | None = None
    notes: list[str] = []
    table: PaperTableConfig | None = None
    # metrics drawn against compute when a variant trains on a ladder of budgets (default: the
    # report's metrics less train.* and model.*)
    compute_metrics: list[str] | None = None

    @field_validator("metrics", "compute_metrics")
    @classmethod
    def _metric_names(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """Distinct names of metrics as runs record them: text a report can print."""
        if v is None:
            return v
        if len(set(v)) != len(v):
            raise ValueError(f"{info.field_name} must be distinct")
        for name in v:
            if not name.strip() or len(name) > MAX_METRIC_NAME or not name.isprintable():
                raise ValueError(f"{info.field_name} names metrics (printable text of 1 to "
                                 f"{MAX_METRIC_NAME} characters); got {shown(name)}")
        return v

    @field_validator("table")
    @classmethod
    def _ratios_need_a_baseline(cls, v: PaperTableConfig | None,
                                info: ValidationInfo) -> PaperTableConfig | None:
        if v is not None and v.ratios and info.data.get("baseline") is None:
            raise ValueError("ratios need report.baseline (each ratio is a variant's mean "
                             "over the baseline's mean)")
        return v


class SuiteHead(Strict):
    """The core's keys of a merged suite (the family's keys are validated by the family)."""

    suite: str
    family: str
    description: str | None = None
    seeds: list[Seed] = Field(min_length=1)
    budget: BudgetConfig
    evals: list[dict[str, Any]] = []
    report: ReportConfig = ReportConfig()
    reference: dict[str, dict[str, Float]] = {}
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    sweep: SweepConfig | None = None
    resources: Resources = Resources()
    # the trackers every run reports to while it trains (bench/tracking), none by default
    tracking: list[str] = []

    @field_validator("tracking")
    @classmethod
    def _trackers_known(cls, v: list[str]) -> list[str]:
        for name in v:
            check_tracker(name)
        if len(set(v)) < len(v):
            raise ValueError(f"{v}: a tracker is named twice")
        return v

    @field_validator("suite")
    @classmethod
    def _suite_name(cls, v: str) -> str:
        return check_name(v, "suite name")

    @field_validator("family")
    @classmethod
    def _family_known(cls, v: str) -> str:
        if v not in known_families():
            raise ValueError(f"unknown family {v!r}{did_you_mean(v, known_families())}; "
                             f"known: {', '.join(known_families())}")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in v:
            check_name(name, "variant name")
        return v

    @field_validator("evals")
    @classmethod
    def _eval_entries(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in v:
            if len(entry) != 1:
                raise ValueError("each evals entry is one mapping {evaluator: {options}}")
        return v


@dataclass(frozen=True)
class Suite:
    path: Path
    head: SuiteHead
    family: Family
    variants: dict[str, Variant]
    overrides: tuple[str, ...] = ()  # the command line's, applied before validation

    @property
    def name(self) -> str:
        return self.head.suite

    def higher_is_better(self, metric: str) -> bool | None:
        """Whether a larger `metric` is better (None: neither, or no rule says; see
        `metric_direction`)."""
        evals = [n for n, _ in next(iter(self.variants.values())).evals]
        return metric_direction(metric, self.family, evals)


def training_directions(unit: str) -> dict[str, bool | None]:
    """Which way each metric of the training loop (`bench.execution.runner`: `train.*` per run and
    `train.<stage>.*` per stage) is better: rates (FLOP/s, items/s) and MFU up, losses and
    memory down; what the budget bought (steps, FLOPs, items in the family's `unit`, seconds),
    the processes, and a timed rate's spread and count point neither way. Patterns, first
    match deciding, as in `Family.higher_is_better`."""
    spent = ("steps", "flops", unit, "seconds")
    return {"train.*_per_s.iqr": None, "train.*_per_s.n": None, "train.*_per_s": True,
            "train.mfu": True, "train.*.final_loss": False, "train.peak_memory_bytes": False,
            "train.world_size": None, **{f"train.{k}": None for k in spent},
            **{f"train.*.{k}": None for k in spent}}


def pattern_direction(table: Mapping[str, bool | None], metric: str) -> bool | None:
    """The direction of the first pattern of `table` that `metric` matches; None if none."""
    return next((up for pattern, up in table.items() if fnmatchcase(metric, pattern)), None)


def metric_direction(metric: str, family: Family, evals: Sequence[str]) -> bool | None:
    """Whether a larger `metric` is better, never guessed: an evaluation's metric
    (`<eval>.<metric>`) by its evaluator, `train.*` by the training loop's rules, any other by
    the family's patterns; None where neither is better or no rule names the metric (reports
    then leave it uncoloured and unmatched)."""
    name, _, rest = metric.partition(".")
    if name in evals:
        return get_evaluator(name).higher_is_better(rest)
    if name == "train":
        return pattern_direction(training_directions(family.item_unit), metric)
    return pattern_direction(family.higher_is_better, metric)


def deep_merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key; anything else in `over` replaces `base`."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else v
        return out
    return over


def merge_budget(base: Any, over: Any) -> Any:
    """A budget override that names a unit replaces the base's unit (a budget has exactly one);
    everything else merges as usual."""
    if isinstance(base, dict) and isinstance(over, dict) and any(u in over for u in UNITS):
        base = {k: v for k, v in base.items() if k not in UNITS}
    return deep_merge(base, over)


def _kind_of(value: Any) -> str:
    """A YAML value's kind in the file's own words."""
    names = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number",
             float: "a number", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)


def _base_file(own: Located, path: Path, ref: Any) -> Path:
    """The regular file an `extends` names (relative to the extending file), or an error placed
    at the `extends` line."""
    file, line = own.where[("extends",)]
    if not isinstance(ref, str) or not ref or "\0" in ref:
        raise UserError(f"{file}:{line}: extends: expected a path to a base suite file, "
                        f"got {ref!r}")
    base = path.parent / ref
    try:
        kind = file_kind(os.stat(base).st_mode)
    except FileNotFoundError:
        raise UserError(f"{file}:{line}: extends: base file {display_path(base)} not found"
                        ) from None
    except OSError as e:
        raise UserError(f"{file}:{line}: extends: cannot read {display_path(base)}: "
                        f"{e.strerror or e}") from None
    if kind is not None:
        raise UserError(f"{file}:{line}: extends: {display_path(base)} is {kind}, not a suite "
                        "file")
    return base


def _load_chain(path: Path, env: dict[str, str] | None, seen: tuple[Path, ...]) -> Located:
    """A suite file merged over the chain of files it extends."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(display_path(p) for p in (*seen, path))
        raise UserError(f"{display_path(seen[-1])}: circular 'extends': {chain}")
    if len(seen) >= MAX_EXTENDS:
        raise UserError(f"{display_path(seen[-1])}: 'extends' chain longer than {MAX_EXTENDS} "
                        "files")
    own = load_yaml(path, env)
    if not own.where:
        raise UserError(f"{display_path(path)}: the file is empty; a suite file is a mapping of "
                        "keys (suite, family, seeds, budget, variants, ...)")
    if not isinstance(own.data, dict):
        raise UserError(f"{display_path(path)}:{own.where[()][1]}: a suite file is a mapping of "
                        f"keys, got {_kind_of(own.data)}")
    if "extends" not in own.data:
        return own
    if any(path == ("extends",) for *_, path in own.unset):
        raise unset_error(own.unset)  # the base file is not known
    base_path = _base_file(own, path, own.data.pop("extends"))
    base = _load_chain(base_path, env, (*seen, path))
    data = deep_merge(base.data, own.data)
    if "budget" in own.data and "budget" in base.data:
        data["budget"] = merge_budget(base.data["budget"], own.data["budget"])
    return Located(data, {**base.where, **own.where}, own.unset + base.unset)


def _fail(src: Located, path: Path_, message: str) -> UserError:
    where = src.locate(path)
    prefix = "" if where is None else f"{where[0]}: " if not where[1] else (
        f"{where[0]}:{where[1]}: ")  # line 0: a command-line override
    return UserError(f"{prefix}{dotted(path)}: {message}")


def _written_at(loc: Path_, base: Path_, origin: dict[Path_, Path_] | None) -> Path_:
    """Where the value of field `loc` was written: a variant's override when it set the value
    (per `origin`), else the field under `base`."""
    for n in range(len(loc), 0 if loc else -1, -1):
        if origin and loc[:n] in origin:
            return (*origin[loc[:n]], *loc[n:])
    return (*base, *loc)


def _pydantic_error(src: Located, base: Path_, err: ValidationError, model: type[BaseModel],
                    origin: dict[Path_, Path_] | None = None) -> UserError:
    """The first validation error of data validated by `model`, placed at the line of the
    offending key; an unknown key with the closest known one and the keys known there."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    e = errors[0]
    loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and (
        x.startswith("function-") or x in BUDGET_FORMS)))
    path = _written_at(loc, base, origin)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        known = keys_at(model, e["loc"][:-1])
        msg = (f"unknown key (not a field here{did_you_mean(str(loc[-1]), known)}; known: "
               f"{', '.join(sorted(known))})" if known else
               "unknown key (not a field here; check the spelling)")
    elif e["type"] == "missing":
        msg = "required field is missing"
    more = len(err.errors()) - 1
    return _fail(src, path, msg + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))


def _paths(data: Any, prefix: Path_ = ()) -> list[Path_]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    return out


def load_suite(path: str | Path, env: dict[str, str] | None = None,
               overrides: Sequence[str] = ()) -> Suite:
    """Load, merge, override (`bench.config.overrides`) and validate a suite file; raises
    UserError naming file and line (or override) and field."""
    src = apply_overrides(_load_chain(Path(path), env, ()), overrides, env)
    if src.unset:
        raise unset_error(src.unset)
    data = src.data
    if data.get("family") in known_families():
        fields = set(get_family(data["family"]).config_model.model_fields)
        for key in data:
            if key not in CORE_KEYS | fields:
                raise _fail(src, (key,), "unknown key (not a suite or family field"
                            f"{did_you_mean(str(key), CORE_KEYS | fields)}; known: "
                            f"{', '.join(sorted(CORE_KEYS | fields))})")
    core = {k: v for k, v in data.items() if k in CORE_KEYS}
    try:
        head = SuiteHead.model_validate(core)
    except ValidationError as err:
        raise _pydantic_error(src, (), err, SuiteHead) from None
    family = get_family(head.family)
    base_config = {k: v for k, v in data.items() if k not in CORE_KEYS}

    evals: list[tuple[str, BaseModel]] = []
    for i, entry in enumerate(head.evals):
        (name, options), = entry.items()
        if name not in known_evaluators():
            raise _fail(src, ("evals", i, name),
                        f"unknown evaluator{did_you_mean(str(name), known_evaluators())}; "
                        f"evaluators for family {head.family!r}: "
                        f"{', '.join(evaluators_for(family.adapters))}")
        evaluator = get_evaluator(name)
        if evaluator.needs not in family.adapters:
            raise _fail(src, ("evals", i, name),
                        f"evaluator {name!r} needs a {evaluator.needs.__name__}, which the "
                        f"models of family {head.family!r} do not provide; evaluators for "
                        f"it: {', '.join(evaluators_for(family.adapters))}")
        try:
            evals.append((name, evaluator.config_model.model_validate(options or {})))
        except ValidationError as err:
            raise _pydantic_error(src, ("evals", i, name), err,
                                  evaluator.config_model) from None

    variants: dict[str, Variant] = {}
    by_config: dict[str, str] = {}
    for vname, changes in head.variants.items():
        changes = changes or {}
        if not isinstance(changes, dict):
            raise _fail(src, ("variants", vname), "expected a mapping of overrides")
        budget_over = changes.get("budget")
        checkpoint = _checkpoint(src, family, vname, changes)
        family_over = {k: v for k, v in changes.items() if k not in VARIANT_KEYS}
        for key in family_over:
            if key in CORE_KEYS:
                raise _fail(src, ("variants", vname, key), "a variant changes the family's "
                            "config, 'budget', 'resources' or 'checkpoint', not this key")
        merged = deep_merge(base_config, family_over)
        origin = {p: ("variants", vname, *p) for p in _paths(family_over)}
        try:
            config = family.config_model.model_validate(merged)
        except ValidationError as err:
            raise _pydantic_error(src, (), err, family.config_model, origin) from None
        budget = head.budget
        if budget_over is not None:
            try:
                budget = BudgetConfig.model_validate(
                    merge_budget(head.budget.model_dump(exclude_none=True), budget_over))
            except ValidationError as err:
                raise _pydantic_error(src, ("variants", vname, "budget"), err,
                                      BudgetConfig) from None
        resources = _variant_resources(src, head.resources, vname, changes.get("resources"))
        evals_resolved = [{n: c.model_dump(mode="json")} for n, c in evals]
        if checkpoint is None:
            _check_budget(src, head, family, vname, config, budget, budget_over is not None)
            _check_warmup(src, config, budget, origin)
            resolved = {
                "family": head.family,
                "config": config.model_dump(mode="json"),
                "budget": budget.model_dump(mode="json", exclude_none=True),
                "evals": evals_resolved,
            }
        else:  # what scoring the checkpoint reads, not what training would
            resolved = {"family": head.family, "checkpoint": checkpoint,
                        "config": family.scoring(config), "evals": evals_resolved}
        key = repr(resolved)
        if key in by_config:
            raise _fail(src, ("variants", vname),
                        f"resolves to the same config as variant {by_config[key]!r}")
        by_config[key] = vname
        variants[vname] = Variant(vname, config, budget, evals, resolved, resources,
                                  checkpoint=checkpoint)

    _check_report(src, head, family, variants)
    _check_sweep(src, head, family, variants)
    return Suite(Path(path), head, family, variants, tuple(overrides))


def _checkpoint(src: Located, family: Family, vname: str, changes: dict[str, Any]
                ) -> str | None:
    """The checkpoint a reference variant scores (None: the variant trains), which takes no
    budget: it trains nothing."""
    if "checkpoint" not in changes:
        return None
    path = changes["checkpoint"]
    if not isinstance(path, str) or not path or "\0" in path:
        raise _fail(src, ("variants", vname, "checkpoint"),
                    f"expected the path of {family.checkpoint_form} (family {family.name!r}), "
                    f"got {_kind_of(path) if not isinstance(path, str) else repr(path)}")
    if "budget" in changes:
        raise _fail(src, ("variants", vname, "budget"), "a reference variant (checkpoint) "
                    "trains nothing: it takes no budget")
    return path


def set_field(config: dict[str, Any], field_path: str, value: Any) -> dict[str, Any]:
    """A copy of a resolved config with the field at `field_path` (e.g. 'train.optim.lr') set;
    the field must exist already, so a misspelt path is an error rather than a silent new key."""
    keys = field_path.split(".")
    out = dict(config)
    node = out
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[:i]) or "the config"
            raise ValueError(f"no field {key!r} in {where}")
        if i == len(keys) - 1:
            node[key] = value
        else:
            node[key] = dict(node[key]) if isinstance(node[key], dict) else node[key]
            node = node[key]
    return out


def derive_variant(family: Family, base: Variant, name: str, params: dict[str, Any]) -> Variant:
    """`base` with some config fields set by dotted path (a sweep trial), validated by the
    family's schema; a ValueError says which field and why."""
    config_data = base.resolved["config"]
    for field_path, value in params.items():
        config_data = set_field(config_data, field_path, value)
    try:
        config = family.config_model.model_validate(config_data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise ValueError(f"{where}: {e['msg'].removeprefix('Value error, ')}") from None
    resolved = {**base.resolved, "config": config.model_dump(mode="json")}
    return Variant(name, config, base.budget, base.evals, resolved, base.resources)


def rungs(variant: Variant) -> list[Variant]:
    """The variant once per budget of its ladder, each resolved with that budget alone, so a
    rung's run id is the id a one-budget suite gives it (a finished rung is reused when the
    ladder grows); a single budget gives the variant itself."""
    if not variant.budget.is_ladder or not variant.trains:
        return [variant]
    return [replace(variant, budget=b, rung=True, resolved={
        **variant.resolved, "budget": b.model_dump(mode="json", exclude_none=True)})
        for b in variant.budget.rungs()]


def wsd_ladder(variant: Variant) -> bool:
    """Whether a variant's rungs may branch off its longest rung: a ladder of budgets whose
    steps are known in advance, trained on a wsd schedule (see
    bench.training.checkpoints.Branches)."""
    return (variant.trains and variant.budget.is_ladder and variant.budget.unit != "seconds"
            and any(optim.schedule == "wsd" for _, optim in _optims(variant.config)))


def sweep_variant(suite: Suite) -> Variant:
    """The variant a suite's sweep explores."""
    assert suite.head.sweep is not None
    return suite.variants[suite.head.sweep.variant or _first_trained(suite.variants)]


def _first_trained(variants: dict[str, Variant]) -> str:
    """The variant a sweep explores unless it names one: the first that trains."""
    return next((name for name, v in variants.items() if v.trains), next(iter(variants)))


def _check_sweep(src: Located, head: SuiteHead, family: Family,
                 variants: dict[str, Variant]) -> None:
    """Every searched field exists and accepts the ends of its range and each of its choices."""
    sweep = head.sweep
    if sweep is None:
        return
    if sweep.variant is not None and sweep.variant not in variants:
        raise _fail(src, ("sweep", "variant"),
                    f"{sweep.variant!r} is not a variant; variants: {', '.join(variants)}")
    if sweep.study is not None:
        try:
            check_name(sweep.study, "study name")
        except ValueError as err:
            raise _fail(src, ("sweep", "study"), str(err)) from None
    base = variants[sweep.variant or _first_trained(variants)]
    if not base.trains:
        raise _fail(src, ("sweep", "variant") if sweep.variant else ("sweep",),
                    f"variant {base.name!r} scores a checkpoint and trains nothing; a sweep "
                    "explores a variant that trains")
    if base.budget.is_ladder:
        raise _fail(src, ("sweep", "variant"), f"variant {base.name!r} trains on a ladder of "
                    "budgets; a sweep compares trials at one budget")
    for field_path, param in sweep.space.items():
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        for value in values:
            try:
                derive_variant(family, base, base.name, {field_path: value})
            except ValueError as err:
                raise _fail(src, ("sweep", "space", field_path),
                            f"{value!r} does not fit variant {base.name!r}: {err}") from None


def _variant_resources(src: Located, base: Resources, vname: str, over: Any) -> Resources:
    """The suite's resources with a variant's override merged over them, errors placed at the
    variant's lines."""
    if over is None:
        return base
    if not isinstance(over, dict):
        raise _fail(src, ("variants", vname, "resources"),
                    f"expected a mapping of resources, got {_kind_of(over)}")
    try:
        return base.merged(over)
    except ValidationError as err:
        raise _pydantic_error(src, ("variants", vname, "resources"), err, Resources) from None


def _check_budget(src: Located, head: SuiteHead, family: Family, vname: str, config: BaseModel,
                  budget: BudgetConfig, overridden: bool) -> None:
    where: Path_ = ("variants", vname, "budget") if overridden else ("budget",)
    unit = budget.unit
    if unit in ("tokens", "images") and unit != family.item_unit:
        raise _fail(src, (*where, unit),
                    f"family {head.family!r} counts {family.item_unit}, not {unit}")
    stages = family.stages(config)
    if budget.split is None and len(stages) > 1:
        raise _fail(src, where, f"variant {vname!r} trains in stages {stages}: give "
                    "'split' with each stage's share of the budget")
    if budget.split is not None and sorted(budget.split) != sorted(stages):
        raise _fail(src, (*where, "split"),
                    f"variant {vname!r} trains in stages {stages}, the split names "
                    f"{sorted(budget.split)}")


def _optims(config: BaseModel, path: Path_ = ()) -> list[tuple[Path_, OptimConfig]]:
    """Every optimiser block of a config, by field path."""
    if isinstance(config, OptimConfig):
        return [(path, config)]
    found = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            found += _optims(value, (*path, name))
    return found


def _check_warmup(src: Located, config: BaseModel, budget: BudgetConfig,
                  origin: dict[Path_, Path_]) -> None:
    """A warm-up in steps needs a horizon known in advance, which a seconds budget lacks; the
    rungs of a wsd ladder share their warm-up, which a fraction of each rung's horizon is not."""
    seconds = budget.unit == "seconds"
    for path, optim in _optims(config):
        where = _written_at((*path, "warmup"), (), origin)
        if seconds and optim.warmup >= 1:
            raise _fail(src, where,
                        f"a warm-up of {optim.warmup:g} steps needs a budget whose steps are "
                        "known in advance (flops, tokens, images or steps); with a seconds "
                        "budget give it as a fraction of the stage (< 1)")
        if (budget.is_ladder and not seconds and optim.schedule == "wsd"
                and 0 < optim.warmup < 1):
            raise _fail(src, where, "a wsd schedule on a ladder of budgets shares its warm-up "
                        "between rungs: give it in steps (>= 1), not a fraction")


def _check_report(src: Located, head: SuiteHead, family: Family,
                  variants: dict[str, Variant]) -> None:
    if head.report.baseline is not None and head.report.baseline not in variants:
        raise _fail(src, ("report", "baseline"),
                    f"{head.report.baseline!r} is not a variant; variants: {', '.join(variants)}")
    if head.report.baseline is not None and not variants[head.report.baseline].trains:
        raise _fail(src, ("report", "baseline"),
                    f"{head.report.baseline!r} is a reference variant (it scores a checkpoint "
                    "and trains nothing); the baseline is a trained variant, compared at its "
                    "compute")
    evaluations = next(iter(variants.values())).evals  # the suite's: every variant has them
    _check_report_metrics(src, head, family, evaluations)
    evals = [name for name, _ in evaluations]
    for i, metric in enumerate(head.report.compute_metrics or []):
        if metric_direction(metric, family, evals) is None:
            raise _fail(src, ("report", "compute_metrics", i),
                        f"{metric!r} has no direction (no rule of the core, family "
                        f"{head.family!r} or its evaluators says whether larger is better); "
                        "compute to match needs one: name a score such as a loss or accuracy")
    for vname, numbers in head.reference.items():
        if vname not in variants:
            raise _fail(src, ("reference", vname),
                        f"not a variant; variants: {', '.join(variants)}")
        for key, value in numbers.items():
            metric, colon, kind = key.partition(":")
            if colon and (not metric or kind not in REFERENCE_KINDS):
                raise _fail(src, ("reference", vname, key),
                            "expected <metric> or <metric>:<kind> with kind one of "
                            f"{', '.join(REFERENCE_KINDS)}")
            if kind == "compute_ratio" and value <= 0:
                raise _fail(src, ("reference", vname, key), "a compute ratio is positive")


def _check_report_metrics(src: Located, head: SuiteHead, family: Family,
                          evals: Sequence[tuple[str, BaseModel]]) -> None:
    """Every metric the report names is one the suite's runs record (a misspelt one would be
    an empty column): the metrics, compute metrics, paper-table columns and ratios. Not the
    paper's numbers (`reference`): a base suite lists all the paper reports, and the suites
    that extend it measure some of them."""
    report, table = head.report, head.report.table
    named: list[tuple[Path_, str]] = [
        *((("report", "metrics", i), m) for i, m in enumerate(report.metrics or [])),
        *((("report", "compute_metrics", i), m)
          for i, m in enumerate(report.compute_metrics or [])),
        *((("report", "table", "columns", i), m)
          for i, m in enumerate(table.columns if table else [])),
        *((("report", "table", "ratios", i), m)
          for i, m in enumerate(table.ratios if table else []))]
    for where, metric in named:
        problem = unrecorded(metric, family, evals)
        if problem is not None:
            raise _fail(src, where, problem)


def unrecorded(metric: str, family: Family, evals: Sequence[tuple[str, BaseModel]]
               ) -> str | None:
    """Why no run of a suite with `family` and `evals` records `metric`; None when one does:
    an evaluation's metric (`<eval>.<metric>`) is one its evaluator lists for its config,
    `train.*` one the training loop's rules name, any other one the family's patterns match."""
    name = metric.partition(".")[0]
    configs = dict(evals)
    if name in configs:
        known = [f"{name}.{m}" for m in get_evaluator(name).metrics(configs[name])]
        if metric in known:
            return None
        listed = ", ".join(known[:12]) + (f" and {len(known) - 12} more" if len(known) > 12 else "")
        return f"{metric!r}: evaluator {name!r} records no such metric" \
               f"{did_you_mean(metric, known)}; it records {listed}"
    patterns = list(training_directions(family.item_unit) if name == "train"
                    else family.higher_is_better)
    if any(fnmatchcase(metric, p) for p in patterns):
        return None
    prefixes = sorted({*configs, "train", *(p.partition(".")[0] for p in family.higher_is_better)})
    if name not in prefixes:
        return f"{metric!r}: no metric of this suite starts with {name!r}" \
               f"{did_you_mean(name, prefixes)}; its metrics start with {', '.join(prefixes)}"
    return f"{metric!r}: {'the training loop' if name == 'train' else f'family {family.name!r}'}" \
           f" records no such metric; its metrics match {', '.join(patterns)}"
