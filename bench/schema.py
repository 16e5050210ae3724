"""Pieces of configuration schema shared by the core and every study family."""

import functools
import re
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The shortest wsd cooldown, as a fraction of the stage: a millionth is under one step for any
# run of up to a million steps, and below about 1e-16 1 - decay rounds to 1 and the rate would
# never cool down at all.
MIN_DECAY = 1e-6
MAX_NAME = 100

# YAML's `true` is not the number 1: integers and numbers in configs refuse booleans (and an
# integer field refuses 3.0), where pydantic's lax mode would quietly convert them.
Int = Annotated[int, pydantic.Strict()]
Float = Annotated[float, pydantic.Strict()]


def keys_at(model: type[pydantic.BaseModel], loc: tuple[int | str, ...]) -> set[str]:
    """The keys a mapping at `loc` (a pydantic error's location) in data validated by `model`
    may hold, for naming them beside an unknown one; empty where that is not a model's mapping.
    Locations follow fields, list indices, dict keys, and the tags pydantic inserts for union
    members and validators."""
    types: list[Any] = [model]
    for part in loc:
        types = [t for c in types for t in _step(c, part)]
    return {key for t in types for c in _members(t) if _is_model(c)
            for name, f in c.model_fields.items() for key in (name, f.alias) if key}


def _members(t: Any) -> list[Any]:
    """The types a value of `t` may be: the members of a union or an optional, unannotated."""
    if get_origin(t) is Annotated:
        return _members(get_args(t)[0])
    if get_origin(t) in (Union, UnionType):
        return [m for arg in get_args(t) for m in _members(arg)]
    return [t]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, pydantic.BaseModel)


def _step(t: Any, part: int | str) -> list[Any]:
    """What a value of `t` holds at `part`."""
    found: list[Any] = []
    for c in _members(t):
        origin, args = get_origin(c), get_args(c)
        if _is_model(c) and isinstance(part, str):
            fields = {f.alias or name: f for name, f in c.model_fields.items()}
            if part in fields:
                found.append(fields[part].annotation)
            elif part == c.__name__:  # the tag of a union member
                found.append(c)
        elif origin in (list, tuple) and isinstance(part, int) and args:
            found.append(args[0])
        elif origin is dict and isinstance(part, str) and len(args) == 2:
            found.append(args[1])
    if not found and isinstance(part, str) and not part.isidentifier():
        return [t]  # a validator's or a non-model union member's tag ('function-after[...]')
    return found


class _InputPath:
    """The mark of `InputPath`."""

    def __repr__(self) -> str:
        return "InputPath"


INPUT_PATH = _InputPath()
# A config value that names a file or folder a run reads: where it lies is no part of what the
# run computes (its contents are, through the run's input fingerprints), so run ids leave it out.
InputPath = Annotated[str, INPUT_PATH]
# What a run's identity holds in place of an input's path.
INPUT_PLACEHOLDER = "<input>"


def without_input_paths(data: Any, model: Any) -> Any:
    """`data` (values as `model`'s `model_dump(mode="json")` writes them) with every `InputPath`
    field that is set replaced by INPUT_PLACEHOLDER: the same config read from other mounts is
    the same config. Keys `model` does not know are kept as written."""
    if not isinstance(data, (dict, list)):
        return data
    keys, items, values = _layout(model)
    if isinstance(data, list):
        return [without_input_paths(v, items) for v in data]
    out = {}
    for key, value in data.items():
        is_input, held = keys.get(key, (False, values))
        out[key] = INPUT_PLACEHOLDER if is_input and value is not None else \
            without_input_paths(value, held)
    return out


@functools.cache
def _layout(model: Any) -> tuple[dict[str, tuple[bool, Any]], Any, Any]:
    """What a value of type `model` holds, for `without_input_paths` (which walks thousands of
    recorded configs, so it is worked out once a type): each key of its models' mappings ->
    whether the field is an input path and the field's type; the type of a list's items; the
    type of a dict's values."""
    keys: dict[str, tuple[bool, Any]] = {}
    items = values = None
    for t in _members(model):
        if _is_model(t):
            for name, f in reversed(t.model_fields.items()):
                keys |= {key: (_is_input(f), f.annotation) for key in (name, f.alias) if key}
        elif get_origin(t) in (list, tuple) and get_args(t) and items is None:
            items = get_args(t)[0]
        elif get_origin(t) is dict and len(get_args(t)) == 2 and values is None:
            values = get_args(t)[1]
    return keys, items, values


