"""Batches of consecutive steps computed ahead by worker processes.

A family's batch of step k is a pure function of (seed, k), built on the CPU (decoding, resizing,
collating). `StepLoader` builds it in `torch.utils.data.DataLoader` workers while the device
trains on earlier steps: the loop asks for steps k, k + 1, ... in order, and a request for any
other step (a resumed run's first) restarts the workers there. A worker computes exactly what the
caller would compute inline (0 workers), so the setting never changes a result.

The workers live as long as one pass from a start step (the whole stage in training); `close()`,
or leaving the `with` block, ends them, also when training fails.
"""

from collections.abc import Callable, Iterator, Sized
from itertools import count
from types import TracebackType
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from bench.errors import UserError


class StepDataset(Protocol):
    """Item k is the CPU batch of step k (or, for a finite dataset, its k-th item)."""

    def __getitem__(self, step: int) -> Any: ...


class _Carrier(Dataset[Any]):
    """The dataset as workers run it: a UserError (an unreadable image) comes back as a value,
    so the caller raises it with its own message instead of DataLoader's wrapped traceback."""

    def __init__(self, dataset: StepDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, step: int) -> Any:
        try:
            return self.dataset[step]
        except UserError as err:
            return err


def _as_is(item: Any) -> Any:
    """Items are already batches: no collation."""
    return item


class StepLoader:
    """`loader(k)`: the dataset's item k, read ahead by `workers` processes (inline with 0)."""

    def __init__(self, dataset: StepDataset, workers: int, pin_memory: bool = False,
                 prefetch: int = 2, worker_init: Callable[[int], None] | None = None) -> None:
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers {workers} must be >= 0 and prefetch {prefetch} >= 1")
        self.dataset, self.workers, self.pin_memory = dataset, workers, pin_memory
        self.prefetch, self.worker_init = prefetch, worker_init
        self._items: Iterator[Any] | None = None
        self._next = 0

    def __call__(self, step: int) -> Any:
        if isinstance(self.dataset, Sized) and not 0 <= step < len(self.dataset):
            raise IndexError(f"item {step} of a dataset of {len(self.dataset)}")
        if self.workers == 0:
            return self.dataset[step]
        if self._items is None or step != self._next:
            self._start(step)
        assert self._items is not None
        item = next(self._items)
        self._next = step + 1
        if isinstance(item, UserError):
            raise item
        return item

    def _start(self, step: int) -> None:
        """(Re)start the workers at `step`; they then compute the steps after it in order."""
        self.close()
        steps = (range(step, len(self.dataset)) if isinstance(self.dataset, Sized)
                 else count(step))
        loader: DataLoader[Any] = DataLoader(
            _Carrier(self.dataset), batch_size=None, sampler=steps, num_workers=self.workers,
            collate_fn=_as_is, pin_memory=self.pin_memory and torch.cuda.is_available(),
            prefetch_factor=self.prefetch, worker_init_fn=self.worker_init)
        self._items = iter(loader)

    def close(self) -> None:
        """End the worker processes (DataLoader's own shutdown, which its finalizer runs)."""
        if self._items is not None:
            self._items._shutdown_workers()  # type: ignore[attr-defined]
            self._items = None

    def __enter__(self) -> "StepLoader":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`batch` on `device`. A GPU gets it from pinned memory without waiting: the copy is queued
    behind the work already queued, and the host goes on preparing the next step."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)
