"""Preemption: SIGTERM (a cluster taking the node back) and SIGUSR1 (sent by SLURM before a
time limit) stop a run with exit code 75, EX_TEMPFAIL, which tells a scheduler to requeue it
(docs/reliability.md#preemption). Every file of a run is written atomically, so stopping at
any point keeps the finished stages; the same command continues the run.

Training defers the stop to the end of the optimizer step in progress (`deferred`), so that
it can save a step checkpoint first."""

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


class _Deferral:
    """Whether a `deferred` block is running, and the signal it received (handlers are
    process-wide, so this is too)."""

    active = False
    received: str | None = None


_deferral = _Deferral()


@contextlib.contextmanager
def preemptible() -> Iterator[None]:
    """Within the block, SIGTERM and SIGUSR1 raise `Preempted` (inside a `deferred` block they
    only record the signal); the handlers before it are put back after it. Outside the main
    thread, which alone can set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if _deferral.active:
            _deferral.received = name
            return
        raise Preempted(name)

    previous = {number: signal.signal(number, stop) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a preemption signal is only recorded: `requested()` names it, and the
    caller stops where it is safe to. A signal the block did not act on raises `Preempted`
    at its end."""
    _deferral.active, _deferral.received = True, None
    try:
        yield
    finally:
        _deferral.active = False
        received, _deferral.received = _deferral.received, None
    if received is not None:
        raise Preempted(received)


def requested() -> str | None:
    """The preemption signal received within the running `deferred` block, if any."""
    return _deferral.received
