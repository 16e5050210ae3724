"""An offline W&B run read back: its `run-<id>.wandb` file is W&B's transaction log, the LevelDB
log format (a 7-byte header `:W&B`, 0xBEE1, version 0; 32 KiB blocks of records, each with a
CRC-32, length and type: full, first, middle or last part), every record a protobuf message of
wandb's own `wandb_internal_pb2.Record`. wandb 0.31 no longer ships a Python reader of it
(its Go core reads it for `wandb sync`), so this reads the frames and leaves every message to
wandb's own protobuf classes."""

import json
import struct
import zlib
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every record of a .wandb file, as wandb's `Record` messages, checksums checked."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", raw[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    out, pos, parts = [], HEADER, b""
    while pos + HEADER <= len(raw):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zeros: the end of what was written
            break
        data = raw[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + data) & 0xFFFFFFFF == checksum, f"record at {pos}"
        pos += HEADER + length
        parts = data if kind in (FULL, FIRST) else parts + data
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """The rows the run logged (`run.log`), each with its `_step`."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def summary(path: Path) -> dict[str, Any]:
    """The run's summary as its summary records left it."""
    out: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
