"""Every tracker by name, its module imported only when a run uses it: a suite's `tracking:` is
checked against this table, and `bench validate` / `bench run` ask whether each named tracker's
package is installed (a tracker is an optional dependency). Adding one is a module and a line."""

from importlib import import_module
from importlib.util import find_spec
from typing import Any

from bench.errors import did_you_mean

# name -> (the module exposing TRACKER, the module it imports, what `pip install` needs)
_TRACKERS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("bench.tracking.tensorboard", "tensorboard", "tensorboard"),
    "mlflow": ("bench.tracking.mlflow", "mlflow", "mlflow-skinny"),
    "wandb": ("bench.tracking.wandb", "wandb", "wandb"),
}


def known_trackers() -> list[str]:
    return list(_TRACKERS)


def check_name(name: str) -> str:
    """`name`, when a tracker is registered under it; a ValueError with the closest otherwise."""
    if name not in _TRACKERS:
        raise ValueError(f"unknown tracker {name!r}{did_you_mean(name, _TRACKERS)}; known: "
                         f"{', '.join(_TRACKERS)}")
    return name


def not_installed(names: list[str]) -> list[str]:
    """A line for each of `names` whose package is missing, saying what to install."""
    return [f"tracking: tracker {name!r} needs the package {_TRACKERS[name][2]!r}, which is "
            f"not installed here (pip install {_TRACKERS[name][2]})"
            for name in names if not _importable(_TRACKERS[name][1])]


def _importable(module: str) -> bool:
    """Whether an import of `module` would find it (without importing it)."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a broken install
        return False


def new_tracker(name: str) -> Any:
    """A new tracker of kind `name` (a `bench.tracking.tracker.Tracker`)."""
    return import_module(_TRACKERS[check_name(name)][0]).Tracker()
