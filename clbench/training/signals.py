"""Preemption: SIGTERM (a cluster taking the node back) and SIGUSR1 (sent by SLURM before a
time limit) stop a run with exit code 75, EX_TEMPFAIL, which tells a scheduler to requeue it
(docs/reliability.md#preemption). Every file of a run is written atomically, so stopping at
any point keeps the finished stages; the same command continues the run.

Training defers the stop to the end of the optimizer step in progress (`deferred`), so that
it can save a step checkpoint first. The first Ctrl-C (SIGINT) during training is deferred too,
and then stops with exit code 130; a second one, or one anywhere else, stops at once
(KeyboardInterrupt)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL of sysexits.h: try again later
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(BaseException):
    """Raised in the main thread by SIGTERM or SIGUSR1, or by a Ctrl-C that training deferred
    to the end of its step; its argument is the signal's name. Like KeyboardInterrupt it is no
    Exception, so no `except Exception` on the way up swallows it."""

    @property
    def exit_code(self) -> int:
        """130 for Ctrl-C, which a scheduler must not requeue; 75 for preemption."""
        return EXIT_INTERRUPTED if self.args[0] == "SIGINT" else EXIT_PREEMPTED


class _Deferral:
    """Whether a `deferred` block is running, and the signal it received (handlers are
    process-wide, so this is too)."""

    active = False
    received: str | None = None


_deferral = _Deferral()


@contextlib.contextmanager
def preemptible() -> Iterator[None]:
    """Within the block, SIGTERM and SIGUSR1 raise `Preempted` and SIGINT KeyboardInterrupt;
    inside a `deferred` block they only record the signal, but for a second SIGINT, which
    stops at once. The handlers before it are put back after it. Outside the main thread,
    which alone can set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if _deferral.active and not (name == "SIGINT" and _deferral.received == "SIGINT"):
            _deferral.received = _deferral.received or name  # the first signal decides
            return
        if name == "SIGINT":
            raise KeyboardInterrupt
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
