"""Command-line overrides of a suite's values, `-o train.optim.lr=3e-4`: each is applied to the
suite as merged from its files, before anything is validated, so an override is checked, and
changes run ids, exactly as the same edit of the file would; a problem names the override.

KEY is a dotted path through the suite's mappings (`variants.cwt.objective`), a number indexing
a list (`evals.0.lambada.batch_size`); missing mappings on the way are created. VALUE is read as
YAML, like a value in the file (`3e-4`, `[0.9, 0.95]`, `{preset: tiny}`, `null`), `${VAR}`
expanded. A budget's unit replaces the unit it had (`budget.steps=100` over a flops budget), as a
variant's budget does. Later overrides win.
"""

import argparse
import copy
from collections.abc import Sequence
from typing import Any

from bench.config.yaml_source import Located, Path_, dotted, load_text, unset_error
from bench.contract import UNITS
from bench.errors import UserError

FLAG = "-o"


def add_option(parser: argparse.ArgumentParser) -> None:
    """The option of every command that reads a suite (`args.override`, a list)."""
    parser.add_argument(FLAG, "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a value of the suite as an edit of the file would (dotted KEY, "
                        "YAML VALUE: -o train.optim.lr=3e-4 -o variants.cwt.objective=cwt); "
                        "repeatable, later ones win")


def as_arguments(overrides: Sequence[str]) -> list[str]:
    """The overrides as a command line gives them (`-o KEY=VALUE ...`), for a command that
    starts or names another."""
    return [arg for text in overrides for arg in (FLAG, text)]


def apply_overrides(src: Located, overrides: Sequence[str], env: dict[str, str] | None
                    ) -> Located:
    """`src` with each override applied in turn; where they set values, positions name them."""
    if not overrides:
        return src
    data, where, unset = copy.deepcopy(src.data), dict(src.where), list(src.unset)
    for text in overrides:
        label = f"{FLAG} {text}"
        path, value = _parse(text, label, env)
        parent = _parent(data, path, label)
        last = path[-1]
        if len(path) >= 2 and path[-2] == "budget" and last in UNITS and isinstance(parent, dict):
            for unit in UNITS:
                parent.pop(unit, None)
        parent[last] = value
        where = {p: at for p, at in where.items() if p[:len(path)] != path}
        for n in range(1, len(path) + 1):  # the value, and the mappings made for it on the way
            where.setdefault(path[:n], (label, 0))  # (what is below it is placed there too)
        unset = [u for u in unset if u[3][:len(path)] != path]  # replaced, no longer read
    return Located(data, where, unset)


def _parse(text: str, label: str, env: dict[str, str] | None) -> tuple[Path_, Any]:
    key, eq, raw = text.partition("=")
    if not eq or not key:
        raise UserError(f"{label}: expected KEY=VALUE, a dotted key such as train.optim.lr")
    parts = key.split(".")
    if any(not part for part in parts):
        raise UserError(f"{label}: {key!r}: an empty part in the dotted key")
    path = tuple(int(part) if part.isdigit() else part for part in parts)
    if path[0] == "extends":
        raise UserError(f"{label}: 'extends' is read before overrides apply; edit the file")
    value = load_text(raw, label, env)
    if value.unset:
        raise unset_error(value.unset)
    return path, value.data


def _parent(data: Any, path: Path_, label: str) -> Any:
    """The mapping or list that holds `path`'s last part, mappings created on the way."""
    node = data
    for i, part in enumerate(path):
        if isinstance(node, dict) and isinstance(part, str):
            child = node.setdefault(part, {}) if i < len(path) - 1 else None
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise UserError(f"{label}: {dotted(path[:i]) or 'the suite'} has "
                                f"{len(node)} entries; no entry {part}")
            child = node[part]
        else:
            held = "a list" if isinstance(node, list) else (
                "a mapping" if isinstance(node, dict) else f"the value {node!r}")
            wanted = "an entry number" if isinstance(node, list) else "a key"
            raise UserError(f"{label}: {dotted(path[:i]) or 'the suite'} is {held}; "
                            f"{part!r} is not {wanted} of it")
        if i == len(path) - 1:
            return node
        node = child
    return node  # `path` is never empty (`_parse` refuses an empty key)
