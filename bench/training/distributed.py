"""One run on several processes (started by torchrun): who this process is, and its share of a
step's batch.

The suite's `batch_size` is the global batch of an optimizer step. Rank r of W takes the rows
[r B/W, (r+1) B/W) of step k's batch, which is a pure function of (seed, k) whatever W is, so a
run on W devices sees the batches a single-device run sees, split. A process started without
torchrun is rank 0 of 1.
"""

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from bench.errors import UserError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, curves, metrics and the index, and evaluates."""
        return self.rank == 0


def world() -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (rank 0 of 1 without)."""
    def number(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"environment variable {name}={raw!r}: expected an integer "
                            "(torchrun sets it)") from None

    size = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"RANK={rank}, WORLD_SIZE={size}: expected 0 <= RANK < WORLD_SIZE")
    return World(rank=rank, size=size, local_rank=number("LOCAL_RANK", rank))


def local_part(global_batch: int, field: str = "train.batch_size",
               current: World | None = None, micro: int | None = None) -> slice:
    """The rows of a global batch this rank trains on: an equal, contiguous share.

    `field` names the setting in the error when the batch does not split evenly (into equal
    shares, and each share into whole micro-batches of `micro` rows: CWT's negatives are one
    micro-batch's targets, so a short micro-batch would change K)."""
    here = current or world()
    share = global_batch // here.size
    if global_batch % here.size or (micro is not None and share % micro):
        each = f" of whole micro-batches of {micro}" if micro is not None else ""
        raise UserError(f"{field} {global_batch} does not split into {here.size} equal shares"
                        f"{each}; use a multiple of {here.size * (micro or 1)}")
    return slice(here.rank * share, (here.rank + 1) * share)


def join(device: "torch.device") -> "torch.device":
    """Join the process group torchrun describes (gloo on CPUs, NCCL on GPUs) and return this
    process's device: GPU `LOCAL_RANK` when the device asked for is a GPU."""
    import torch
    import torch.distributed as dist

    here = world()
    if device.type == "cuda" and here.size > 1:
        visible = torch.cuda.device_count()
        if here.local_rank >= visible:
            raise UserError(f"process {here.local_rank} of this node has no GPU of its own "
                            f"({visible} visible): start at most {visible} per node")
        device = torch.device("cuda", here.local_rank)
        torch.cuda.set_device(device)
    if here.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def from_main(value: T) -> T:
    """Rank 0's `value`, in every process (itself where there is one process): decisions such
    as which run to train next are taken once, by the process that writes the store."""
    if world().size == 1:
        return value
    import torch.distributed as dist

    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def pick_device(name: str) -> "torch.device":
    """'auto' takes the GPU when there is one; the code path is the same either way."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device