def _is_input(field: Any) -> bool:
    """Whether a model field is declared `InputPath` (alone, or in an optional: a union's
    members keep their annotations, and typing flattens nested unions)."""
    return INPUT_PATH in field.metadata or any(
        get_origin(m) is Annotated and INPUT_PATH in get_args(m)[1:]
        for m in get_args(field.annotation))


def check_name(value: str, what: str) -> str:
    """Names become file and folder names: one safe path component, nothing hidden."""
    if not NAME.fullmatch(value) or ".." in value or len(value) > MAX_NAME:
        raise ValueError(
            f"{what} {value[:MAX_NAME]!r} must be letters, digits, '.', '_' or '-', at most "
            f"{MAX_NAME} of them (no path separators, no '..', not starting with '.')"
        )
    return value


# A config value that names a file or folder the harness writes.
SafeName = Annotated[str, AfterValidator(lambda v: check_name(v, "name"))]


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, so a typo never passes silently;
    infinite and NaN numbers are refused (no budget, rate or size is meaningfully infinite)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OptimConfig(Strict):
    """Optimiser and learning-rate schedule of one training stage.

    The schedule is a function of training progress (0 at the start of the stage, 1 where its
    budget ends), so warm-up plus decay always ends exactly at the budget's end. `wsd`
    (warmup-stable-decay) holds the peak rate and cools down over the last `decay` of the stage
    (Hägele et al. 2024, arXiv 2405.18392).
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: Float = Field(gt=0)
    betas: tuple[Float, Float] = (0.9, 0.999)
    eps: Float = Field(1e-8, gt=0)
    momentum: Float = Field(0.9, ge=0)
    weight_decay: Float = Field(0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant", "step", "wsd"] = "cosine"
    warmup: Float = Field(
        0.0, ge=0, description="warm-up: a fraction of the stage (< 1) or a number of steps (>= 1)"
    )
    min_lr_ratio: Float = Field(0.1, ge=0, le=1,
                                description="final / peak lr: cosine, linear, wsd")
    decay: Float = Field(0.2, gt=0, le=1,
                         description="wsd schedule: the fraction of the stage spent cooling down")
    milestones: tuple[Float, ...] = Field(
        (), description="step schedule: fractions of the stage where the lr is multiplied by gamma"
    )
    gamma: Float = Field(0.1, gt=0)
    clip: Float | None = Field(1.0, gt=0, description="gradient-norm clipping; null for none")

    @model_validator(mode="after")
    def _milestones_are_fractions(self) -> "OptimConfig":
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("milestones must be fractions of the stage, strictly between 0 and 1")
        return self

    @field_validator("decay")
    @classmethod
    def _decay_cools_down(cls, v: float) -> float:
        if v < MIN_DECAY:
            raise ValueError(f"{v:g}: a cooldown under {MIN_DECAY:g} of the stage is less than "
                             "one step for any run of up to a million steps (and below about "
                             f"1e-16 none at all); give at least {MIN_DECAY:g}")
        return v

    @model_validator(mode="after")
    def _decay_is_wsd(self) -> "OptimConfig":
        if "decay" in self.model_fields_set and self.schedule != "wsd":
            raise ValueError(f"decay: only the wsd schedule has a cooldown fraction; schedule "
                             f"{self.schedule!r} ignores it")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """`decay` is dumped only for wsd, so the resolved configs (and run ids) of the other
        schedules are what they were before wsd existed."""
        data: dict[str, object] = handler(self)
        if self.schedule != "wsd":
            data.pop("decay", None)
        return data


class LoopConfig(Strict):
    """What a family's training block tells the one training loop: the optimiser and its
    schedule, the precision, compilation and the checkpoint cadence. Each family's block extends
    it (overriding a default where its paper's differs); `bench.contract.loop_options` turns it
    into a `Stage`'s loop options."""

    optim: OptimConfig
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU, fp32 on a CPU"
    )
    compile: bool = Field(False, description="run the loss through torch.compile (FLOPs are "
                          "still counted on an eager step)")
    checkpoint_every: Int = Field(50, gt=0)

    def autocast_bf16(self, device_type: str) -> bool:
        """Whether the loop runs under bf16 autocast on a device of `device_type` ('cuda',
        'cpu'): when asked for, or under 'auto' on a GPU."""
        return self.precision == "bf16" or (self.precision == "auto" and device_type == "cuda")
