"""A stage's checkpoint files, with one owner: where a stage resumes, when a save is due, the
saves, and the stage's finish; and the branch files of a wsd ladder.

In `checkpoints/` of a run: `<stage>.pt` (weights, record, optimiser, generators, FLOP counts)
every `checkpoint_every` steps, the one before kept as `<stage>.prev.pt`, and once the stage
has finished only `<stage>.final.pt` (weights and record). Rank 0 writes them, each whole or
not at all.

Checkpoints hold only tensors and plain data and are loaded with `weights_only=True`: a results
folder is shared and copied, and unpickling arbitrary objects from it could run code. An
unreadable checkpoint is skipped for the next, and when none is left the stage fails naming the
files, or (`restart_corrupt`) starts over.

On a ladder of budgets trained on a wsd schedule, rungs share their warm-up and stable phase
(Hägele et al. 2024, arXiv 2405.18392): the longest rung saves a full checkpoint where each lower
rung's cooldown begins (`branches/<stage>.<unit>-<amount>.pt`), and a lower rung starts there
and trains its cooldown only.
"""

import logging
import pickle
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from bench.contract import RunSpec, Stage, StageResult, StepCost
from bench.errors import RunFailed, UserError
from bench.training.budget import StageBudget, shared_steps, split_budget
from bench.training.distributed import World
from bench.util.atomic import (
    LinkRefused,
    enter_dir,
    no_links,
    open_read,
    remove_stale_temporaries,
    save_torch,
)

RESTART_HINT = ("rerun with `bench run --restart-corrupt` to discard the stage's checkpoints and "
                "train it again from its start")
_FULL_KEYS = ("model", "result", "optimizer", "rng", "flops_by_shape")


@dataclass(frozen=True)
class Branches:
    """A stage's part in a wsd ladder. The longest rung saves, at the step where each lower
    rung's cooldown would begin, a full checkpoint for it (`saves`: file -> that rung's stage
    budget). A lower rung starts from its file in the longest rung's folder (`source`: that
    run's id and the file) when it is there and usable, else trains the shared steps itself.
    `heard` is told where the stage branched from (also when it resumes or was already done),
    so the run's provenance says so."""

    saves: dict[Path, StageBudget] = field(default_factory=dict)
    source: tuple[str, Path] | None = None
    heard: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def of_rung(cls, run: RunSpec, stage: Stage, budgets: dict[str, StageBudget], run_dir: Path,
                heard: Callable[[dict[str, Any]], None]) -> "Branches | None":
        """The part of `run`'s first stage (trained in `run_dir`, budgets by stage) in its
        ladder; None off a ladder's schedule: only a budget of known steps has a cooldown that
        starts at a known step. Only the first stage of a rung starts where every rung starts."""
        budget = budgets[stage.name]
        if stage.optim.schedule != "wsd" or budget.unit == "seconds":
            return None
        stages = list(budgets)
        saves = {branch_file(run_dir / "checkpoints", stage.name, lower): lower for lower in (
            split_budget(rung, stages)[stage.name] for rung in run.branch_rungs)}
        source, found = run.branch_source, None
        if source is not None:  # no link on the way to it, or at it, is followed
            found = (source, no_links(run_dir.parent,
                                      branch_checkpoint(run, stages, run_dir.parent / source)))
        return cls(saves, found, heard)


def branch_file(ckpt_dir: Path, stage: str, budget: StageBudget) -> Path:
    """Where the longest rung keeps the branch checkpoint of the lower rung of `budget`."""
    return ckpt_dir / "branches" / f"{stage}.{budget.unit}-{budget.amount!r}.pt"


def branch_checkpoint(run: RunSpec, stages: list[str], source_folder: Path) -> Path:
    """The checkpoint a lower rung of a wsd ladder starts from: the one its longest rung
    (in `source_folder`) saves for the first stage's share of this rung's budget."""
    return branch_file(source_folder / "checkpoints", stages[0],
                       split_budget(run.variant.budget, stages)[stages[0]])


def drop_branch_file(run: RunSpec, stages: list[str], run_dir: Path, log: logging.Logger
                     ) -> None:
    """Once the lower rung `run` (in `run_dir`) has finished, remove the branch file its source
    saved for it alone (no other rung starts from it). Links on the way are not followed; a
    file that cannot be removed stays, said in the log, and costs nothing but disk."""
    source = run.branch_source
    if source is None:
        return
    path = branch_checkpoint(run, stages, run_dir.parent / source)
    try:
        no_links(run_dir.parent, path.parent)  # the folders on the way; the file goes
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as e:
        log.warning("kept the branch checkpoint %s: %s", path, e)
        return
    log.info("removed the branch checkpoint %s, used by this run alone", path)


