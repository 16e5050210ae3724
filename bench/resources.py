"""What one run's cluster job asks for: a suite's `resources:` block.

The block maps onto submitit's `AutoExecutor.update_parameters` (SLURM, or local processes). It
changes where and how a run is scheduled, never what it computes, so it is not part of a run's
id. One process trains on each GPU, as torchrun and DistributedDataParallel expect.
"""

import re
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bench.errors import UserError
from bench.schema import Float, Int, Strict

# sbatch flags a dedicated field sets (or submitit sets itself), with the field to use instead.
RESERVED_FLAGS = {
    "nodes": "nodes",
    "ntasks": "tasks_per_node",
    "ntasks-per-node": "tasks_per_node",
    "cpus-per-task": "cpus_per_task",
    "cpus-per-gpu": "cpus_per_task",
    "gres": "gpus_per_node",
    "gpus": "gpus_per_node",
    "gpus-per-node": "gpus_per_node",
    "gpus-per-task": "gpus_per_node",
    "gpus-per-socket": "gpus_per_node",
    "mem": "mem_gb",
    "mem-per-cpu": "mem_gb",
    "mem-per-gpu": "mem_gb",
    "time": "timeout_min",
    "partition": "partition",
    "account": "account",
    "constraint": "constraint",
    "qos": "qos",
    "array": None,
    "output": None,
    "error": None,
    "job-name": None,
    "signal": "signal_lead_s",
}
SIGNAL_LEAD_S = 90
FLAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _one_line(value: str) -> str:
    """A value written into an `#SBATCH` line: a line break would end the header early."""
    if _CONTROL.search(value):
        raise ValueError("must be one line of text, without line breaks or control characters")
    return value


def _sbatch_value(value: Any) -> str | int:
    """An extra flag's value: text (empty for a flag without a value) or an integer."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('expected text or an integer ("" for a flag without a value)')
    return _one_line(value) if isinstance(value, str) else value


def _reserved_flag(name: str) -> str | None:
    """The reserved flag `name` stands for: itself, or one it abbreviates (sbatch accepts any
    unambiguous prefix of a long option)."""
    flag = name.lower().replace("_", "-")
    return next((r for r in RESERVED_FLAGS if r.startswith(flag)), None)


def _flag_problem(name: str) -> str | None:
    """What is wrong with `name` as an extra sbatch flag, if anything: it must be a plain flag
    name that no dedicated field covers."""
    if name.startswith("-"):
        return f"give the flag name without leading dashes ({name.lstrip('-')!r})"
    if not FLAG_NAME.fullmatch(name):
        return "expected a flag name (letters, digits, '-', '_')"
    reserved = _reserved_flag(name)
    if reserved is None:
        return None
    field = RESERVED_FLAGS[reserved]
    return f"sets --{reserved}: " + (f"set resources.{field} instead" if field
                                     else "the executor sets it")


def _entry_error(name: str, value: Any, message: str) -> ValidationError:
    """An error placed at one entry of the sbatch mapping, so it names the flag's own line."""
    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=(name,),
                              input=value)
    return ValidationError.from_exception_data("sbatch", [detail])


Text = Annotated[str, Field(min_length=1), AfterValidator(_one_line)]
SbatchValue = Annotated[str | int, PlainValidator(_sbatch_value)]


