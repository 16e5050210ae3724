"""The one training loop every family uses: budgeted, checkpointed, resumable.

A family describes a stage (model, trainable parameters, optimiser settings, the micro-batches of
step k, the loss of one micro-batch); this loop spends the stage's budget on it. Batches are a pure
function of the step index and all state (model, optimiser, RNG, meter, curve) is checkpointed
atomically, so a run killed at any point resumes to the same result as an uninterrupted one.

Several processes (torchrun) train one stage together through DistributedDataParallel: each
takes its share of every step's global batch (`bench.training.distributed.local_part`), gradients
are averaged, and rank 0 alone writes checkpoints. Step costs count every rank's work, so a budget
buys the same steps on any number of devices.

Checkpoints hold only tensors and plain data and are loaded with `weights_only=True`: a results
folder is shared and copied, and unpickling arbitrary objects from it could run code. The
previous checkpoint is kept as `<stage>.prev.pt`; an unreadable one is skipped for the next, and
when none is left the stage fails naming the files, or (`restart_corrupt`) starts over.

On a ladder of budgets trained on a wsd schedule, rungs share their warm-up and stable phase
(Hägele et al. 2024, arXiv 2405.18392): the longest rung saves a full checkpoint where each lower
rung's cooldown begins (`Branches`), and a lower rung starts there and trains its cooldown only.
"""

import hashlib
import logging
import math
import pickle
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from bench.contract import Stage, StageResult, StepCost
from bench.errors import RunFailed, UserError
from bench.schema import OptimConfig
from bench.training.budget import StageBudget, lr_factor, shared_steps
from bench.training.distributed import World, from_main, world
from bench.training.flops import count_flops
from bench.util.atomic import (
    LinkRefused,
    enter_dir,
    no_links,
    open_read,
    remove_stale_temporaries,
    save_torch,
)
from bench.util.progress import progress as progress_display


def _optimizer(params: list[nn.Parameter], cfg: OptimConfig, device: torch.device
               ) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, fused=device.type == "cuda")


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


class _LossModule(nn.Module):
    """The stage's model with its loss as the forward, so DistributedDataParallel can wrap
    objectives that reach into submodules (CWT reads the embedding matrix directly).
    `forward(batch, eager)` runs the loss as written or compiled."""

    def __init__(self, model: nn.Module, loss: Callable[[Any], torch.Tensor],
                 compiled: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss, self.compiled = loss, compiled

    def forward(self, batch: Any, eager: bool) -> torch.Tensor:
        return (self.loss if eager else self.compiled)(batch)


def _graph_parameters(loss: torch.Tensor) -> set[int]:
    """ids of the parameters `loss` was computed from (the leaves of its autograd graph)."""
    found, seen, pending = set(), set(), [loss.grad_fn]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad: a leaf that wants a gradient
            found.add(id(node.variable))
        pending.extend(child for child, _ in node.next_functions)
    return found


class _StepLoss:
    """Forward and backward of one micro-batch: eager, compiled, and through DDP when several
    processes train.

    FLOPs are measured on the first micro-batch of each shape by running it eagerly under the
    counter (a compiled graph hides its operations from it), so `compile` changes no count.
    With several processes, gradients are averaged when the step's last micro-batch is done.
    """

    def __init__(self, stage: Stage, device: torch.device, world: World,
                 flops_by_shape: dict[tuple, int]) -> None:
        self.stage, self.device, self.world = stage, device, world
        self.flops_by_shape = flops_by_shape
        compiled = torch.compile(stage.loss) if stage.compile else stage.loss
        self.module: nn.Module = _LossModule(stage.model, stage.loss, compiled)
        self.wrapped: nn.Module | None = self.module if world.size == 1 else None
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if stage.bf16
                         else nullcontext())

    def _distributed(self, batch: Any) -> nn.Module:
        """The module in DDP, averaging the gradients of the stage's parameters that its loss
        uses: one forward in eval mode (no running statistics move) finds them. The others (a
        softmax head under CWT) get no gradient, and DDP would wait for them at every step."""
        from torch.nn.parallel import DistributedDataParallel

        self.module.eval()
        with torch.enable_grad(), self.autocast:
            used = _graph_parameters(self.module(batch, True))
        self.module.train()
        averaged = {id(p) for p in self.stage.parameters} & used
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(  # every alias
            self.module, [name for name, p in self.module.named_parameters(remove_duplicate=False)
                          if id(p) not in averaged])
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.module, device_ids=ids)

    def __call__(self, batch: Any, step: int, index: int, n_micro: int
                 ) -> tuple[torch.Tensor, int]:
        """(detached loss, FLOPs) of micro-batch `index` of this process's `n_micro` in
        `step`; gradients accumulate in .grad and are averaged over processes after the last.

        The random generators are seeded from (seed, stage, step, the micro-batch's place in
        the global batch), so dropout and sampled negatives do not depend on how many
        processes share the step, nor on where a run was resumed."""
        if self.wrapped is None:
            self.wrapped = self._distributed(batch)
        module = self.wrapped
        torch.manual_seed(_micro_seed(self.stage, step, self.world.rank * n_micro + index))
        key = _shape_key(batch)
        measured = key in self.flops_by_shape

        def run() -> torch.Tensor:
            if self.world.size > 1 and index < n_micro - 1:
                # the DDP wrapper's; torch types a module's attributes as Tensor | Module
                deferred = module.no_sync()  # type: ignore[operator]
            else:
                deferred = nullcontext()
            with deferred:
                with self.autocast:
                    loss = module(batch, not measured)
                (loss / n_micro).backward()
            return loss.detach()

        if measured:
            return run(), self.flops_by_shape[key]
        holder: list[torch.Tensor] = []
        self.flops_by_shape[key] = count_flops(lambda: holder.append(run()))
        return holder[0], self.flops_by_shape[key]