def describe_load_error(err: BaseException) -> str:
    """Why a saved file could not be loaded, in words that do not invite unsafe loading (torch's
    own message suggests `weights_only=False`)."""
    if isinstance(err, pickle.UnpicklingError):
        return ("refused: it holds objects other than tensors and plain data (loading them could "
                "run code), or it is corrupted")
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else 'no details'}"


class StageCheckpoints:
    """The checkpoint files of `stage` in `ckpt_dir`, and its branch files on a wsd ladder
    (`branches`): `load_trained` / `load` find where it starts, `due` and `save` keep it
    resumable step by step, `finish` leaves its final weights and record. Only rank 0 writes or
    deletes; every process reads."""

    def __init__(self, stage: Stage, budget: StageBudget, ckpt_dir: Path, device: torch.device,
                 here: World, log: logging.Logger, restart_corrupt: bool = False,
                 branches: Branches | None = None) -> None:
        self.stage, self.budget, self.device, self.here, self.log = (
            stage, budget, device, here, log)
        self.restart_corrupt, self.branches = restart_corrupt, branches
        self.dir = enter_dir(ckpt_dir)
        for leftover in [p for folder in (self.dir, no_links(self.dir, self.dir / "branches"))
                         if folder.is_dir() for p in remove_stale_temporaries(folder)
                         ] if here.main else []:
            log.info("removed %s, left by a killed process", leftover)
        self.final = self.dir / f"{stage.name}.final.pt"
        self.latest, self.prev = self.dir / f"{stage.name}.pt", self.dir / f"{stage.name}.prev.pt"
        self._optimizer: torch.optim.Optimizer | None = None
        self._flops_by_shape: dict[tuple, int] = {}
        self._branch_steps: dict[int, list[tuple[Path, StageBudget, int]]] | None = None

    @cached_property
    def _found(self) -> tuple[Path, dict[str, Any]] | None:
        """Where the stage starts, found once: its final checkpoint, else its latest, else the
        one before (falling back past unusable files), else the branch file a longer rung
        saved for it; None for its first step. `branches.heard` is told where it branched."""
        found = self._newest_usable()
        if found is None and self.branches is not None and self.branches.source is not None:
            found = self._branch_start(self.branches.source)
        branched = found[1].get("branched") if found is not None else None
        if branched is not None and self.branches is not None and self.branches.heard is not None:
            self.branches.heard(branched)
        return found

    @property
    def _branched(self) -> dict[str, Any] | None:
        """The longer rung and step this stage branched from, carried by every save."""
        return self._found[1].get("branched") if self._found is not None else None

    def load_trained(self) -> StageResult | None:
        """The record of a stage that finished earlier, its weights loaded (and the resumable
        checkpoints a kill just after the final write left removed); None when it has steps to
        take."""
        found = self._found
        if found is None or found[0] != self.final:
            return None
        self.stage.model.load_state_dict(found[1]["model"])
        if self.here.main:
            _discard([self.latest, self.prev])
        self.log.info("stage %s: already trained, loaded %s", self.stage.name, self.final.name)
        return StageResult(**found[1]["result"])

    def load(self, optimizer: torch.optim.Optimizer) -> tuple[StageResult, dict[tuple, int]]:
        """The record to go on from and the FLOPs counted per micro-batch shape (filled in as
        the stage trains, saved with it), with the model, `optimizer` and random generators
        restored where a checkpoint was found; a new record at step 0 where none was."""
        self._optimizer = optimizer
        found = self._found
        if found is None:
            return StageResult(self.stage.name, world_size=self.here.size), self._flops_by_shape
        path, saved = found
        result = StageResult(**saved["result"])
        if result.world_size != self.here.size:  # same global batches: equal up to float sums
            self.log.warning("stage %s: resuming with %d processes a run checkpointed with %d",
                             self.stage.name, self.here.size, result.world_size)
            result.world_size = self.here.size
        self.stage.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        self._flops_by_shape = saved["flops_by_shape"]
        _set_rng_state(saved["rng"])
        if path.parent == self.dir:  # else it branched off a longer rung (logged there)
            self.log.info("stage %s: resuming at step %d from %s", self.stage.name, result.steps,
                          path.name)
        return result, self._flops_by_shape

    def due(self, result: StageResult, cost: StepCost) -> bool:
        """Whether a save follows the step just taken (which cost `cost`): the stage's
        checkpoint every `checkpoint_every` steps, or the branch files of lower rungs, whose
        horizons are priced on this stage's first step, as each rung prices its own."""
        if self._branch_steps is None:
            self._branch_steps = self._branch_points(_first_step_cost(result, cost))
        return (result.steps % self.stage.checkpoint_every == 0
                or result.steps in self._branch_steps)

    def save(self, result: StageResult, last: bool, now: bool = False) -> bool:
        """What is due (`due`) after the step that brought the stage to `result`: the branch
        files of lower rungs that start here, then the stage's checkpoint (the one before kept),
        unless the step was its last (it finishes instead); the checkpoint `now` whatever
        the step (the stage stops here: its job was warned of preemption or its time limit).
        Whether the stage's checkpoint was saved (by rank 0, or would have been)."""
        assert self._branch_steps is not None, "due() is asked first"
        for path, lower, horizon in (self._branch_steps.get(result.steps, [])
                                     if self.here.main else []):
            enter_dir(path.parent)  # branches/: refused when it is a link
            save_torch(self._state(True, replace(result, horizon=horizon))
                       | {"budget": [lower.unit, lower.amount]}, path)
            self.log.info("stage %s: saved the branch checkpoint %s at step %d",
                          self.stage.name, path.name, result.steps)
        saving = (now or result.steps % self.stage.checkpoint_every == 0) and not last
        if saving and self.here.main:
            save_torch(self._state(True, result), self.latest, self.prev)
            if now:
                self.log.info("stage %s: warned by the cluster, saved a checkpoint at step %d "
                              "and stops", self.stage.name, result.steps)
        return saving

    def finish(self, result: StageResult) -> None:
        """The stage's final weights and record; its resumable checkpoints go."""
        if self.here.main:
            save_torch(self._state(False, result), self.final)
            _discard([self.latest, self.prev])

    def _state(self, full: bool, record: StageResult) -> dict[str, Any]:
        """What a checkpoint holds: weights and record, and when `full` all a resume needs."""
        saved: dict[str, Any] = {"model": self.stage.model.state_dict(),
                                 "result": asdict(record)}
        if full:
            assert self._optimizer is not None, "load() comes first"
            saved |= {"optimizer": self._optimizer.state_dict(), "rng": _rng_state(),
                      "flops_by_shape": self._flops_by_shape}
        branched = self._branched
        return saved | ({"branched": branched} if branched is not None else {})

    def _newest_usable(self) -> tuple[Path, dict[str, Any]] | None:
        """The first loadable of the final, latest and previous checkpoints; None when there
        are none.

        Unusable files are logged and deleted (by rank 0, which writes them) once a usable one
        (or, with `restart_corrupt`, a fresh start) replaces them; when neither does, RunFailed
        names each file and the remedy.
        """
        stage, log = self.stage, self.log
        bad: list[tuple[Path, str]] = []
        for path, full in [(self.final, False), (self.latest, True), (self.prev, True)]:
            if not path.exists():
                continue
            try:
                saved = _load(path, stage, self.device, full)
            except ValueError as err:
                log.warning("stage %s: checkpoint %s is unusable (%s)", stage.name, path, err)
                bad.append((path, str(err)))
                continue
            if bad:
                log.warning("stage %s: falling back to the older checkpoint %s", stage.name,
                            path)
            if self.here.main:
                _discard(unusable for unusable, _ in bad)
            return path, saved
        if bad and not self.restart_corrupt:
            listed = "; ".join(f"{path}: {reason}" for path, reason in bad)
            raise RunFailed(f"stage {stage.name}: no usable checkpoint ({listed}); "
                            f"{RESTART_HINT}")
        if bad:
            log.warning("stage %s: discarding the unusable checkpoints, training from the start",
                        stage.name)
            if self.here.main:
                _discard(unusable for unusable, _ in bad)
        return None

    def _branch_start(self, source: tuple[str, Path]) -> tuple[Path, dict[str, Any]] | None:
        """The branch checkpoint a longer rung saved for this stage's budget, marked with where
        it came from; None (logged) when it is missing or unusable, and the stage trains from
        its start (the same computation, only not shared). The file is the other run's: left
        as is."""
        stage, budget, log = self.stage, self.budget, self.log
        run_id, path = source
        if not path.exists():
            log.info("stage %s: no branch checkpoint %s from run %s; training the shared steps "
                     "from the start", stage.name, path, run_id)
            return None
        try:
            saved = _load(path, stage, self.device, full=True)
            if saved.get("budget") != [budget.unit, budget.amount]:
                raise ValueError(f"it was saved for a budget of {saved.get('budget')}, not "
                                 f"{[budget.unit, budget.amount]}")
        except ValueError as err:
            log.warning("stage %s: branch checkpoint %s of run %s is unusable (%s); training "
                        "the shared steps from the start", stage.name, path, run_id, err)
            return None
        saved["branched"] = {"run": run_id, "step": saved["result"]["steps"]}
        log.info("stage %s: branched from run %s at step %d (%s)", stage.name, run_id,
                 saved["result"]["steps"], path)
        return path, saved

    def _branch_points(self, cost: StepCost) -> dict[int, list[tuple[Path, StageBudget, int]]]:
        """Step count -> the branch files to save then (file, lower rung's budget, its
        horizon), each rung's horizon priced at `cost`, the cost of this stage's first step."""
        points: dict[int, list[tuple[Path, StageBudget, int]]] = {}
        for path, lower in (self.branches.saves if self.branches is not None else {}).items():
            try:
                horizon = lower.horizon(cost)
            except UserError as err:  # that rung fails on its own; this one goes on
                self.log.warning("stage %s: no branch checkpoint for %s: %s", self.stage.name,
                                 path.name, err)
                continue
            assert horizon is not None  # a ladder of seconds does not branch
            at = shared_steps(self.stage.optim, horizon)
            if at > 0:
                points.setdefault(at, []).append((path, lower, horizon))
        return points


