"""Every evaluator by name, imported only when asked for: suites, `bench eval` and reports read
this one table. Adding an evaluator is one module and one line here."""

from importlib import import_module
from typing import Any

from bench.errors import UserError, did_you_mean
from bench.evals.evaluator import Evaluator

# name -> (the module exposing EVALUATOR, the module adding `bench eval NAME`, if there is one)
_EVALUATORS: dict[str, tuple[str, str | None]] = {
    "lambada": ("bench.evals.lambada", "bench.evals.lambada_cli"),
    "glue": ("bench.evals.glue", "bench.evals.glue_cli"),
    "xnli": ("bench.evals.xnli", "bench.evals.xnli_cli"),
    "wider": ("bench.evals.wider", "bench.evals.wider_cli"),
    "fddb": ("bench.evals.fddb", "bench.evals.fddb_cli"),
    "pascal": ("bench.evals.pascal", "bench.evals.pascal_cli"),
    "speed": ("bench.evals.speed", None),
}


def known_evaluators() -> list[str]:
    return sorted(_EVALUATORS)


def get_evaluator(name: str) -> Evaluator[Any, Any]:
    """The evaluator registered under `name`; a UserError (with the closest name) otherwise."""
    if name not in _EVALUATORS:
        raise UserError(f"unknown evaluator {name!r}{did_you_mean(name, _EVALUATORS)}; "
                        f"known: {', '.join(known_evaluators())}")
    evaluator: Evaluator[Any, Any] = import_module(_EVALUATORS[name][0]).EVALUATOR
    if evaluator.name != name:
        raise RuntimeError(f"{_EVALUATORS[name][0]} registers evaluator {evaluator.name!r} "
                           f"under the name {name!r}")
    return evaluator


def evaluators_for(adapters: tuple[type, ...]) -> list[str]:
    """The evaluators a family's models can be scored by (each needs one of `adapters`)."""
    return [n for n in known_evaluators() if get_evaluator(n).needs in adapters]


def commands() -> dict[str, str]:
    """Evaluator name -> the module that adds its `bench eval NAME` command, for those with one."""
    return {n: cli for n in known_evaluators() if (cli := _EVALUATORS[n][1])}
