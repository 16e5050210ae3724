"""The one training loop every family uses: budgeted, checkpointed, resumable.

A family describes a stage (model, trainable parameters, optimiser settings, the micro-batches of
step k, the loss of one micro-batch); this loop spends the stage's budget on it. Batches are a pure
function of the step index and all state (model, optimiser, RNG, meter, curve) is checkpointed
atomically, so a run killed at any point resumes to the same result as an uninterrupted one.

Several processes (torchrun) train one stage together through DistributedDataParallel: each
takes its share of every step's global batch (`bench.training.distributed.local_part`), gradients
are averaged, and rank 0 alone writes checkpoints. Step costs count every rank's work, so a budget
buys the same steps on any number of devices.

The loop reads as it runs: load (`StageCheckpoints`), step, read the losses when due, validate
when due, save when due, finish; the budget says when it stops (`StageBudget.spent`) and
which step is its last. A cluster's warning before preemption or a time limit (SIGUSR1/2) is
held until the next read of the losses (at most FLUSH_EVERY steps later), where the stage saves
a checkpoint and stops, and the warning's handler (submitit's: requeue) acts; a warning at the
last read waits for the stage's final save, so the requeued job finds the stage trained.

A `StageListener` hears the stage as it goes (where it starts, each read of the losses, each
save): the run's live files and trackers follow a run through it without the loop knowing them.
"""

import hashlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.contract import Stage, StageResult, StepCost
from bench.errors import RunFailed
from bench.schema import OptimConfig
from bench.training.budget import StageBudget, lr_factor
from bench.training.checkpoints import Branches, StageCheckpoints
from bench.training.distributed import World, from_main, world
from bench.training.flops import count_flops
from bench.util.progress import progress as progress_display
from bench.util.signals import WARNING_SIGNALS, signals_held


def _optimizer(params: list[nn.Parameter], cfg: OptimConfig, device: torch.device
               ) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, fused=device.type == "cuda")


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


class StageListener:
    """Hears a stage as it trains (this base hears nothing). Called in every process; only
    rank 0 is handed a listener that writes anything."""

    def started(self, result: StageResult) -> None:
        """The stage starts from `result`: its first step, its checkpoint (`result.curve` the
        rows it holds) or, finished earlier, its final record."""

    def read(self, result: StageResult, rows: list[dict[str, Any]]) -> None:
        """`rows` reached the host (the last holding any validation's `val_*` metrics) and
        joined `result.curve`."""

    def saved(self, result: StageResult) -> None:
        """A checkpoint holds the stage up to `result` (its final one, once it finished)."""


# Losses and step times reach the host every this many steps (and at every validation,
# checkpoint and the last step); a seconds budget reads them every step.
FLUSH_EVERY = 10