def _first_step_cost(result: StageResult, cost: StepCost) -> StepCost:
    """What the stage's first step cost: read from the curve after a resume, else `cost`, the
    cost of the step just taken, the first."""
    if result.curve:
        return StepCost(result.curve[0]["flops"], result.curve[0]["tokens"])
    return cost


def _check(saved: Any, stage: Stage, full: bool) -> None:
    """Raise ValueError unless `saved` is a checkpoint of this stage's model."""
    keys = _FULL_KEYS if full else _FULL_KEYS[:2]
    if not isinstance(saved, dict) or any(k not in saved for k in keys):
        raise ValueError(f"not a checkpoint: expected a dict with the keys {', '.join(keys)}")
    weights, expected = saved["model"], stage.model.state_dict()
    if not isinstance(weights, dict) or weights.keys() != expected.keys() or any(
            not isinstance(weights[k], torch.Tensor) or weights[k].shape != v.shape
            for k, v in expected.items()):
        raise ValueError(f"its weights do not match the model of stage {stage.name}")
    if not isinstance(saved["result"], dict) or "name" not in saved["result"] or not set(
            saved["result"]) <= {f.name for f in fields(StageResult)}:
        raise ValueError("its 'result' is not a stage record")


def _load(path: Path, stage: Stage, device: torch.device, full: bool) -> dict[str, Any]:
    """The checkpoint at `path`, unpickled without running code and checked against the stage;
    ValueError says why it cannot be used."""
    try:
        with open_read(path) as f:  # a link is not followed out of the run's folder
            saved = torch.load(f, map_location=device, weights_only=True)
    except LinkRefused as err:
        raise ValueError(str(err)) from err
    except Exception as err:  # truncated, corrupted, planted: anything unreadable is unusable
        raise ValueError(describe_load_error(err)) from err
    _check(saved, stage, full)
    return saved


def _discard(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain numbers (no numpy or Python objects), so a
    checkpoint loads with `weights_only=True`."""
    version, words, gauss = random.getstate()
    # numpy's stub picks the dict overload; called bare, get_state() returns the legacy tuple
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, cached = legacy
    state = {"torch": torch.get_rng_state(),
             "python": [version, torch.tensor(words, dtype=torch.int64), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore `_rng_state()`; its tensors may have been loaded onto the training device."""
    torch.set_rng_state(state["torch"].cpu())
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
