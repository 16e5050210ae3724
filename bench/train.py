"""The one training loop every family uses: budgeted, checkpointed, resumable.

A family describes a stage (model, trainable parameters, optimiser settings, the micro-batches of
step k, the loss of one micro-batch); this loop spends the stage's budget on it. Batches are a pure
function of the step index and all state (model, optimiser, RNG, meter, curve) is checkpointed
atomically, so a run killed at any point resumes to the same result as an uninterrupted one.

Checkpoints hold only tensors and plain data and are loaded with `weights_only=True`: a results
folder is shared and copied, and unpickling arbitrary objects from it could run code. The
previous checkpoint is kept as `<stage>.prev.pt`; an unreadable one is skipped for the next, and
when none is left the stage fails naming the files, or (`restart_corrupt`) starts over.
"""

import logging
import math
import pickle
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.atomic import remove_stale_temporaries, save_torch
from bench.budget import StageBudget, lr_factor
from bench.errors import RunFailed
from bench.family import StepCost
from bench.flops import count_flops
from bench.progress import progress as progress_display
from bench.schema import OptimConfig


@dataclass
class Stage:
    """What a family hands to the loop for one training stage."""

    name: str
    model: nn.Module
    parameters: list[nn.Parameter]
    optim: OptimConfig
    micro_batches: Callable[[int], list[Any]]  # step index -> its micro-batches
    loss: Callable[[Any], torch.Tensor]  # mean loss of one micro-batch
    items: Callable[[Any], int]  # tokens (or images) in one micro-batch
    validate: Callable[[int], dict[str, float]] | None = None  # steps done -> metrics
    validate_every: int = 50
    checkpoint_every: int = 50
    bf16: bool = False


@dataclass
class StageResult:
    """What a stage consumed and reached; recorded per stage."""

    name: str
    steps: int = 0
    flops: float = 0.0
    items: int = 0
    seconds: float = 0.0
    final_loss: float = math.nan
    horizon: int | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.nan


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
    kind, keys, pos, has_gauss, cached = np.random.get_state()
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shape_key(batch: Any) -> tuple:
    tensors = batch if isinstance(batch, (list, tuple)) else [batch]
    return tuple(tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor))


def _forward_backward(stage: Stage, batch: Any, n_micro: int, autocast: Any,
                      flops_by_shape: dict[tuple, int]) -> tuple[torch.Tensor, int]:
    """Loss and gradients of one micro-batch; FLOPs measured on the first of each shape."""
    def run() -> torch.Tensor:
        with autocast:
            loss = stage.loss(batch)
        (loss / n_micro).backward()
        return loss.detach()

    key = _shape_key(batch)
    if key in flops_by_shape:
        return run(), flops_by_shape[key]
    holder: list[torch.Tensor] = []
    flops_by_shape[key] = count_flops(lambda: holder.append(run()))
    return holder[0], flops_by_shape[key]


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
    if not isinstance(saved["result"], dict) or set(saved["result"]) != {
            f.name for f in fields(StageResult)}:
        raise ValueError("its 'result' is not a stage record")


def _load(path: Path, stage: Stage, device: torch.device, full: bool) -> dict[str, Any]:
    """The checkpoint at `path`, unpickled without running code and checked against the stage;
    ValueError says why it cannot be used."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, corrupted, planted: anything unreadable is unusable
        raise ValueError(describe_load_error(err)) from err
    _check(saved, stage, full)
    return saved


def _newest_usable(candidates: list[tuple[Path, bool]], stage: Stage, device: torch.device,
                   log: logging.Logger, restart_corrupt: bool
                   ) -> tuple[Path, dict[str, Any]] | None:
    """The first loadable of `candidates` (path, full), newest first; None when there are none.

    Unusable files are logged and deleted once a usable one (or, with `restart_corrupt`, a
    fresh start) replaces them; when neither does, RunFailed names each file and the remedy.
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
        _discard(unusable for unusable, _ in bad)
        return path, saved
    if bad and not restart_corrupt:
        listed = "; ".join(f"{path}: {reason}" for path, reason in bad)
        raise RunFailed(f"stage {stage.name}: no usable checkpoint ({listed}); {RESTART_HINT}")
    if bad:
        log.warning("stage %s: discarding the unusable checkpoints, training from the start",
                    stage.name)
        _discard(unusable for unusable, _ in bad)
    return None


