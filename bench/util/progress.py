"""Progress of long loops: a live bar in a terminal, a plain line every so often elsewhere.

A bar redraws itself with carriage returns many times a second; written to a log file or a
pipe that becomes megabytes of noise. Outside a terminal a line such as
`cwt seed 0 (tokens 2e+06) train pretrain: 1200/5000 steps (24%), 3.1 steps/s, ETA 20:26,
loss=2.871` is printed at most once per `$BENCH_PROGRESS_SECONDS` (default 30 s; 0 prints every
update). Where the total is known (`total`, which may be set once the loop has priced its first
step), both say how far along the loop is and when it will end at the rate measured.
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

    total: float | None  # the count the loop ends at, where known

    def set_postfix(self, **fields: Any) -> None: ...
    def refresh(self) -> None: ...
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class LineProgress:
    """Plain progress lines, one per interval, for streams that are not terminals."""

    def __init__(self, desc: str, unit: str, initial: int, stream: TextIO,
                 interval: float, total: float | None = None) -> None:
        self.desc, self.unit, self.stream, self.interval = desc, unit, stream, interval
        self.total = total
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

    def refresh(self) -> None:
        """Nothing to redraw: the next line shows what changed."""

    def close(self) -> None:
        """Nothing to undo: every line is already complete."""

    def _print(self, now: float) -> None:
        elapsed = now - self._last_time
        rate = (self.n - self._last_n) / elapsed if elapsed > 0 else math.inf
        done = f"{self.n} {self.unit}s"
        if self.total:
            done = f"{self.n}/{self.total:.0f} {self.unit}s ({100 * self.n / self.total:.0f}%)"
        left = f", ETA {eta_text(self.total - self.n, rate)}" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self._fields.items())
        print(f"{self.desc}: {done}, {rate:.3g} {self.unit}s/s{left}{extra}",
              file=self.stream, flush=True)
        self._last_time, self._last_n = now, self.n


def duration_text(seconds: float | None) -> str:
    """Seconds as tqdm writes a duration (`20:26`, `1d, 3:46:40`); `?` for none."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return tqdm.format_interval(max(seconds, 0))


def eta_text(left: float, rate: float) -> str:
    """When `left` more units end at `rate` units per second; `?` where the rate says nothing
    yet."""
    return duration_text(left / rate if rate > 0 else None)


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
             stream: TextIO | None = None, total: float | None = None) -> Progress:
    """A tqdm bar when `stream` (default: stderr) is a terminal, plain lines otherwise."""
    stream = sys.stderr if stream is None else stream
    if not enabled or stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=False,
                    disable=not enabled, file=stream)
    return LineProgress(desc, unit, initial, stream, interval_seconds(), total)
