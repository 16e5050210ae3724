"""MATLAB files from users (the WIDER FACE and Pascal Faces ground truth), read with bounded
memory: every declared array size is checked before scipy.io.loadmat allocates anything.

scipy trusts a file's headers: a cell or struct array gets all its slots at once, and a
compressed variable is inflated in full, so a few MB of zlib can claim many GB. This module walks
the element headers first, as scipy's reader will (the same sequential order), and refuses:
- anything but a MATLAB v5 / v7 MAT-file (v7.3 is HDF5, which the evaluators do not read);
- a file, or the inflated total of its compressed variables, above MAX_BYTES (64 MiB: the four
  official WIDER FACE val files hold 2.7 MB each once inflated);
- an array declaring more than MAX_BYTES // 8 elements (8 bytes a slot: a double, or an object
  pointer of a cell or struct), or more elements than the bytes that follow could hold;
- nesting deeper than MAX_DEPTH, and classes the ground truth never holds (objects, function
  handles, opaque).
"""

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import UserError

MAX_BYTES = 64 * 2**20
MAX_DEPTH = 16
_HEADER = 128
_MAX_DIMS = 32  # scipy's _MAT_MAXDIMS
_MI_INT8, _MI_INT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 14, 15
_CELL, _STRUCT, _CHAR, _SPARSE = 1, 2, 4, 5
_CLASSES = {1: "cell", 2: "struct", 4: "char", 5: "sparse", 6: "double", 7: "single", 8: "int8",
            9: "uint8", 10: "int16", 11: "uint16", 12: "int32", 13: "uint32", 14: "int64",
            15: "uint64"}


Fail = Callable[[str], NoReturn]


class _Reader:
    """Sequential reads of MAT-file elements from one buffer; `fail` raises a UserError. Running
    past the end means `past_end`: a malformed element, or an inflated variable cut at the bound."""

    def __init__(self, data: bytes, pos: int, endian: str, fail: Fail,
                 past_end: str = "an element runs past the end of the data") -> None:
        self.data, self.pos, self.endian, self.fail = data, pos, endian, fail
        self.past_end = past_end

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            self.fail(self.past_end)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self, count: int = 1) -> tuple[int, ...]:
        return struct.unpack(f"{self.endian}{count}I", self.take(4 * count))

    def tag(self) -> tuple[int, int, bool]:
        """(data type, byte count, small): small elements hold their data in the tag's 8 bytes."""
        (word,) = self.u32()
        if word >> 16:
            return word & 0xFFFF, word >> 16, True
        (nbytes,) = self.u32()
        return word, nbytes, False

    def element(self, mdtype: int | None = None) -> bytes:
        """The data of the next element (of type `mdtype` where given), padding skipped."""
        kind, nbytes, small = self.tag()
        if mdtype is not None and kind != mdtype:
            self.fail(f"an element of data type {kind} where type {mdtype} belongs")
        if small:
            if nbytes > 4:
                self.fail(f"a small data element of {nbytes} bytes (at most 4)")
            return self.take(4)[:nbytes]
        data = self.take(nbytes)
        self.take(-nbytes % 8)
        return data


def load_mat(path: Path, unreadable: str, **options: Any) -> dict[str, Any]:
    """scipy.io.loadmat(path, **options) once the file passed the checks above; `unreadable`
    begins the message of a file that is no MAT-file scipy can read."""
    data = _read_capped(path)
    endian = _check_header(path, data, unreadable)
    _check_variables(path, data, endian)
    import scipy.io
    from scipy.io.matlab import MatReadError, MatReadWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", MatReadWarning)
            return scipy.io.loadmat(io.BytesIO(data), **options)
    except (MatReadError, MatReadWarning, ValueError, TypeError, IndexError, KeyError,
            EOFError, OSError, OverflowError, NotImplementedError, zlib.error) as e:
        raise UserError(f"{path}: {unreadable} ({e})") from None


def _read_capped(path: Path) -> bytes:
    if not path.is_file():
        raise UserError(f"{path}: not a file; expected a MATLAB .mat file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e})") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES // 2**20} MiB, the bound on MATLAB "
                        "ground-truth files")
    return data


def _check_header(path: Path, data: bytes, unreadable: str) -> str:
    """The byte order ('<' or '>') of a v5 MAT-file's 128-byte header."""
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128]) if len(data) >= _HEADER else None
    if endian is None:
        raise UserError(f"{path}: {unreadable} (no MAT-file header: expected a file saved by "
                        "MATLAB's save -v7 or scipy.io.savemat)")
    (version,) = struct.unpack(f"{endian}H", data[124:126])
    if version == 0x0200:
        raise UserError(f"{path}: {unreadable} (a MATLAB v7.3 / HDF5 file: save it with -v7)")
    if version != 0x0100:
        raise UserError(f"{path}: {unreadable} (MAT-file version {version:#06x}; expected "
                        "0x0100, i.e. v5 or v7)")
    return endian


