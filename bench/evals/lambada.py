"""LAMBADA through lm-eval's own task, model wrapper and metrics, so a score printed here equals
the one the `lm_eval` command gives for the saved model."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from pydantic import Field, model_validator

from bench.errors import UserError
from bench.evals.adapters import ContinuationScorer
from bench.evals.evaluator import EvalResult, EvalSetting, Evaluator, PerExample
from bench.evals.io import json_records
from bench.schema import InputPath, Int, SafeName, Strict
from bench.util.atomic import enter_dir, write_text

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from torch import nn
    from transformers import PreTrainedTokenizerBase

# lm-eval's default bootstrap for the perplexity stderr; the CLI offers no flag to change it, so
# the in-process run keeps it too and both report the same stderr.
_BOOTSTRAP_ITERS = 100_000
_HIGHER_IS_BETTER = {"acc": True, "ppl": False}
# What a scoring reports, from lm-eval's acc and perplexity with their standard errors.
METRICS = ("acc", "acc_stderr", "ppl", "ppl_stderr")
_TASK_DIR = "lambada_task"  # where `evaluate_lambada` writes a local file's task definition
_TASK_CONFIG_KEYS = (
    "task",
    "dataset_path",
    "dataset_name",
    "dataset_kwargs",
    "test_split",
    "output_type",
    "doc_to_text",
    "doc_to_target",
    "metric_list",
    "metadata",
)


class LambadaEvalConfig(Strict):
    """LAMBADA scored through lm-eval: a local JSON-lines file or an installed lm-eval task."""

    path: InputPath | None = Field(None, description="JSON lines, one {'text': ...} per passage")
    task: SafeName | None = Field(None, description="an lm-eval task name, e.g. lambada_openai")
    name: SafeName = Field("lambada_local", description="task name given to a local file "
                           "(and the name of its task file)")
    proxy: bool = Field(False, description="the data is a stand-in, labelled so in reports")
    limit: Int | None = Field(None, gt=0)
    batch_size: Int = Field(16, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> LambadaEvalConfig:
        if (self.path is None) == (self.task is None):
            raise ValueError("give exactly one of 'path' (a local JSON-lines file) or 'task'")
        return self


@dataclass
class LambadaResult:
    """Aggregate metrics, per-passage outcomes (for paired tests) and what produced them."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]]
    task: str
    n: int
    lm_eval_config: dict[str, Any]


def validate_passages(path: Path) -> int:
    """Check a LAMBADA JSON-lines file up front, so a bad line fails with its number instead of
    deep inside lm-eval; returns the number of passages."""
    n = 0
    for line, doc in json_records(path, 'LAMBADA JSON lines {"text": ...}'):
        where = f"{path}:{line}"
        if not isinstance(doc.get("text"), str):
            raise UserError(f'{where}: expected an object with a string field "text"')
        words = doc["text"].split(" ")
        if len(words) < 2 or not words[-1].strip() or not " ".join(words[:-1]).strip():
            raise UserError(
                f'{where}: "text" needs at least two space-separated words '
                "(the last one is the target)"
            )
        n += 1
    if n == 0:
        raise UserError(f"{path}: no passages")
    return n