def _micro_seed(stage: Stage, step: int, index: int) -> int:
    mixed = hashlib.sha256(f"{stage.seed}/{stage.name}/{step}/{index}".encode()).digest()
    return int.from_bytes(mixed[:8], "little") >> 1


def _shape_key(batch: Any) -> tuple:
    tensors = batch if isinstance(batch, (list, tuple)) else [batch]
    return tuple(tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor))


class _Clock:
    """Training seconds per step without waiting for the device in every step: on a GPU an
    event is recorded after each step and read when pending steps are flushed; on a CPU the
    work is done when the call returns."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        """A new stretch of training steps begins (after a flush, validation or checkpoint)."""
        self.marks = [self._now()]

    def lap(self) -> None:
        """A step ended."""
        self.marks.append(self._now())

    def read(self) -> list[float]:
        """Seconds of each step since `start`, waiting for the device once."""
        marks, self.marks = self.marks, self.marks[-1:]
        if not self.cuda:
            return [b - a for a, b in pairwise(marks)]
        marks[-1].synchronize()
        return [a.elapsed_time(b) / 1000 for a, b in pairwise(marks)]


# Losses and step times reach the host every this many steps (and at every validation,
# checkpoint and the last step); a seconds budget reads them every step.
FLUSH_EVERY = 10


RESTART_HINT = ("rerun with `bench run --restart-corrupt` to discard the stage's checkpoints and "
                "train it again from its start")
_FULL_KEYS = ("model", "result", "optimizer", "rng", "flops_by_shape")


def describe_load_error(err: BaseException) -> str:
    """Why a saved file could not be loaded, in words that do not invite unsafe loading (torch's
    own message suggests `weights_only=False`)."""
    if isinstance(err, pickle.UnpicklingError):
        return ("refused: it holds objects other than tensors and plain data (loading them could "
                "run code), or it is corrupted")
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else 'no details'}"


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


def _newest_usable(candidates: list[tuple[Path, bool]], stage: Stage, device: torch.device,
                   log: logging.Logger, restart_corrupt: bool, owner: bool = True
                   ) -> tuple[Path, dict[str, Any]] | None:
    """The first loadable of `candidates` (path, full), newest first; None when there are none.

    Unusable files are logged and deleted (by the `owner`, the process that writes them) once
    a usable one (or, with `restart_corrupt`, a fresh start) replaces them; when neither does,
    RunFailed names each file and the remedy.
    """
    bad: list[tuple[Path, str]] = []
    for path, full in candidates:
        if not path.exists():
            continue
        try:
            saved = _load(path, stage, device, full)
        except ValueError as err:
            log.warning("stage %s: checkpoint %s is unusable (%s)", stage.name, path, err)
            bad.append((path, str(err)))
            continue
        if bad:
            log.warning("stage %s: falling back to the older checkpoint %s", stage.name, path)
        if owner:
            _discard(unusable for unusable, _ in bad)
        return path, saved
    if bad and not restart_corrupt:
        listed = "; ".join(f"{path}: {reason}" for path, reason in bad)
        raise RunFailed(f"stage {stage.name}: no usable checkpoint ({listed}); {RESTART_HINT}")
    if bad:
        log.warning("stage %s: discarding the unusable checkpoints, training from the start",
                    stage.name)
        if owner:
            _discard(unusable for unusable, _ in bad)
    return None


def _discard(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


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


def branch_file(ckpt_dir: Path, stage: str, budget: StageBudget) -> Path:
    """Where the longest rung keeps the branch checkpoint of the lower rung of `budget`."""
    return ckpt_dir / "branches" / f"{stage}.{budget.unit}-{budget.amount!r}.pt"


def _branch_start(stage: Stage, budget: StageBudget, source: tuple[str, Path],
                  device: torch.device, log: logging.Logger
                  ) -> tuple[Path, dict[str, Any]] | None:
    """The branch checkpoint a longer rung saved for this stage's budget, marked with where it
    came from; None (logged) when it is missing or unusable, and the stage trains from its
    start (the same computation, only not shared). The file is the other run's: left as is."""
    run_id, path = source
    if not path.exists():
        log.info("stage %s: no branch checkpoint %s from run %s; training the shared steps "
                 "from the start", stage.name, path, run_id)
        return None
    try:
        saved = _load(path, stage, device, full=True)
        if saved.get("budget") != [budget.unit, budget.amount]:
            raise ValueError(f"it was saved for a budget of {saved.get('budget')}, not "
                             f"{[budget.unit, budget.amount]}")
    except ValueError as err:
        log.warning("stage %s: branch checkpoint %s of run %s is unusable (%s); training the "
                    "shared steps from the start", stage.name, path, run_id, err)
        return None
    saved["branched"] = {"run": run_id, "step": saved["result"]["steps"]}
    log.info("stage %s: branched from run %s at step %d (%s)", stage.name, run_id,
             saved["result"]["steps"], path)
    return path, saved


