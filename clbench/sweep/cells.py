"""A sweep's cells on disk: each is an ordinary run folder plus a few files of the sweep's own.

    <sweep>/runs/<id>/              the run folder (config.json, state.json, results.json, ...)
    <sweep>/cells/<id>.json         the cell: its RunConfig and include folders
    <sweep>/cells/<id>.attempts.json  every attempt: start, end, host, exit, error; failed or not
    <sweep>/cells/<id>.lock         locked while the cell runs (its status "running")
    <sweep>/logs/<id>.log           the output of every attempt
    <sweep>/corrupt/<id>.<time>/    run folders whose results.json was corrupt, set aside
    <sweep>/row0/<key>/             a row 0 shared by the cells that compute the same one
    <sweep>/references/             the single-task references shared by the cells (grid's
                                    `references`), each computed by a reference cell

A cell's status comes from these files alone, so any process that sees the folder (the
driver, `--status`, a SLURM job or a Ray worker on another node) reads the same state.
`run_cell` is what every backend runs for a cell: up to 1 + retries attempts, each one a fresh
process that resumes the run from its last finished stage. A preempted attempt (the worker's
exit code 75) uses no retry: it is run again, or handed back to a scheduler that requeues.
An interrupted one (Ctrl-C, exit code 130) ends the cell's attempts until the next sweep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clbench.errors import ClbenchError
from clbench.results.io import read_json, read_results, write_json
from clbench.training.signals import EXIT_INTERRUPTED, EXIT_PREEMPTED

LOCK_WAIT_SECONDS = 60  # a killed attempt's process may take a moment to go
STATES = ("done", "running", "failed", "pending")
PREEMPTED = "preempted"  # run_cell's outcome when a scheduler is to requeue the cell
INTERRUPTED = "interrupted"  # run_cell's outcome after Ctrl-C


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SweepFolder:
    root: Path

    def run_dir(self, cell: str) -> Path:
        return self.root / "runs" / cell

    def spec(self, cell: str) -> Path:
        return self.root / "cells" / f"{cell}.json"

    def attempts(self, cell: str) -> Path:
        return self.root / "cells" / f"{cell}.attempts.json"

    def lock(self, cell: str) -> Path:
        return self.root / "cells" / f"{cell}.lock"

    def error(self, cell: str) -> Path:
        return self.root / "cells" / f"{cell}.error.json"

    def log(self, cell: str) -> Path:
        return self.root / "logs" / f"{cell}.log"

    def row0(self) -> Path:
        return self.root / "row0"  # shared rows 0 (clbench.sweep.row0)

    def stored_reference(self, cell: str) -> Path | None:
        """A reference cell's stored reference (written after its run), else None."""
        path = self.spec(cell)
        reference = read_json(path).get("reference") if path.exists() else None
        if reference is None:
            return None
        from clbench.training.references import key_hash

        return Path(reference["folder"]) / f"{key_hash(reference['key'])}.json"

    def finished(self, cell: str) -> bool:
        """Whether the cell's run wrote results.json (and a reference cell stored its score);
        `results_problem` says whether they are valid."""
        stored = self.stored_reference(cell)
        done = (self.run_dir(cell) / "results.json").exists()
        return done and (stored is None or stored.exists())

    def record(self, cell: str) -> dict[str, Any]:
        path = self.attempts(cell)
        return read_json(path) if path.exists() else {"attempts": [], "failed": None}


def results_problem(run_dir: Path) -> str | None:
    """What is wrong with a run folder's results.json, or None if it is complete and valid:
    it must pass the results schema (a (T+1) x T matrix for its T tasks, ...), belong to this
    folder's run (its config.json) and hold the rows its state.json recorded."""
    try:
        results = read_results(run_dir)
    except ClbenchError as err:
        return str(err)
    path = run_dir / "results.json"
    config = run_dir / "config.json"
    if not config.exists() or results.config != read_json(config):
        return f"{path}: its config is not the run folder's config.json"
    state = run_dir / "state.json"
    if state.exists() and read_json(state).get("rows") != results.matrix:
        return f"{path}: the matrix differs from the rows of state.json"
    return None


def is_locked(path: Path) -> bool:
    """Whether another process holds the lock at `path` (a running cell or sweep)."""
    if not path.exists():
        return False
    with open(path, "a") as file, _flock(file.fileno(), wait=0) as held:
        return not held


