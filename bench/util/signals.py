"""Signals held back where acting on them at once would lose work or leave a file broken, and
acted on once that is safe.

A whole-or-nothing write holds the signals that stop a process (`WRITE_HELD`: SIGTERM from
`scancel` or a requeue, SIGINT, and a cluster's warnings) until the file is whole: raised inside
torch.save's C++ writer, a handler's exit would surface as that write's error and fail the run.
A training stage holds the warning a cluster sends before a preemption or at its time limit
(`WARNING_SIGNALS`: SIGUSR1/SIGUSR2; submitit asks SLURM for USR2) until its next read of the
losses, saves a checkpoint there and then lets the handler act (submitit's: requeue the job and
exit), so a warned run loses no step it trained.
"""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
WRITE_HELD = (*WARNING_SIGNALS, signal.SIGTERM, signal.SIGINT)


@contextmanager
def signals_held(signals: tuple[signal.Signals, ...]) -> Iterator[list[int]]:
    """Within: the `signals` that arrive are listed (the list yielded) instead of handled;
    after the body their handlers run, in the order they came (a default handler by sending
    the signal again; an ignored one not at all). Handlers belong to the main thread;
    elsewhere nothing is held and the list stays empty."""
    held: list[tuple[int, FrameType | None]] = []
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append((signum, frame))
        arrived.append(signum)

    previous = {s: signal.signal(s, hold) for s in signals}
    try:
        yield arrived
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for n, frame in held:
            handler = previous[signal.Signals(n)]
            if callable(handler):
                handler(n, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), n)
