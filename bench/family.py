"""The registry of study families: the core finds a family by the name a suite gives.

The contract a family fulfils (`Family`) is in `bench.contract`. A family's module exposes
`FAMILY`; it is imported only when a suite names it.
"""

from importlib import import_module
from typing import Any

from bench.contract import Family

_FAMILIES = {"lm": "bench.lm.family", "encoder": "bench.encoder.family",
             "faces": "bench.faces.family"}


def known_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family[Any]:
    """The family registered under `name` (its module exposes `FAMILY`)."""
    family: Family[Any] = import_module(_FAMILIES[name]).FAMILY
    return family
