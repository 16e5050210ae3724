"""The warning a cluster sends before it preempts a job or at its time limit (SIGUSR1/SIGUSR2;
submitit asks SLURM for USR2): held back where acting on it at once would lose work, and acted
on once that work is safe.

A whole-or-nothing write holds it until the file is whole (raised inside torch.save's C++
writer, the handler's exit would surface as that write's error). A training stage holds it
until its next read of the losses, saves a checkpoint there and then lets the handler act
(submitit's: requeue the job and exit), so a warned run loses no step it trained.
"""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


@contextmanager
def warnings_held() -> Iterator[list[int]]:
    """Within: the `WARNING_SIGNALS` that arrive are listed (the list yielded) instead of
    handled; after the body their handlers run, in the order they came (a default handler by
    sending the signal again). Handlers belong to the main thread; elsewhere nothing is held
    and the list stays empty."""
    held: list[tuple[int, FrameType | None]] = []
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append((signum, frame))
        arrived.append(signum)

    previous = {s: signal.signal(s, hold) for s in WARNING_SIGNALS}
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