def _branch_points(branches: Branches | None, stage: Stage, cost: StepCost,
                   log: logging.Logger) -> dict[int, list[tuple[Path, StageBudget, int]]]:
    """Step count -> the branch files to save then (file, lower rung's budget, its horizon),
    each rung's horizon priced on this stage's first step, as that rung prices its own."""
    points: dict[int, list[tuple[Path, StageBudget, int]]] = {}
    for path, lower in (branches.saves if branches is not None else {}).items():
        try:
            horizon = lower.horizon(cost)
        except UserError as err:  # that rung fails on its own; this one goes on
            log.warning("stage %s: no branch checkpoint for %s: %s", stage.name, path.name, err)
            continue
        assert horizon is not None  # a ladder of seconds does not branch
        at = shared_steps(stage.optim, horizon)
        if at > 0:
            points.setdefault(at, []).append((path, lower, horizon))
    return points


def _first_step_cost(result: StageResult, step_flops: int, step_items: int) -> StepCost:
    """What the stage's first step cost: read from the curve after a resume, else this step."""
    if result.curve:
        return StepCost(result.curve[0]["flops"], result.curve[0]["tokens"])
    return StepCost(step_flops, step_items)


def train_stage(stage: Stage, budget: StageBudget, ckpt_dir: Path, device: torch.device,
                log: logging.Logger, progress: bool = True,
                on_validate: Callable[[float, dict[str, float]], None] | None = None,
                restart_corrupt: bool = False, branches: Branches | None = None
                ) -> StageResult:
    """Train `stage` until its budget is spent; resume from `ckpt_dir` where a run left off.

    `on_validate(done, metrics)` hears every validation: the fraction of the budget spent and
    the validation metrics (a sweep's pruner listens here and may stop the run).
    `restart_corrupt` trains the stage from its start when none of its checkpoints is usable,
    instead of failing. `branches`: the stage's part in a wsd ladder (see `Branches`); its own
    checkpoints come first, so a branched stage resumes from them, not from the branch.
    """
    here = World() if stage.solo else world()
    ckpt_dir = enter_dir(ckpt_dir)
    for leftover in [p for folder in (ckpt_dir, no_links(ckpt_dir, ckpt_dir / "branches"))
                     if folder.is_dir() for p in remove_stale_temporaries(folder)
                     ] if here.main else []:
        log.info("removed %s, left by a killed process", leftover)
    final_path = ckpt_dir / f"{stage.name}.final.pt"
    latest_path, prev_path = ckpt_dir / f"{stage.name}.pt", ckpt_dir / f"{stage.name}.prev.pt"
    found = _newest_usable([(final_path, False), (latest_path, True), (prev_path, True)],
                           stage, device, log, restart_corrupt, here.main)
    if found is None and branches is not None and branches.source is not None:
        found = _branch_start(stage, budget, branches.source, device, log)
    branched = found[1].get("branched") if found is not None else None
    if branched is not None and branches is not None and branches.heard is not None:
        branches.heard(branched)
    if found is not None and found[0] == final_path:  # finished earlier: weights and record
        stage.model.load_state_dict(found[1]["model"])
        if here.main:  # left by a kill just after the final write
            _discard([latest_path, prev_path])
        log.info("stage %s: already trained, loaded %s", stage.name, final_path.name)
        return StageResult(**found[1]["result"])

    optimizer = _optimizer(stage.parameters, stage.optim, device)
    result = StageResult(stage.name, world_size=here.size)
    flops_by_shape: dict[tuple, int] = {}
    if found is not None:
        path, saved = found
        result = StageResult(**saved["result"])
        if result.world_size != here.size:  # same global batches: equal up to float sums
            log.warning("stage %s: resuming with %d processes a run checkpointed with %d",
                        stage.name, here.size, result.world_size)
            result.world_size = here.size
        stage.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        flops_by_shape = saved["flops_by_shape"]
        _set_rng_state(saved["rng"])
        if path.parent == ckpt_dir:  # else it branched off a longer rung (logged there)
            log.info("stage %s: resuming at step %d from %s", stage.name, result.steps,
                     path.name)
    step_loss = _StepLoss(stage, device, here, flops_by_shape)
    points: dict[int, list[tuple[Path, StageBudget, int]]] | None = None

    def state(full: bool, record: StageResult) -> dict[str, Any]:
        saved: dict[str, Any] = {"model": stage.model.state_dict(), "result": asdict(record)}
        if full:
            saved |= {"optimizer": optimizer.state_dict(), "rng": _rng_state(),
                      "flops_by_shape": step_loss.flops_by_shape}
        return saved | ({"branched": branched} if branched is not None else {})

    def checkpoint(path: Path, full: bool) -> None:
        if here.main:
            save_torch(state(full, result), path, prev_path if full else None)

    def save_branches(due: list[tuple[Path, StageBudget, int]]) -> None:
        """Full checkpoints for lower rungs, as they would be at this step, with their own
        horizon and budget."""
        for path, lower, horizon in due if here.main else []:
            enter_dir(path.parent)  # branches/: refused when it is a link
            save_torch(state(True, replace(result, horizon=horizon))
                       | {"budget": [lower.unit, lower.amount]}, path)
            log.info("stage %s: saved the branch checkpoint %s at step %d", stage.name,
                     path.name, result.steps)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = progress_display(f"train {stage.name}", "step", result.steps, enabled=progress)
    clock, pending = _Clock(device), _Pending(stage.name, here)
    stage.model.train()
    clock.start()
    while True:
        if budget.unit == "seconds" and result.seconds >= budget.amount:
            break
        if result.horizon is not None and result.steps >= result.horizon:
            break
        if budget.unit == "flops" and result.flops >= budget.amount:
            break  # steps of varying shape: the horizon was priced on the first one
        step_started = time.perf_counter()
        micro = stage.micro_batches(result.steps)
        losses, step_flops, step_items = [], 0, 0
        for i, batch in enumerate(micro):
            loss, flops = step_loss(batch, result.steps, i, len(micro))
            losses.append(loss)
            step_flops += flops * here.size  # every rank's share has the same shape
            step_items += stage.items(batch) * here.size
        if result.horizon is None and budget.unit != "seconds":
            result.horizon = budget.horizon(StepCost(step_flops, step_items))
            log.info("stage %s: %s %g buys %d steps (%d FLOPs, %d items per step, %d "
                     "processes)", stage.name, budget.unit, budget.amount, result.horizon,
                     step_flops, step_items, here.size)
        if points is None:
            points = _branch_points(branches, stage,
                                    _first_step_cost(result, step_flops, step_items), log)
        if result.horizon is not None:
            done = (result.steps + 1) / result.horizon
        else:
            done = (result.seconds + time.perf_counter() - step_started) / budget.amount
        lr = stage.optim.lr * lr_factor(stage.optim, done, result.horizon)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if stage.optim.clip is not None:
            nn.utils.clip_grad_norm_(stage.parameters, stage.optim.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.lap()
        result.steps += 1
        result.flops += step_flops
        result.items += step_items
        pending.add(torch.stack(losses).float().mean(), {
            "stage": stage.name, "step": result.steps, "tokens": result.items,
            "flops": result.flops, "lr": lr})
        bar.update(1)
        last = result.horizon is not None and result.steps >= result.horizon
        due = result.steps % stage.checkpoint_every == 0 or result.steps in points or (
            stage.validate is not None and result.steps % stage.validate_every == 0)
        if not (last or due or budget.unit == "seconds" or result.steps % FLUSH_EVERY == 0):
            continue
        rows = pending.flush(clock.read(), result)
        if budget.unit == "seconds":
            last = result.seconds >= budget.amount
        validating = stage.validate is not None and (
            result.steps % stage.validate_every == 0 or last)
        checkpointing = result.steps % stage.checkpoint_every == 0 and not last
        bar.set_postfix(loss=f"{result.final_loss:.3f}", lr=f"{lr:.2e}")
        if validating:
            metrics = {f"val_{k}": v for k, v in
                       _validate(stage, step_loss.autocast, result.steps, here).items()}
            rows[-1] |= metrics
            if on_validate is not None:
                on_validate(done, metrics)
        result.curve.extend(rows)
        save_branches(points.get(result.steps, []))
        if checkpointing:
            checkpoint(latest_path, full=True)
        if last:
            break
        clock.start()
    if pending.rows:  # a FLOPs budget spent before the horizon (steps of varying shape)
        result.curve.extend(pending.flush(clock.read(), result))
    bar.close()
    if device.type == "cuda":
        peak = float(torch.cuda.max_memory_allocated(device))
        result.peak_memory = peak if math.isnan(result.peak_memory) else max(
            peak, result.peak_memory)
    checkpoint(final_path, full=False)
    if here.main:
        _discard([latest_path, prev_path])
    log.info("stage %s: %d steps, %.4g FLOPs, %d items, %.1f s, final loss %.4f", stage.name,
             result.steps, result.flops, result.items, result.seconds, result.final_loss)
    return result


class _Pending:
    """Steps whose losses are still on the device; `flush` reads them in one transfer (averaged
    over the processes), checks them, and completes their curve rows."""

    def __init__(self, stage: str, here: World) -> None:
        self.stage, self.here = stage, here
        self.losses: list[torch.Tensor] = []
        self.rows: list[dict[str, Any]] = []

    def add(self, loss: torch.Tensor, row: dict[str, Any]) -> None:
        self.losses.append(loss)
        self.rows.append(row)

    def flush(self, seconds: list[float], result: StageResult) -> list[dict[str, Any]]:
        """The pending rows with their losses and cumulative training seconds; the stage
        record's seconds and final loss move on. A non-finite loss fails the stage."""
        losses = torch.stack(self.losses)
        if self.here.size > 1:
            import torch.distributed as dist

            dist.all_reduce(losses)
            losses = losses / self.here.size
        elapsed = torch.tensor(seconds, dtype=torch.float64, device=losses.device)
        if self.here.size > 1:  # a step ends when its slowest process is done
            import torch.distributed as dist

            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        seconds, values = elapsed.tolist(), losses.tolist()
        rows, self.losses, self.rows = self.rows, [], []
        for row, loss, spent in zip(rows, values, seconds, strict=True):
            if not math.isfinite(loss):
                raise RunFailed(f"stage {self.stage}: loss is {loss} at step {row['step'] - 1}")
            result.seconds += spent
            row |= {"loss": loss, "wall": result.seconds}
        result.final_loss = values[-1]
        return rows


def _validate(stage: Stage, autocast: Any, steps: int, here: World) -> dict[str, float]:
    """The stage's validation metrics, computed by rank 0 and shared with every process."""
    assert stage.validate is not None
    metrics: dict[str, float] = {}
    if here.main:
        stage.model.eval()
        with torch.no_grad(), autocast:
            metrics = {k: float(v) for k, v in stage.validate(steps).items()}
        stage.model.train()
    return from_main(metrics) if here.size > 1 else metrics
