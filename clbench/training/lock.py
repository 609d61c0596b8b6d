"""One process at a time in a run folder: `<run folder>/.lock` (docs/reliability.md).

The lock is an exclusive `flock` on the file, which the system drops when its process dies
(even by `kill -9`), so a dead process never blocks a run. The file records the holder's pid,
host and start time for the message a second process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from clbench.errors import ClbenchError

LOCK_NAME = ".lock"


class RunLock:
    """Held while a process runs the run in `run_dir`; a second process gets a ClbenchError."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ClbenchError(self._refusal()) from None
            try:  # a holder that just finished unlinks the file it locked: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder) + "\n").encode())
            self.fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # unlinked while held, so no one locks it after
            os.close(self.fd)
            self.fd = None

    def _refusal(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            who = f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        return (
            f"{self.path.parent} is being run by {who}; wait for it to end, or give another "
            "--output or --run-id"
        )
