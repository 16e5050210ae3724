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
from bench.util.paths import file_kind

Path_ = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-)?")

# Bounds far above any real suite (a few KB, a few hundred values, a dozen levels), so memory and
# time stay small whatever a file holds.
MAX_BYTES = 2**20
MAX_VALUES = 100_000
MAX_DEPTH = 64
MAX_DEFAULT_NESTING = 16

_YAML_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _MERGE = {_YAML_TAG + "map"}, {_YAML_TAG + "seq"}, _YAML_TAG + "merge"
_SCALARS = {_YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


@dataclass
class Located:
    """Plain Python data from a YAML file plus the (file, line) of every value by its key path."""

    data: Any
    where: dict[Path_, tuple[str, int]] = field(default_factory=dict)
    # Variables referenced but not set, as (file, line, name, key path of the value), in the
    # order met; each was read as "" so that every one is found before `unset_error` names all.
    unset: list[tuple[str, int, str, Path_]] = field(default_factory=list)

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


def interpolate(text: str, env: dict[str, str], file: str, line: int,
                unset: list[tuple[str, int, str]], nesting: int = 0) -> str:
    """Expand `${VAR}` and `${VAR:-default}` (defaults may nest) from `env`; a variable that is
    not set and has no default is added to `unset` and read as ""."""
    if nesting > MAX_DEFAULT_NESTING:
        raise UserError(f"{file}:{line}: defaults nested deeper than {MAX_DEFAULT_NESTING} "
                        f"levels in {text[:60]!r}")
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
            out.append(interpolate(inner, env, file, line, unset, nesting + 1))
        elif (file, line, name) not in unset:
            unset.append((file, line, name))
        i = j


def unset_error(unset: list[tuple[str, int, str, Path_]]) -> UserError:
    """One error naming every variable that is not set, each at its file and line."""
    if len(unset) == 1:
        (file, line, name, _), = unset
        return UserError(f"{file}:{line}: variable ${{{name}}} is not set (set it in the "
                         f"environment or write ${{{name}:-default}})")
    names = sorted({name for _, _, name, _ in unset})
    return UserError(f"{len(names)} variables are not set ({', '.join(names)}; set them in the "
                     "environment or write ${NAME:-default}):\n" + "\n".join(
                         f"  {file}:{line}: ${{{name}}}" for file, line, name, _ in unset))

def display_path(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def read_source(path: Path, name: str) -> str:
    """The text of a regular file of at most MAX_BYTES; never blocks on a FIFO and never reads
    more than MAX_BYTES + 1 bytes, whatever the path names."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{name}: file not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise UserError(f"{name}: is {kind}, not a regular file (expected a YAML file)")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{name}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise UserError(f"{name}: larger than {MAX_BYTES // 2**20} MiB; a suite file is a few "
                        "KB of YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer, refusing documents that would expand past MAX_VALUES values or
    MAX_DEPTH levels. An alias counts as the copy it stands for, measured before anything is
    constructed, so a small file of nested aliases cannot grow into gigabytes; an alias inside
    the value it names is refused rather than followed forever."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name
        self.depth = 0
        self.extent: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) it expands to

    def refuse(self, mark: yaml.Mark, problem: str) -> UserError:
        return UserError(f"{self.name}:{mark.line + 1}: {problem}")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self.extent:
                raise self.refuse(event.start_mark, f"alias *{event.anchor} is inside the value "
                                  "it names (a recursive alias)")
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.refuse(self.peek_event().start_mark,
                              f"nested deeper than {MAX_DEPTH} levels")
        node = super().compose_node(parent, index)
        self.depth -= 1
        self.extent[id(node)] = self.measure(node)
        return node

    def measure(self, node: yaml.Node) -> tuple[int, int]:
        """Values and levels of `node` with every alias below it expanded, checked against the
        bounds (its children were measured as they were composed)."""
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        values = 1 + sum(self.extent[id(c)][0] for c in children)
        levels = 1 + max((self.extent[id(c)][1] for c in children), default=0)
        if values > MAX_VALUES:
            raise self.refuse(node.start_mark, f"expands to more than {MAX_VALUES} values "
                              "(aliases count as the copies they stand for)")
        if levels > MAX_DEPTH:
            raise self.refuse(node.start_mark,
                              f"nested deeper than {MAX_DEPTH} levels (aliases expanded)")
        return values, levels


# YAML 1.1 (PyYAML) reads 3e-4 and 1.0e5 as text: its floats need a dot and a signed exponent.
# As in YAML 1.2 and OmegaConf, a number in e-notation is a number.
# Keys stay text, as they were (a variant may be named 1e5).
_E_NOTATION = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_BoundedLoader.add_implicit_resolver(_YAML_TAG + "float", _E_NOTATION, list("-+0123456789"))


def _compose(text: str, name: str) -> yaml.Node | None:
    """The document's node graph, or None for an empty document; errors name file and line."""
    loader = None
    try:
        loader = _BoundedLoader(text, name)  # its reader checks every character at once
        return loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise UserError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise UserError(f"{name}:{line}: not valid YAML: character #x{e.character:04x} "
                        "is not allowed") from None
    except yaml.YAMLError as e:
        raise UserError(f"{name}: not valid YAML: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_tag(node: yaml.Node, name: str, path: Path_) -> None:
    """Only plain data: mappings, lists, text, numbers, booleans, nulls (and dates)."""
    line = node.start_mark.line + 1
    if node.tag == _MERGE:
        raise UserError(f"{name}:{line}: {dotted(path)}: merge keys ('<<') are not supported; "
                        "use 'extends' or a variant's overrides, which merge deeply")
    allowed = {yaml.MappingNode: _MAP, yaml.SequenceNode: _SEQ}.get(type(node), _SCALARS)
    if node.tag not in allowed:
        tag = node.tag.replace(_YAML_TAG, "!!")
        raise UserError(f"{name}:{line}: {dotted(path)}: tag {tag} is not allowed (plain "
                        "mappings, lists, text, numbers, booleans and nulls only)")


def load_yaml(path: Path, env: dict[str, str] | None = None) -> Located:
    """Parse one YAML file into plain data with positions; variables expanded in strings.
    An empty document gives `data` None."""
    name = display_path(path)
    return load_text(read_source(path, name), name, env)


def load_text(text: str, name: str, env: dict[str, str] | None = None) -> Located:
    """`load_yaml` of text that `name` stands for in messages (a file, a command-line value)."""
    env = dict(os.environ) if env is None else env
    node = _compose(text, name)
    located = Located(data=None)
    if node is None:
        return located
    constructor = yaml.SafeLoader("")

    def scalar(n: yaml.ScalarNode, p: Path_) -> Any:
        _check_tag(n, name, p)
        try:
            return constructor.construct_object(n)
        except (ValueError, yaml.YAMLError) as e:
            problem = str(e).split(";")[0]  # Python's own advice on int digits does not apply
            raise UserError(f"{name}:{n.start_mark.line + 1}: {dotted(p)}: cannot read "
                            f"{n.value[:40]!r}: {problem}") from None

    def convert(n: yaml.Node, p: Path_) -> Any:
        line = n.start_mark.line + 1
        located.where[p] = (name, line)
        if isinstance(n, yaml.ScalarNode):
            value = scalar(n, p)
            if not isinstance(value, str):
                return value
            unset: list[tuple[str, int, str]] = []
            value = interpolate(value, env, name, line, unset)
            located.unset += [(*u, p) for u in unset]
            return value
        _check_tag(n, name, p)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                key = scalar(k, p) if isinstance(k, yaml.ScalarNode) else k
                if isinstance(key, float) and _E_NOTATION.match(k.value):
                    key = k.value
                if not isinstance(key, str):
                    got = f"a {k.id}" if key is k else repr(key)
                    raise UserError(f"{name}:{k.start_mark.line + 1}: keys must be text, got {got}")
                if key in out:
                    raise UserError(
                        f"{name}:{k.start_mark.line + 1}: {dotted((*p, key))}: duplicate key"
                    )
                out[key] = convert(v, (*p, key))
            return out
        return [convert(v, (*p, i)) for i, v in enumerate(n.value)]

    located.data = convert(node, ())
    return located