def _discard(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def train_stage(stage: Stage, budget: StageBudget, ckpt_dir: Path, device: torch.device,
                log: logging.Logger, progress: bool = True,
                on_validate: Callable[[float, dict[str, float]], None] | None = None,
                restart_corrupt: bool = False) -> StageResult:
    """Train `stage` until its budget is spent; resume from `ckpt_dir` where a run left off.

    `on_validate(done, metrics)` hears every validation: the fraction of the budget spent and
    the validation metrics (a sweep's pruner listens here and may stop the run).
    `restart_corrupt` trains the stage from its start when none of its checkpoints is usable,
    instead of failing.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for leftover in remove_stale_temporaries(ckpt_dir):
        log.info("removed %s, left by a killed process", leftover)
    final_path = ckpt_dir / f"{stage.name}.final.pt"
    latest_path, prev_path = ckpt_dir / f"{stage.name}.pt", ckpt_dir / f"{stage.name}.prev.pt"
    found = _newest_usable([(final_path, False), (latest_path, True), (prev_path, True)],
                           stage, device, log, restart_corrupt)
    if found is not None and found[0] == final_path:  # finished earlier: weights and record
        stage.model.load_state_dict(found[1]["model"])
        _discard([latest_path, prev_path])  # left by a kill just after the final write
        log.info("stage %s: already trained, loaded %s", stage.name, final_path.name)
        return StageResult(**found[1]["result"])

    optimizer = _optimizer(stage.parameters, stage.optim, device)
    result = StageResult(stage.name)
    flops_by_shape: dict[tuple, int] = {}
    if found is not None:
        path, saved = found
        stage.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        result = StageResult(**saved["result"])
        flops_by_shape = saved["flops_by_shape"]
        _set_rng_state(saved["rng"])
        log.info("stage %s: resuming at step %d from %s", stage.name, result.steps, path.name)

    def checkpoint(path: Path, full: bool) -> None:
        state: dict[str, Any] = {"model": stage.model.state_dict(), "result": asdict(result)}
        if full:
            state |= {"optimizer": optimizer.state_dict(), "rng": _rng_state(),
                      "flops_by_shape": flops_by_shape}
        save_torch(state, path, prev_path if full else None)

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if stage.bf16
                else nullcontext())
    bar = progress_display(f"train {stage.name}", "step", result.steps, enabled=progress)
    stage.model.train()
    while True:
        if budget.unit == "seconds" and result.seconds >= budget.amount:
            break
        if result.horizon is not None and result.steps >= result.horizon:
            break
        if budget.unit == "flops" and result.flops >= budget.amount:
            break  # steps of varying shape: the horizon was priced on the first one
        _sync(device)
        started = time.perf_counter()
        micro = stage.micro_batches(result.steps)
        losses, step_flops, step_items = [], 0, 0
        for batch in micro:
            loss, flops = _forward_backward(stage, batch, len(micro), autocast, flops_by_shape)
            losses.append(loss)
            step_flops += flops
            step_items += stage.items(batch)
        total_loss = float(torch.stack(losses).float().mean())  # one device sync per step
        if not math.isfinite(total_loss):
            raise RunFailed(f"stage {stage.name}: loss is {total_loss} at step {result.steps}")
        if result.horizon is None and budget.unit != "seconds":
            result.horizon = budget.horizon(StepCost(step_flops, step_items))
            log.info("stage %s: %s %g buys %d steps (%d FLOPs, %d items per step)", stage.name,
                     budget.unit, budget.amount, result.horizon, step_flops, step_items)
        if result.horizon is not None:
            done = (result.steps + 1) / result.horizon
        else:
            done = (result.seconds + time.perf_counter() - started) / budget.amount
        lr = stage.optim.lr * lr_factor(stage.optim, done, result.horizon)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if stage.optim.clip is not None:
            nn.utils.clip_grad_norm_(stage.parameters, stage.optim.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        result.seconds += time.perf_counter() - started
        result.steps += 1
        result.flops += step_flops
        result.items += step_items
        result.final_loss = total_loss
        row = {"stage": stage.name, "step": result.steps, "tokens": result.items,
               "flops": result.flops, "loss": total_loss, "lr": lr, "wall": result.seconds}
        last = (result.horizon is not None and result.steps >= result.horizon) or (
            budget.unit == "seconds" and result.seconds >= budget.amount)
        if stage.validate and (result.steps % stage.validate_every == 0 or last):
            stage.model.eval()
            with torch.no_grad(), autocast:
                row |= {f"val_{k}": float(v) for k, v in stage.validate(result.steps).items()}
            stage.model.train()
            if on_validate is not None:
                on_validate(done, {k: v for k, v in row.items() if k.startswith("val_")})
        result.curve.append(row)
        bar.set_postfix(loss=f"{total_loss:.3f}", lr=f"{lr:.2e}")
        bar.update(1)
        if result.steps % stage.checkpoint_every == 0 and not last:
            checkpoint(latest_path, full=True)
    bar.close()
    checkpoint(final_path, full=False)
    _discard([latest_path, prev_path])
    log.info("stage %s: %d steps, %.4g FLOPs, %d items, %.1f s, final loss %.4f", stage.name,
             result.steps, result.flops, result.items, result.seconds, result.final_loss)
    return result
