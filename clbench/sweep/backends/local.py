"""The `local` backend: `workers` cells at a time on this machine, each attempt a process of
its own, with `cores // workers` torch threads so that the cells never oversubscribe the CPU
(two 2-thread torch processes on 2 cores run about 5x slower per step than one).

Ctrl-C stops the sweep: no cell starts, and each running cell's worker saves the optimizer
step it is in (docs/sweeps.md#interrupting-a-sweep)."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from clbench.sweep.backends import Progress, available_cores, command
from clbench.sweep.cells import run_cell
from clbench.sweep.grid import Cell, Grid


def run(grid: Grid, cells: list[Cell], progress: Progress) -> None:
    cores = available_cores()
    threads = max(1, cores // grid.workers)
    if grid.workers > cores:
        print(
            f"clbench: warning: {grid.workers} workers on {cores} cores: the cells slow each "
            "other down",
            file=sys.stderr,
        )
    # Threads only wait here: each attempt is a process (see cells.run_cell).
    stop = threading.Event()
    with ThreadPoolExecutor(grid.workers, thread_name_prefix="clbench-cell") as pool:
        futures = {
            pool.submit(
                run_cell,
                grid.folder,
                cell.id,
                threads,
                grid.retries,
                "local",
                command(grid, cell, threads),
                stop=stop,
            ): cell
            for cell in cells
        }
        try:
            for future in as_completed(futures):
                progress(futures[future], future.result())
        except KeyboardInterrupt:
            stop.set()
            print("clbench: stopping: the running cells save their step", file=sys.stderr)
            pool.shutdown(cancel_futures=True)
            raise