@contextlib.contextmanager
def _flock(fd: int, wait: float) -> Iterator[bool]:
    """Lock `fd` exclusively, waiting up to `wait` seconds; yields whether it was locked.

    flock locks belong to the open file, not the process: a cell's process inherits the
    lock, so it stays held until both the attempt's driver and the process have ended."""
    try:
        import fcntl
    except ImportError:  # Windows: cells are not protected from a second copy
        yield True
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.2)
    try:
        yield True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def hold_lock(path: Path, wait: float = 0) -> Iterator[int | None]:
    """Hold the lock at `path`; yields its file descriptor, or None if another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file, _flock(file.fileno(), wait) as held:
        yield file.fileno() if held else None


@dataclass
class CellStatus:
    id: str
    state: str  # one of STATES
    detail: str  # the stage reached, the error, or why it will be re-run
    stages_done: int
    attempts: int
    started: str | None
    seconds: float | None


def cell_status(folder: SweepFolder, cell: str, stages: int) -> CellStatus:
    run_dir = folder.run_dir(cell)
    record = folder.record(cell)
    attempts = record["attempts"]
    started = attempts[0]["started"] if attempts else None
    seconds = sum(a.get("seconds") or 0.0 for a in attempts) if attempts else None
    state_file = run_dir / "state.json"
    rows = len(read_json(state_file)["rows"]) if state_file.exists() else 0
    progress = f"stage {max(rows - 1, 0)}/{stages}"
    problem = results_problem(run_dir) if (run_dir / "results.json").exists() else None

    def status(state: str, detail: str) -> CellStatus:
        return CellStatus(cell, state, detail, max(rows - 1, 0), len(attempts), started, seconds)

    if folder.finished(cell) and problem is None:
        return status("done", progress)
    if is_locked(folder.lock(cell)):
        current = attempts[-1] if attempts else {}
        if current.get("started") and not current.get("ended"):
            elapsed = time.time() - datetime.fromisoformat(current["started"]).timestamp()
            seconds = (seconds or 0.0) + elapsed
        return status("running", progress)
    if record.get("failed"):
        return status("failed", record["failed"]["error"])
    if problem:
        return status("pending", f"corrupt results.json, will re-run: {problem}")
    if attempts and not attempts[-1].get("ended"):
        return status("pending", f"interrupted after {progress}")
    return status("pending", progress if rows else "")


def set_aside_corrupt(folder: SweepFolder, cell: str) -> str | None:
    """Move a run folder with a corrupt results.json to <sweep>/corrupt/; returns the problem."""
    run_dir = folder.run_dir(cell)
    if not (run_dir / "results.json").exists():
        return None
    problem = results_problem(run_dir)
    if problem is None:
        return None
    target = folder.root / "corrupt" / f"{cell}.{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(target))
    return f"{problem}; the folder was moved to {target} and the cell is re-run"


def cell_command(
    root: Path,
    cell: str,
    threads: int,
    processes: int = 1,
    gpus: int = 0,
    accelerate_args: tuple[str, ...] = (),
) -> list[str]:
    """The command of one attempt: the worker module, under `accelerate launch` when the
    cell runs as several processes (one per GPU)."""
    worker = [str(root), cell, "--threads", str(threads)]
    if processes == 1:
        return [sys.executable, "-m", "clbench.sweep.worker", *worker]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    launch += ["--num_machines", "1"] + (["--multi_gpu"] if gpus > 1 else [])
    return [*launch, *accelerate_args, "--module", "clbench.sweep.worker", *worker]


def run_cell(
    root: str | Path,
    cell: str,
    threads: int,
    retries: int,
    backend: str,
    command: list[str] | None = None,
    requeue: bool = False,
    stop: threading.Event | None = None,
) -> str:
    """Run one cell to the end: up to 1 + `retries` attempts, each resuming where the last
    stopped; returns "done", "failed" or "running elsewhere". What every backend executes.

    A preempted attempt counts no retry: it is run again at once, or, with `requeue` (a
    scheduler's job that requeues itself), the outcome is "preempted". An attempt ended by
    Ctrl-C, or one running when `stop` is set (the local sweep's Ctrl-C), whose worker is then
    asked to save its step and stop (`_wait`), is not run again: the outcome is "interrupted"."""
    folder = SweepFolder(Path(root))
    command = command or cell_command(folder.root, cell, threads)
    with hold_lock(folder.lock(cell), wait=LOCK_WAIT_SECONDS) as lock_fd:
        if lock_fd is None:
            return "running elsewhere"
        record = folder.record(cell)
        for attempt in record["attempts"]:
            if not attempt.get("ended"):  # we hold the lock, so its process is gone
                attempt.update(ended=now(), error="interrupted: its process ended without a word")
        record["failed"] = None
        attempts = 1 + retries
        while attempts:
            set_aside_corrupt(folder, cell)
            if folder.finished(cell):
                write_json(folder.attempts(cell), record)
                return "done"
            if stop is not None and stop.is_set():
                return INTERRUPTED
            error, retry = _attempt(folder, cell, record, command, lock_fd, threads, backend, stop)
            if error is None:
                return "done"
            if record["attempts"][-1].get("interrupted"):
                return INTERRUPTED
            if record["attempts"][-1].get("preempted"):
                if requeue:
                    return PREEMPTED
                continue
            if not retry:  # bad input: another attempt would fail the same way
                break
            attempts -= 1
        log = str(folder.log(cell))
        record["failed"] = {"error": error, "log": log, "at": now()}
        write_json(folder.attempts(cell), record)
        return "failed"


def _attempt(
    folder: SweepFolder,
    cell: str,
    record: dict[str, Any],
    command: list[str],
    lock_fd: int,
    threads: int,
    backend: str,
    stop: threading.Event | None,
) -> tuple[str | None, bool]:
    """One process running the cell; returns its error (None if the run finished) and
    whether another attempt may succeed."""
    spec = read_json(folder.spec(cell))
    entry = {"started": now(), "host": socket.gethostname(), "pid": os.getpid(), "backend": backend}
    record["attempts"].append(entry)
    write_json(folder.attempts(cell), record)
    folder.error(cell).unlink(missing_ok=True)
    log = folder.log(cell)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    process = None
    try:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"==== attempt {len(record['attempts'])} {entry['started']} on ")
            out.write(f"{entry['host']} ({backend}): {' '.join(command)}\n")
            out.flush()
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec["cwd"] if Path(spec["cwd"]).is_dir() else None,
                pass_fds=(lock_fd,),
            )
            entry["child_pid"] = process.pid
            write_json(folder.attempts(cell), record)
            code = _wait(process, stop)
        error, retry = _error_of(folder, cell, code)
        if code in (EXIT_INTERRUPTED, -signal.SIGINT) or (stop is not None and stop.is_set()):
            entry["interrupted"] = True
        elif code == EXIT_PREEMPTED:
            entry["preempted"] = True
    except BaseException as err:  # a preempted SLURM job, Ctrl-C: the next attempt resumes
        error = f"interrupted: {type(err).__name__}"
        raise
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            process.kill()
        entry.update(ended=now(), seconds=round(time.monotonic() - started, 1), error=error)
        write_json(folder.attempts(cell), record)
    return error, retry


def _wait(process: subprocess.Popen, stop: threading.Event | None) -> int:
    """The process's exit code. Once `stop` is set, it gets SIGTERM, on which a worker saves
    the optimizer step it is in and exits (a Ctrl-C in the terminal has sent it SIGINT too,
    which does the same; a second SIGINT would stop it before it saves)."""
    if stop is None:
        return process.wait()
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout=1)
        if stop.is_set():
            process.terminate()
            return process.wait()


def _error_of(folder: SweepFolder, cell: str, code: int) -> tuple[str | None, bool]:
    """The attempt's error and whether to retry: the worker's own report, else how its
    process ended."""
    path = folder.error(cell)
    if path.exists():
        report = read_json(path)
        path.unlink(missing_ok=True)
        return report["error"], report["retry"]
    if code < 0:
        return f"killed by {signal.Signals(-code).name}", True
    if code == EXIT_PREEMPTED:
        return "preempted", True
    if code:
        return f"exited with code {code}", True
    if not folder.finished(cell):
        return "exited without writing results.json", True
    problem = results_problem(folder.run_dir(cell))  # the next attempt sets it aside
    return problem, problem is not None


def write_spec(
    folder: SweepFolder,
    cell: str,
    config: dict[str, Any],
    include: tuple,
    reference: dict[str, Any] | None = None,
) -> None:
    """The cell's file, read by the process that runs it (possibly on another node).
    `reference`: a reference cell's {"key", "folder"}, where it stores its score."""
    spec = {"config": config, "include": list(include), "cwd": os.getcwd()}
    if reference is not None:
        spec["reference"] = reference
    path = folder.spec(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, spec)
