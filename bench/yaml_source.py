"""YAML reading that remembers where every value came from, so errors can name file and line.

PyYAML alone forgets positions and silently keeps the last of two duplicate keys; both would let
a mistake in a suite file pass unnoticed or be reported without a place.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError

Path_ = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-)?")


@dataclass
class Located:
    """Plain Python data from a YAML file plus the (file, line) of every value by its key path."""

    data: Any
    where: dict[Path_, tuple[str, int]] = field(default_factory=dict)

    def locate(self, path: Path_) -> tuple[str, int] | None:
        """Position of `path`, or of its nearest ancestor that has one."""
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in self.where:
                return self.where[tuple(path[:n])]
        return None


def dotted(path: Path_) -> str:
    """`('variants', 'cwt', 'model')` -> `variants.cwt.model`; list indices as `[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def interpolate(text: str, env: dict[str, str], file: str, line: int) -> str:
    """Expand `${VAR}` and `${VAR:-default}` (defaults may nest) from `env`."""
    out, i = [], 0
    while True:
        m = _VAR.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i : m.start()])
        name, has_default = m.group(1), m.group(0).endswith(":-")
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 0, "}": -1}.get(text[j], 0)
            if text.startswith("${", j):
                depth += 1
                j += 1
            j += 1
        if depth:
            raise UserError(f"{file}:{line}: unterminated '${{' in {text!r}")
        inner = text[m.end() : j - 1]
        if not has_default and inner:
            raise UserError(f"{file}:{line}: malformed variable reference in {text!r}")
        if name in env and env[name] != "":
            out.append(env[name])
        elif has_default:
            out.append(interpolate(inner, env, file, line))
        else:
            raise UserError(
                f"{file}:{line}: variable ${{{name}}} is not set "
                f"(set it in the environment or write ${{{name}:-default}})"
            )
        i = j


def display_path(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def load_yaml(path: Path, env: dict[str, str] | None = None) -> Located:
    """Parse one YAML file into plain data with positions; variables expanded in strings."""
    env = dict(os.environ) if env is None else env
    name = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{name}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{name}: cannot read: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = getattr(e, "problem", None) or str(e)
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    located = Located(data={})
    if node is None:
        return located
    constructor = yaml.SafeLoader("")

    def convert(n: yaml.Node, p: Path_) -> Any:
        line = n.start_mark.line + 1
        located.where[p] = (name, line)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                key = constructor.construct_object(k)
                if not isinstance(key, str):
                    line = k.start_mark.line + 1
                    raise UserError(f"{name}:{line}: keys must be text, got {key!r}")
                if key in out:
                    raise UserError(
                        f"{name}:{k.start_mark.line + 1}: {dotted((*p, key))}: duplicate key"
                    )
                out[key] = convert(v, (*p, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [convert(v, (*p, i)) for i, v in enumerate(n.value)]
        value = constructor.construct_object(n)
        return interpolate(value, env, name, line) if isinstance(value, str) else value

    located.data = convert(node, ())
    return located