def train_stage(stage: Stage, budget: StageBudget, ckpt_dir: Path, device: torch.device,
                log: logging.Logger, progress: bool = True,
                on_validate: Callable[[float, dict[str, float]], None] | None = None,
                restart_corrupt: bool = False, branches: Branches | None = None,
                listener: StageListener | None = None, label: str = "") -> StageResult:
    """Train `stage` until its budget is spent; resume from `ckpt_dir` where a run left off.

    `on_validate(done, metrics)` hears every validation: the fraction of the budget spent and
    the validation metrics (a sweep's pruner listens here and may stop the run).
    `restart_corrupt` trains the stage from its start when none of its checkpoints is usable,
    instead of failing. `branches`: the stage's part in a wsd ladder (see `Branches`); its own
    checkpoints come first, so a branched stage resumes from them, not from the branch.
    `listener` hears the stage as it goes; `label` names the run on the progress display.
    """
    here = World() if stage.solo else world()
    listener = listener or StageListener()
    checkpoints = StageCheckpoints(stage, budget, ckpt_dir, device, here, log, restart_corrupt,
                                   branches)
    trained = checkpoints.load_trained()
    if trained is not None:
        listener.started(trained)
        return trained
    optimizer = _optimizer(stage.parameters, stage.optim, device)
    result, flops_by_shape = checkpoints.load(optimizer)
    listener.started(result)
    step_loss = _StepLoss(stage, device, here, flops_by_shape)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = progress_display(" ".join(filter(None, [label, f"train {stage.name}"])), "step",
                           result.steps, enabled=progress, total=result.horizon)
    clock, pending = _Clock(device), _Pending(stage.name, here)
    train_step = _TrainStep(stage, budget, optimizer, step_loss, clock, pending, log)
    stage.model.train()
    clock.start()
    stopping = False
    # a cluster's warning: the stage saves at its next read, then the warning acts
    with signals_held(WARNING_SIGNALS) as warned:
        while not budget.spent(result):
            cost, lr, done = train_step(result)
            if bar.total is None and result.horizon is not None:  # priced on the first step
                bar.total = result.horizon
                bar.refresh()
            bar.update(1)
            if not _read_due(stage, budget, result, checkpoints.due(result, cost)):
                continue
            rows = pending.flush(clock.read(), result)
            last = budget.last_step(result)  # a seconds budget's meter moved with the read
            stopping = _agreed(bool(warned), here, device) and not last
            bar.set_postfix(loss=f"{result.final_loss:.3f}", lr=f"{lr:.2e}")
            if _validating(stage, result.steps, last):
                metrics = {f"val_{k}": v for k, v in
                           _validate(stage, step_loss.autocast, result.steps, here).items()}
                rows[-1] |= metrics
                log.info("stage %s: step %d: %s", stage.name, result.steps,
                         ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
                if on_validate is not None:
                    on_validate(done, metrics)
            result.curve.extend(rows)
            listener.read(result, rows)
            if checkpoints.save(result, last, now=stopping):
                listener.saved(result)
            if last or stopping:
                break
            clock.start()
        if not stopping:  # a warning at the last read waits for the stage's final save
            if pending.rows:  # a FLOPs budget spent before the horizon (steps of varying shape)
                rows = pending.flush(clock.read(), result)
                result.curve.extend(rows)
                listener.read(result, rows)
            bar.close()
            if device.type == "cuda":
                peak = float(torch.cuda.max_memory_allocated(device))
                result.peak_memory = peak if math.isnan(result.peak_memory) else max(
                    peak, result.peak_memory)
            checkpoints.finish(result)
            listener.saved(result)
            log.info("stage %s: %d steps, %.4g FLOPs, %d items, %.1f s, final loss %.4f%s",
                     stage.name, result.steps, result.flops, result.items, result.seconds,
                     result.final_loss,
                     "; warned by the cluster, saved as finished" if warned else "")
    if stopping:  # the warning's handler returned (not the main task of a job): stop here too
        raise SystemExit(f"stage {stage.name}: warned by the cluster, stopped at step "
                         f"{result.steps}; resumes from its checkpoint")
    return result


def _read_due(stage: Stage, budget: StageBudget, result: StageResult, saving: bool) -> bool:
    """Whether the losses and step times are read after the step that brought the stage to
    `result` (the device is waited for): before a save (`saving`) or a validation, after the
    schedule's last step, after every step of a seconds budget (its meter is the time read),
    and every FLUSH_EVERY steps."""
    return (saving or budget.last_step(result) or _validating(stage, result.steps, last=False)
            or budget.unit == "seconds" or result.steps % FLUSH_EVERY == 0)


def _agreed(warned: bool, here: World, device: torch.device) -> bool:
    """Whether any process was warned (`bench.util.signals`): the processes stop together, at
    the same read, or one would wait for the others in a collective for ever."""
    if here.size == 1:
        return warned
    import torch.distributed as dist

    flag = torch.tensor([float(warned)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _validating(stage: Stage, steps: int, last: bool) -> bool:
    """Whether the stage validates after `steps`: every `validate_every` steps and after the
    last."""
    return stage.validate is not None and (steps % stage.validate_every == 0 or last)


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


class _TrainStep:
    """One optimizer step: the step's micro-batches forward and backward, its horizon priced
    on the stage's first step, the scheduled learning rate, clipping and the update; the record
    moves on and the step's loss waits on the device to be read."""

    def __init__(self, stage: Stage, budget: StageBudget, optimizer: torch.optim.Optimizer,
                 step_loss: _StepLoss, clock: _Clock, pending: _Pending,
                 log: logging.Logger) -> None:
        self.stage, self.budget, self.optimizer = stage, budget, optimizer
        self.step_loss, self.clock, self.pending, self.log = step_loss, clock, pending, log

    def __call__(self, result: StageResult) -> tuple[StepCost, float, float]:
        """Take step `result.steps`: (what it cost, its learning rate, the fraction of the
        budget spent after it)."""
        stage, budget, size = self.stage, self.budget, self.step_loss.world.size
        step_started = time.perf_counter()
        micro = stage.micro_batches(result.steps)
        losses, step_flops, step_items = [], 0, 0
        for i, batch in enumerate(micro):
            loss, flops = self.step_loss(batch, result.steps, i, len(micro))
            losses.append(loss)
            step_flops += flops * size  # every rank's share has the same shape
            step_items += stage.items(batch) * size
        cost = StepCost(step_flops, step_items)
        if result.horizon is None and budget.unit != "seconds":
            result.horizon = budget.horizon(cost)
            self.log.info("stage %s: %s %g buys %d steps (%d FLOPs, %d items per step, %d "
                          "processes)", stage.name, budget.unit, budget.amount, result.horizon,
                          step_flops, step_items, size)
        if result.horizon is not None:
            done = (result.steps + 1) / result.horizon
        else:
            done = (result.seconds + time.perf_counter() - step_started) / budget.amount
        lr = stage.optim.lr * lr_factor(stage.optim, done, result.horizon)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if stage.optim.clip is not None:
            nn.utils.clip_grad_norm_(stage.parameters, stage.optim.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.clock.lap()
        result.steps += 1
        result.flops += step_flops
        result.items += step_items
        self.pending.add(torch.stack(losses).float().mean(), {
            "stage": stage.name, "step": result.steps, "tokens": result.items,
            "flops": result.flops, "lr": lr})
        return cost, lr, done


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
