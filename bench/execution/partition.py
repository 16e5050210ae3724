"""What a SLURM partition's nodes offer, read from `sinfo`, and the job requests none of them can
take: SLURM queues such a job and leaves it pending for ever (`PartitionConfig`), so they are
refused before anything is submitted, naming the `resources` field and what the partition
offers. A default a node cannot give (4 CPUs a task on a 2-CPU node) is lowered to what the
largest node has instead.

Only the command-line surface stable across SLURM 22.05 to 24.x is used: `sinfo --noheader
--Node --format` with the fields %P (partition, `*` marking the default), %c (CPUs), %m (memory,
MB), %G (generic resources, `gpu[:type]:N[(S:...)]`) and %l (time limit, `[days-]hours:minutes:
seconds`, `infinite` or `UNLIMITED`).
"""

import math
import re
from dataclasses import dataclass

from bench.errors import UserError
from bench.execution.queue import ask
from bench.resources import Resources

FORMAT = "%P|%c|%m|%G|%l"
_GPU = re.compile(r"^gpu(?::[^:(]+)?:(\d+)")
_LIMIT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")
DEFAULT_CPUS = Resources.model_fields["cpus_per_task"].default


@dataclass(frozen=True)
class Node:
    """One node of a partition, as sinfo lists it."""

    partition: str
    default: bool  # the partition jobs go to without --partition
    cpus: int
    memory_mb: int
    gpus: int
    limit_min: float  # the partition's time limit (inf: none)


def parse_nodes(text: str) -> list[Node]:
    """sinfo's `FORMAT` lines, one per node and partition; malformed lines are left out."""
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        partition, cpus, memory, gres, limit = fields
        try:
            nodes.append(Node(partition.rstrip("*"), partition.endswith("*"),
                              int(cpus.rstrip("+")), int(memory.rstrip("+")), _gpus(gres),
                              _minutes(limit)))
        except ValueError:
            continue
    return nodes


def _gpus(gres: str) -> int:
    """The GPUs in a gres list (`gpu:4`, `gpu:a100:4(S:0-1)`, `(null)`)."""
    return sum(int(m.group(1)) for entry in gres.split(",")
               if (m := _GPU.match(entry.strip())))


def _minutes(limit: str) -> float:
    """A time limit in minutes (inf: `infinite`, `UNLIMITED`, `NONE`)."""
    if limit.lower() in ("infinite", "unlimited", "none"):
        return math.inf
    match = _LIMIT.match(limit)
    if match is None:
        raise ValueError(limit)
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return days * 1440 + hours * 60 + minutes + seconds / 60


def partition_nodes() -> list[Node] | None:
    """Every node of every partition, from sinfo; None where sinfo cannot tell (no SLURM
    commands here: submission then says so)."""
    done = ask(["sinfo", "--noheader", "--Node", f"--format={FORMAT}"])
    return parse_nodes(done.stdout) if done is not None and done.returncode == 0 else None


def fitted(resources: Resources, nodes: list[Node]) -> tuple[Resources, list[str]]:
    """`resources` as a job of them can run on `nodes` (sinfo's), with a line for each default
    lowered to fit; a UserError naming the field when no node could take the job."""
    name = resources.partition
    mine = [n for n in nodes if (n.partition == name if name else n.default)]
    if not mine:
        if name is None:  # no default partition: sbatch says what it wants
            return resources, []
        known = sorted({n.partition for n in nodes})
        raise UserError(f"resources.partition {name!r}: no such partition on this cluster "
                        f"(sinfo lists {', '.join(known) or 'none'})")
    where = f"partition {mine[0].partition!r}"
    tasks = resources.tasks_per_node or 1
    most = max(n.cpus for n in mine)
    notes = []
    if "cpus_per_task" not in resources.model_fields_set and tasks * resources.cpus_per_task > most:
        cpus = max(1, most // tasks)
        notes.append(f"resources.cpus_per_task: {cpus}, not the default {DEFAULT_CPUS}: the "
                     f"nodes of {where} have at most {most} CPUs")
        resources = resources.merged({"cpus_per_task": cpus})
    need = {"cpus": tasks * resources.cpus_per_task,
            "memory_mb": math.ceil((resources.mem_gb or 0) * 1024),
            "gpus": resources.gpus_per_node}
    fields = {"cpus": f"cpus_per_task {resources.cpus_per_task} (x {tasks} tasks a node)",
              "memory_mb": f"mem_gb {resources.mem_gb:g}" if resources.mem_gb else "",
              "gpus": f"gpus_per_node {resources.gpus_per_node}"}
    units = {"cpus": "CPUs", "memory_mb": "MB of memory", "gpus": "GPUs"}
    for key, amount in need.items():
        offered = max(getattr(n, key) for n in mine)
        if amount > offered:
            raise UserError(f"resources.{fields[key]}: a node of the job needs {amount} "
                            f"{units[key]}; the nodes of {where} have at most {offered} "
                            f"(sinfo); nothing was submitted")
    fit = [n for n in mine if all(getattr(n, k) >= amount for k, amount in need.items())]
    if len(fit) < resources.nodes:
        raise UserError(f"resources.nodes {resources.nodes}: {where} has {len(fit)} node"
                        f"{'s' * (len(fit) != 1)} that can take a share of the job (sinfo); "
                        "nothing was submitted")
    limit = max(n.limit_min for n in mine)
    if resources.timeout_min > limit:
        raise UserError(f"resources.timeout_min {resources.timeout_min}: {where} lets a job run "
                        f"{limit:g} minutes at most (sinfo); nothing was submitted")
    return resources, notes
