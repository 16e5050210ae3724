"""`bench.training.loading.StepLoader`: batches read ahead by worker processes are the batches
computed inline, a restart anywhere continues the same sequence, and no worker outlives the
loader."""

import multiprocessing

import pytest
import torch

from bench.errors import UserError
from bench.training.loading import StepLoader


class Steps:
    """Step k's batch: random numbers from a generator seeded by k (a pure function of k)."""

    def __getitem__(self, step: int) -> tuple[torch.Tensor, int]:
        return torch.randn(3, 5, generator=torch.Generator().manual_seed(step)), step


class Items:
    """A finite dataset whose item 2 is unreadable."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == 2:
            raise UserError("images/2.jpg: image missing or unreadable")
        return torch.full((2,), float(i))


def collect(loader: StepLoader, steps: range) -> list[tuple[torch.Tensor, int]]:
    return [loader(k) for k in steps]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and i == j
                                    for (x, i), (y, j) in zip(a, b, strict=True))


def test_workers_give_the_inline_batches_and_restarts_continue_them():
    with StepLoader(Steps(), 0) as inline:
        expected = collect(inline, range(0, 12))
    with StepLoader(Steps(), 2, prefetch=3) as ahead:
        assert same(collect(ahead, range(0, 12)), expected)
    with StepLoader(Steps(), 2) as resumed:  # a run resumed at step 7
        assert same(collect(resumed, range(7, 12)), expected[7:])
        assert same(collect(resumed, range(2, 5)), expected[2:5])  # back: restarted there
        assert same(collect(resumed, range(9, 11)), expected[9:11])  # a skip forward too


def test_a_finite_dataset_ends_and_its_errors_reach_the_caller_unwrapped():
    for workers in (0, 2):
        with StepLoader(Items(), workers) as loader:
            assert torch.equal(loader(0), torch.zeros(2)) and torch.equal(loader(1), torch.ones(2))
            with pytest.raises(UserError) as err:
                loader(2)
            assert str(err.value) == "images/2.jpg: image missing or unreadable"
            assert torch.equal(loader(3), torch.full((2,), 3.0))
            with pytest.raises(IndexError, match="item 4 of a dataset of 4"):
                loader(4)


def test_workers_end_with_the_loader_also_when_training_fails():
    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="loss is nan"), StepLoader(Steps(), 2) as loader:
        loader(0)
        assert len(set(multiprocessing.active_children()) - before) == 2
        raise RuntimeError("loss is nan")
    assert set(multiprocessing.active_children()) <= before
    loader(5)  # a closed loader starts again on demand
    loader.close()
    assert set(multiprocessing.active_children()) <= before


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="workers -1"):
        StepLoader(Steps(), -1)
    with pytest.raises(ValueError, match="prefetch 0"):
        StepLoader(Steps(), 1, prefetch=0)
