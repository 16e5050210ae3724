"""The one training loop every family uses: budgeted, checkpointed, resumable.

A family describes a stage (model, trainable parameters, optimiser settings, the micro-batches of
step k, the loss of one micro-batch); this loop spends the stage's budget on it. Batches are a pure
function of the step index and all state (model, optimiser, RNG, meter, curve) is checkpointed
atomically, so a run killed at any point resumes to the same result as an uninterrupted one.
"""

import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bench.atomic import save_torch
from bench.budget import StageBudget, lr_factor
from bench.errors import RunFailed
from bench.family import StepCost
from bench.flops import count_flops
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
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def train_stage(stage: Stage, budget: StageBudget, ckpt_dir: Path, device: torch.device,
                log: logging.Logger, progress: bool = True,
                on_validate: Callable[[float, dict[str, float]], None] | None = None
                ) -> StageResult:
    """Train `stage` until its budget is spent; resume from `ckpt_dir` where a run left off.

    `on_validate(done, metrics)` hears every validation: the fraction of the budget spent and
    the validation metrics (a sweep's pruner listens here and may stop the run).
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final_path, latest_path = ckpt_dir / f"{stage.name}.final.pt", ckpt_dir / f"{stage.name}.pt"
    if final_path.exists():  # finished earlier: restore the trained weights and the record
        saved = torch.load(final_path, map_location=device, weights_only=False)
        stage.model.load_state_dict(saved["model"])
        log.info("stage %s: already trained, loaded %s", stage.name, final_path.name)
        return StageResult(**saved["result"])

    optimizer = _optimizer(stage.parameters, stage.optim, device)
    result = StageResult(stage.name)
    flops_by_shape: dict[tuple, int] = {}
    if latest_path.exists():
        saved = torch.load(latest_path, map_location=device, weights_only=False)
        stage.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        result = StageResult(**saved["result"])
        flops_by_shape = saved["flops_by_shape"]
        _set_rng_state(saved["rng"])
        log.info("stage %s: resuming at step %d from %s", stage.name, result.steps,
                 latest_path.name)

    def checkpoint(path: Path, full: bool) -> None:
        state: dict[str, Any] = {"model": stage.model.state_dict(), "result": asdict(result)}
        if full:
            state |= {"optimizer": optimizer.state_dict(), "rng": _rng_state(),
                      "flops_by_shape": flops_by_shape}
        save_torch(state, path)

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if stage.bf16
                else nullcontext())
    bar = tqdm(total=None, desc=f"train {stage.name}", unit="step", disable=not progress,
               initial=result.steps, leave=False)
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
                row |= {f"val_{k}": v for k, v in stage.validate(result.steps).items()}
            stage.model.train()
            if on_validate is not None:
                on_validate(done, {k: v for k, v in row.items() if k.startswith("val_")})
        result.curve.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{total_loss:.3f}", lr=f"{lr:.2e}")
        if result.steps % stage.checkpoint_every == 0 and not last:
            checkpoint(latest_path, full=True)
    bar.close()
    checkpoint(final_path, full=False)
    latest_path.unlink(missing_ok=True)
    log.info("stage %s: %d steps, %.4g FLOPs, %d items, %.1f s, final loss %.4f", stage.name,
             result.steps, result.flops, result.items, result.seconds, result.final_loss)
    return result