class Resources(Strict):
    """The cluster job of one run: nodes, GPUs, processes, CPUs, memory, time and queue."""

    nodes: Int = Field(1, ge=1)
    gpus_per_node: Int = Field(0, ge=0)
    tasks_per_node: Int | None = Field(
        None, ge=1, validate_default=True,
        description="processes per node; default: gpus_per_node, or 1 without GPUs")
    cpus_per_task: Int = Field(4, ge=1)
    # at least 1 MB: submitit writes whole MB, and --mem=0 would ask for a node's whole memory
    mem_gb: Float | None = Field(None, ge=0.001)
    timeout_min: Int = Field(1440, ge=1)
    signal_lead_s: Int | None = Field(
        None, ge=1, description="seconds before its time limit that a job is warned to "
        "checkpoint and requeue; default a quarter of timeout_min, at most 90")
    partition: Text | None = None
    account: Text | None = None
    constraint: Text | None = None
    qos: Text | None = None
    sbatch: dict[str, SbatchValue] = Field(
        {}, description="extra sbatch flags, name -> value ('' for a flag without a value)")
    setup: list[str] = Field([], description="shell lines run before the job starts")

    @field_validator("tasks_per_node")
    @classmethod
    def _one_process_per_gpu(cls, v: int | None, info: ValidationInfo) -> int:
        gpus = info.data.get("gpus_per_node") or 0
        if v is None:
            return gpus or 1
        if gpus and v != gpus:
            raise ValueError(f"{v} processes per node with gpus_per_node {gpus}: a run trains "
                             "one process per GPU, so give tasks_per_node equal to "
                             "gpus_per_node (or leave it out)")
        return v

    @field_validator("sbatch")
    @classmethod
    def _flag_names(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        seen: dict[str, str] = {}
        for name, value in v.items():
            flag = name.replace("_", "-")
            problem = _flag_problem(name) or (
                f"the same sbatch flag as {seen[flag]!r}" if flag in seen else None)
            if problem:
                raise _entry_error(name, value, problem)
            seen[flag] = name
        return v

    @field_validator("signal_lead_s")
    @classmethod
    def _warned_within_the_limit(cls, v: int | None, info: ValidationInfo) -> int | None:
        limit = info.data.get("timeout_min")
        if v is not None and limit is not None and v >= limit * 60:
            raise ValueError(f"{v} s: a job is warned before its time limit, so the lead must "
                             f"be shorter than timeout_min ({limit * 60} s)")
        return v

    @property
    def signal_lead(self) -> int:
        """Seconds before its time limit that a job is warned (SLURM's `--signal=USR2@N`): a
        run reaches its next read of the losses and saves a checkpoint within them. SLURM may
        send it up to a minute early, so a quarter of a short limit still leaves time to
        train; 90 s (submitit's default) for limits of 6 minutes and more."""
        return self.signal_lead_s or min(SIGNAL_LEAD_S, self.timeout_min * 60 // 4)

    @property
    def processes(self) -> int:
        """The processes that train one run together."""
        assert self.tasks_per_node is not None  # `_one_process_per_gpu` fills it in
        return self.nodes * self.tasks_per_node

    def asked(self) -> str:
        """What a job of this block asks of a node and a partition, in its fields' words."""
        parts = [f"resources.cpus_per_task {self.cpus_per_task} x tasks_per_node "
                 f"{self.tasks_per_node}", f"gpus_per_node {self.gpus_per_node}",
                 f"nodes {self.nodes}", f"timeout_min {self.timeout_min}"]
        if self.mem_gb is not None:
            parts.append(f"mem_gb {self.mem_gb:g}")
        extra = [f"{name} {getattr(self, name)}" for name in ("partition", "account", "qos",
                                                              "constraint")
                 if getattr(self, name) is not None]
        return ", ".join(parts + extra + [f"sbatch.{k} {v!r}" for k, v in self.sbatch.items()])

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments of `submitit.AutoExecutor.update_parameters`; unset ones left out
        (and no GPU request without GPUs: `--gpus-per-node=0` is refused where no GPUs are
        configured)."""
        params: dict[str, Any] = {
            "nodes": self.nodes,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "timeout_min": self.timeout_min,
            "slurm_signal_delay_s": self.signal_lead,  # the local executor warns 30 s ahead
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "constraint", "qos"):
            if getattr(self, name) is not None:
                params[f"slurm_{name}"] = getattr(self, name)
        if self.sbatch:  # submitit writes `True` as a flag without a value
            params["slurm_additional_parameters"] = {
                name: True if value == "" else value for name, value in self.sbatch.items()}
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params

    def merged(self, over: dict[str, Any]) -> "Resources":
        """This block with `over`'s keys set (sbatch flags added one by one), validated anew;
        fields left at their defaults stay defaults, so tasks_per_node follows new GPUs."""
        data = self.model_dump(exclude_unset=True)
        sbatch = over.get("sbatch")
        if isinstance(sbatch, dict):
            over = {**over, "sbatch": {**data.get("sbatch", {}), **sbatch}}
        return Resources.model_validate({**data, **over})

    def override(self, assignments: list[str]) -> "Resources":
        """This block with command-line `KEY=VALUE` assignments (`--resource`) applied; each
        VALUE is a YAML scalar, `KEY=` the empty text (a bare sbatch flag), `null` unsets."""
        over: dict[str, Any] = {}
        for text in assignments:
            key, value = _assignment(text)
            if key.startswith("sbatch."):
                over.setdefault("sbatch", {})[key.removeprefix("sbatch.")] = value
            else:
                over[key] = value
        try:
            return self.merged(over)
        except ValidationError as err:
            raise UserError(_override_error(assignments, err)) from None


def _assignment(text: str) -> tuple[str, Any]:
    """A `--resource KEY=VALUE` split and its value parsed, or an error naming it."""
    key, eq, raw = text.partition("=")
    known = ", ".join([*(k for k in Resources.model_fields if k not in ("sbatch", "setup")),
                       "sbatch.FLAG"])
    if not eq:
        raise UserError(f"--resource {text}: expected KEY=VALUE (known keys: {known})")
    if key == "setup" or key == "sbatch":
        raise UserError(f"--resource {text}: give {key} in the suite's resources block "
                        + ("(one override per flag: sbatch.FLAG=VALUE)" if key == "sbatch"
                           else "(shell lines are not set from the command line)"))
    if key.split(".")[0] not in Resources.model_fields or key.count(".") > (
            1 if key.startswith("sbatch.") else 0):
        raise UserError(f"--resource {text}: unknown resource (known: {known})")
    return key, _yaml_scalar(raw)


def _yaml_scalar(raw: str) -> Any:
    """`raw` read as a plain YAML scalar, the way a suite file reads it (`8` an integer, `gpu`
    text, `null` nothing); empty stays the empty text."""
    if raw == "":
        return ""
    loader = yaml.SafeLoader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, raw, (True, False))
        return loader.construct_object(yaml.ScalarNode(tag, raw))
    except (yaml.YAMLError, ValueError):
        return raw
    finally:
        loader.dispose()


def _override_error(assignments: list[str], err: ValidationError) -> str:
    """The first problem, naming the `--resource` assignment that caused it."""
    e = err.errors()[0]
    loc = [str(x) for x in e["loc"]]
    field = ".".join(loc) or "resources"
    by_key = {a.partition("=")[0]: a for a in assignments}
    culprit = next((by_key[k] for k in (".".join(loc[:n]) for n in range(len(loc), 0, -1))
                    if k in by_key), None)
    msg = e["msg"].removeprefix("Value error, ")
    return f"--resource {culprit or ' '.join(assignments)}: {field}: {msg}"