def _check_variables(path: Path, data: bytes, endian: str) -> None:
    """Walk every top-level variable as scipy will read it."""
    pos, inflated = _HEADER, 0
    while pos < len(data):
        fail = _failure(path, pos)
        top = _Reader(data, pos, endian, fail)
        mdtype, nbytes, small = top.tag()
        end = top.pos + (4 if small else nbytes)
        if end > len(data):
            fail(f"{nbytes} bytes declared, {len(data) - top.pos} left in the file")
        if mdtype == _MI_COMPRESSED:
            body, truncated = _inflate(data[top.pos:end], MAX_BYTES - inflated, fail)
            inflated += len(body)
            cut = f"inflates to more than the {MAX_BYTES // 2**20} MiB bound"
            _check_matrix(_Reader(body, 0, endian, fail, *([cut] if truncated else [])), 0)
        elif mdtype == _MI_MATRIX:
            _check_matrix(_Reader(data, pos, endian, fail), 0)
        else:
            fail(f"data type {mdtype}; expected a MATLAB array (miMATRIX) or a compressed one")
        pos = end


def _failure(path: Path, pos: int) -> Fail:
    """Raise a UserError about the variable that starts at byte `pos`."""
    def fail(problem: str) -> NoReturn:
        raise UserError(f"{path}: the variable at byte {pos}: {problem}")
    return fail


def _inflate(chunk: bytes, budget: int, fail: Fail) -> tuple[bytes, bool]:
    """The inflated bytes, at most `budget` + 1 of them, and whether there were more."""
    try:
        body = zlib.decompressobj().decompress(chunk, max(budget, 0) + 1)
    except zlib.error as e:
        fail(f"corrupt compressed data ({e})")
    return body, len(body) > budget


def _check_matrix(r: _Reader, depth: int) -> None:
    """One miMATRIX element and, for cells and structs, every array inside it."""
    if depth > MAX_DEPTH:
        r.fail(f"arrays nested more than {MAX_DEPTH} deep")
    mdtype, nbytes, _ = r.tag()
    if mdtype != _MI_MATRIX:
        r.fail(f"data type {mdtype} where a MATLAB array (miMATRIX) belongs")
    if nbytes == 0:
        return
    r.take(8)  # the array-flags tag, which scipy skips unread
    flags, _ = r.u32(2)
    cls, is_complex = flags & 0xFF, bool(flags >> 11 & 1)
    if cls not in _CLASSES:
        r.fail(f"MATLAB class {cls}; expected numeric, char, sparse, cell or struct arrays")
    dims = r.element(_MI_INT32)
    if len(dims) > 4 * _MAX_DIMS:
        r.fail(f"{len(dims) // 4} dimensions (at most {_MAX_DIMS})")
    shape = struct.unpack(f"{r.endian}{len(dims) // 4}i", dims)
    name = r.element(_MI_INT8).decode("latin-1") or "(unnamed)"
    fields = _struct_fields(r) if cls == _STRUCT else 1
    _check_size(r, name, shape, _CLASSES[cls], fields * (2 if is_complex else 1))
    if cls in (_CELL, _STRUCT):
        for _ in range(_count(shape) * fields):
            _check_matrix(r, depth + 1)
        return
    parts = {_SPARSE: 3, _CHAR: 1}.get(cls, 1) + is_complex
    for _ in range(parts):
        r.element()


def _struct_fields(r: _Reader) -> int:
    (length,) = struct.unpack(f"{r.endian}i", r.element(_MI_INT32)[:4].ljust(4, b"\0"))
    if length <= 0:
        r.fail(f"struct field-name length {length}; expected a positive number")
    return len(r.element(_MI_INT8)) // length


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _check_size(r: _Reader, name: str, shape: tuple[int, ...], cls: str, per_element: int) -> None:
    """Refuse negative sizes, arrays above the bound and slots the remaining bytes cannot fill."""
    described = f"array {name!r} ({' x '.join(map(str, shape))} {cls})"
    if any(d < 0 for d in shape):
        r.fail(f"{described}: a negative dimension")
    slots = _count(shape) * per_element
    if slots * 8 > MAX_BYTES:
        r.fail(f"{described}: {slots * 8:,} bytes declared, more than the "
               f"{MAX_BYTES // 2**20} MiB bound on a MATLAB array")
    if cls in ("cell", "struct") and slots * 8 > len(r.data) - r.pos:
        r.fail(f"{described}: {slots} elements declared, more than the remaining "
               f"{len(r.data) - r.pos} bytes can hold")
