"""Progress of long loops: a live bar in a terminal, a plain line every so often elsewhere.

A bar redraws itself with carriage returns many times a second; written to a log file or a
pipe that becomes megabytes of noise. Outside a terminal a line such as
`train pretrain: 1200 steps, 3.1 steps/s, loss=2.871` is printed at most once per
`$BENCH_PROGRESS_SECONDS` (default 30 s; 0 prints every update).
"""

import math
import os
import sys
import time
from typing import Any, Protocol, TextIO

from tqdm import tqdm

from bench.errors import UserError

INTERVAL_ENV = "BENCH_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


class Progress(Protocol):
    """What a loop calls on its progress display (tqdm's names)."""

    def set_postfix(self, **fields: Any) -> None: ...
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class LineProgress:
    """Plain progress lines, one per interval, for streams that are not terminals."""

    def __init__(self, desc: str, unit: str, initial: int, stream: TextIO,
                 interval: float) -> None:
        self.desc, self.unit, self.stream, self.interval = desc, unit, stream, interval
        self.n = self._last_n = initial
        self._last_time = time.monotonic()
        self._fields: dict[str, Any] = {}

    def set_postfix(self, **fields: Any) -> None:
        """Fields shown on the next line (call before `update`)."""
        self._fields = fields

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_time >= self.interval:
            self._print(now)

    def close(self) -> None:
        """Nothing to undo: every line is already complete."""

    def _print(self, now: float) -> None:
        elapsed = now - self._last_time
        rate = (self.n - self._last_n) / elapsed if elapsed > 0 else math.inf
        extra = "".join(f", {k}={v}" for k, v in self._fields.items())
        print(f"{self.desc}: {self.n} {self.unit}s, {rate:.3g} {self.unit}s/s{extra}",
              file=self.stream, flush=True)
        self._last_time, self._last_n = now, self.n


def quiet_library_bars() -> None:
    """Leave libraries' own bars off (Hugging Face's, when a model is saved or loaded): the
    harness reports progress itself. Takes effect for libraries imported afterwards; an explicit
    setting in the environment wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def interval_seconds() -> float:
    """Seconds between plain progress lines, from the environment."""
    raw = os.environ.get(INTERVAL_ENV, "")
    if not raw.strip():
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise UserError(f"{INTERVAL_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def progress(desc: str, unit: str, initial: int = 0, enabled: bool = True,
             stream: TextIO | None = None) -> Progress:
    """A tqdm bar when `stream` (default: stderr) is a terminal, plain lines otherwise."""
    stream = sys.stderr if stream is None else stream
    if not enabled or stream.isatty():
        return tqdm(total=None, desc=desc, unit=unit, initial=initial, leave=False,
                    disable=not enabled, file=stream)
    return LineProgress(desc, unit, initial, stream, interval_seconds())
