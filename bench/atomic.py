"""Whole-or-nothing writes: every file and folder the harness produces appears complete or not at
all, so a crash or a kill never leaves something half-written that a later step would trust."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_via(path: Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp)` on a temporary file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_via(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch(obj: Any, path: Path) -> None:
    import torch

    write_via(path, lambda tmp: torch.save(obj, tmp))


def build_dir(final: Path, build: Callable[[Path], object]) -> None:
    """Run `build(tmp_dir)` and move the folder to `final`; a concurrent winner is kept."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; what it becomes is not
    try:
        build(tmp)
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