def write_task_dir(cfg: LambadaEvalConfig, dest: Path) -> Path:
    """Write `lambada_openai`'s task definition, pointed at the local file, into `dest` (an
    `include_path` for lm-eval); returns `dest`. A link at `dest` is refused and one at the
    task file replaced, never written through (see `bench.util.atomic`)."""
    if cfg.path is None:
        raise ValueError(f"task {cfg.task!r} is installed in lm-eval: there is no file to write")
    data = Path(cfg.path).resolve()
    validate_passages(data)
    task = {
        "task": cfg.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "output_type": "loglikelihood",
        "test_split": "test",
        "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
        "doc_to_target": "{{' '+text.split(' ')[-1]}}",
        "should_decontaminate": True,
        "doc_to_decontamination_query": "{{text}}",
        "metric_list": [
            {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    dest = enter_dir(dest)
    write_text(dest / f"{cfg.name}.yaml", yaml.safe_dump(task, sort_keys=False))
    return dest


def lm_eval_command(
    model_dir: Path,
    cfg: LambadaEvalConfig,
    task_dir: Path | None,
    *,
    device: str = "cpu",
    output_path: Path | None = None,
) -> list[str]:
    """The `lm_eval` invocation that scores a saved model directory as `evaluate_lambada` does."""
    cmd = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={Path(model_dir).resolve()}"]
    if cfg.path is not None:
        if task_dir is None:
            raise ValueError("a local LAMBADA file needs the task directory from write_task_dir")
        cmd += ["--include_path", str(Path(task_dir).resolve())]
    cmd += ["--tasks", _task_name(cfg), "--batch_size", str(cfg.batch_size), "--device", device]
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    if output_path is not None:
        cmd += ["--output_path", str(Path(output_path).resolve()), "--log_samples"]
    return cmd


class HFScorer:
    """Any in-memory Hugging Face causal LM and its tokenizer as a `ContinuationScorer`:
    lm-eval's HFLM wraps the model object itself, so nothing is saved or reloaded to score it."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, device: str,
                 saved: Path | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self._saved = saved

    @contextlib.contextmanager
    def lm_eval_model(self, batch_size: int) -> Iterator[LM]:
        """HFLM on the model, moved to `device` in eval mode; its device and train/eval mode
        are restored on leaving, even after an error."""
        from lm_eval.models.huggingface import HFLM

        was_training = self.model.training
        home = next(self.model.parameters()).device
        self.model.to(self.device)
        self.model.eval()
        try:
            yield HFLM(
                pretrained=self.model,
                tokenizer=copy.deepcopy(self.tokenizer),  # lm-eval may set a pad token on it
                batch_size=batch_size,
                device=self.device,
            )
        finally:
            self.model.to(home)
            self.model.train(was_training)

    def saved(self) -> Path | None:
        return self._saved


def evaluate_lambada(
    scorer: ContinuationScorer, cfg: LambadaEvalConfig, *, workdir: Path
) -> LambadaResult:
    """Score a language model with lm-eval's own LAMBADA task and metrics, offline; the local
    task's definition is written under `workdir`."""
    # Imported here: lm-eval and torch take seconds to load, and config checks must not wait.
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    name = _task_name(cfg)
    if cfg.path is not None:
        task_dir = write_task_dir(cfg, workdir / _TASK_DIR)
        manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    else:
        manager = TaskManager()
        if name not in manager.all_subtasks:
            raise UserError(f"lambada.task: {name!r} is not a task installed in lm-eval")

    try:
        with _offline(), torch.no_grad(), _quiet(), scorer.lm_eval_model(cfg.batch_size) as lm:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[name],
                task_manager=manager,
                limit=cfg.limit,
                log_samples=True,
                bootstrap_iters=_BOOTSTRAP_ITERS,
            )
    except (ConnectionError, FileNotFoundError) as err:
        if cfg.path is not None:
            raise
        raise UserError(
            f"lambada.task: the data of lm-eval task {name!r} is not in the local Hugging Face "
            f"cache and the network is not used; give 'path' (a local JSON-lines file) or "
            f"populate the cache first ({err})"
        ) from err
    return _result(out, name)


class LambadaEvaluator:
    """LAMBADA for any model that scores continuations; when the model was saved, the log
    names the `lm_eval` command that reproduces the numbers from the saved folder."""

    name = "lambada"
    config_model = LambadaEvalConfig
    needs = ContinuationScorer

    def higher_is_better(self, metric: str) -> bool | None:
        return _HIGHER_IS_BETTER.get(metric)

    def metrics(self, config: LambadaEvalConfig) -> list[str]:
        """lm-eval's scores, and `n`: the passages scored."""
        return [*METRICS, "n"]

    def is_proxy(self, config: LambadaEvalConfig) -> bool:
        return config.proxy

    def per_example(self, metric: str) -> PerExample | None:
        """acc: the share of passages whose target is the greedy continuation; ppl: lm-eval's
        perplexity, exp of the mean negative log-likelihood of the targets."""
        if metric == "acc":
            return PerExample("", ("doc_id",), ("is_greedy",), lambda a: float(a[:, 0].mean()),
                              correct=lambda a: a[:, 0] > 0.5)
        if metric == "ppl":
            return PerExample("", ("doc_id",), ("loglikelihood",),
                              lambda a: float(np.exp(-a[:, 0].mean())))
        return None

    def inputs(self, config: LambadaEvalConfig, data_root: str | None) -> dict[str, str]:
        """A local file joins the run's identity; an installed task's cached data does not."""
        return {"path": config.path} if config.path is not None else {}

    def check(self, config: LambadaEvalConfig, data_root: str | None) -> None:
        """A local file is there and every line is a passage."""
        if config.path is not None:
            validate_passages(Path(config.path))

    def evaluate(self, config: LambadaEvalConfig, model: ContinuationScorer,
                 setting: EvalSetting) -> EvalResult:
        result = evaluate_lambada(model, config, workdir=setting.workdir)
        saved = model.saved()
        if saved is not None:
            command = lm_eval_command(saved, config, setting.workdir / _TASK_DIR,
                                      device=model.device)
            setting.log.info("the same numbers from the lm_eval command: %s", shlex.join(command))
        return EvalResult(
            metrics=result.metrics | {"n": float(result.n)},
            samples={"": result.samples},
            provenance={"lm_eval": result.lm_eval_config},
        )


EVALUATOR: Evaluator[LambadaEvalConfig, ContinuationScorer] = LambadaEvaluator()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Discard what lm-eval prints while it runs: progress bars, warnings meant for its own
    command line (it is handed a model object, not a name), its logging, and the stderr of the
    `git describe` it runs in the working directory. A subprocess writes to file descriptor 2
    itself, so that descriptor is pointed at the null device as well as Python's streams; all
    are restored afterwards. The harness's own log goes to the run's log file, untouched."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as null:
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                yield
    finally:
        sys.stderr.flush()  # what reached the original stream meanwhile goes to the null device
        os.dup2(saved, 2)
        os.close(saved)


def _task_name(cfg: LambadaEvalConfig) -> str:
    return cfg.name if cfg.path is not None else str(cfg.task)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Forbid Hub access during the evaluation. `datasets` and `huggingface_hub` read the
    environment once, at import, so their module flags are switched as well."""
    import datasets.config
    import huggingface_hub.constants as hub

    env = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    flags = [
        (hub, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    saved = [getattr(module, attr) for module, attr in flags]
    os.environ.update(dict.fromkeys(env, "1"))
    for module, attr in flags:
        setattr(module, attr, True)
    try:
        yield
    finally:
        for (module, attr), value in zip(flags, saved, strict=True):
            setattr(module, attr, value)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _number(value: float | str) -> float:
    """lm-eval writes "N/A" for a stderr it cannot estimate (one passage)."""
    return math.nan if value == "N/A" else float(value)


def _result(out: dict[str, Any], name: str) -> LambadaResult:
    scores = out["results"][name]
    metrics = dict(zip(METRICS, (_number(scores[key]) for key in (
        "acc,none", "acc_stderr,none", "perplexity,none", "perplexity_stderr,none")), strict=True))
    samples = [
        {
            "doc_id": s["doc_id"],
            "text": s["doc"]["text"],
            "context": s["arguments"][0][0],
            "target": s["target"],
            "loglikelihood": float(s["filtered_resps"][0][0]),
            "is_greedy": bool(s["filtered_resps"][0][1]),
        }
        for s in sorted(out["samples"][name], key=lambda s: s["doc_id"])
    ]
    task_config = out["configs"][name]
    run = out["config"]
    provenance = {
        "lm_eval_version": out["lm_eval_version"],
        "transformers_version": out["transformers_version"],
        "task_version": out["versions"][name],
        "task_config": {k: task_config[k] for k in _TASK_CONFIG_KEYS if k in task_config},
        "n_samples": out["n-samples"][name],
        "limit": run["limit"],
        "bootstrap_iters": run["bootstrap_iters"],
        "model_dtype": str(run.get("model_dtype")),
        "max_length": out["max_length"],
        "eot_token_id": out["eot_token_id"],
    }
    return LambadaResult(
        metrics=metrics, samples=samples, task=name, n=len(samples), lm_eval_config=provenance
    )
