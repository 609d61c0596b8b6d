"""Preemption: SIGTERM (a cluster taking the node back) and SIGUSR1 (sent by SLURM before a
time limit) stop a run with exit code 75, EX_TEMPFAIL, which tells a scheduler to requeue it
(docs/reliability.md#preemption). Every file of a run is written atomically, so stopping at
any point keeps the finished stages; the same command continues the run."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL of sysexits.h: try again later
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(BaseException):
    """Raised in the main thread by SIGTERM or SIGUSR1. Like KeyboardInterrupt it is no
    Exception, so no `except Exception` on the way up swallows it."""


@contextlib.contextmanager
def preemptible() -> Iterator[None]:
    """Within the block, SIGTERM and SIGUSR1 raise `Preempted`; the handlers before it are put
    back after it. Outside the main thread, which alone can set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Preempted(signal.Signals(signum).name)

    previous = {number: signal.signal(number, stop) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
