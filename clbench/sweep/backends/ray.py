"""The `ray` backend: one Ray core task per cell, with the cell's CPUs and GPUs as its
resources. A task whose worker is lost (killed, node gone) is retried by Ray up to `retries`
times, and the retry resumes the cell. Without `ray.address` a local cluster is started,
limited to `ray.cpus` CPUs and listening on the loopback interface only."""

from __future__ import annotations

import os
from typing import Any

from clbench.errors import ClbenchError
from clbench.sweep.backends import Progress, available_cores, command
from clbench.sweep.cells import run_cell
from clbench.sweep.grid import Cell, Grid


def run(grid: Grid, cells: list[Cell], progress: Progress) -> None:
    if not grid.ray.address:
        # Read when ray is imported: a local cluster then binds to 127.0.0.1 only (Ray's own
        # default on macOS and Windows), and, private and short-lived, sends no usage stats.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = not ray.is_initialized()
    if started and grid.ray.address:
        ray.init(address=grid.ray.address, log_to_driver=False)
    elif started:
        ray.init(
            num_cpus=grid.ray.cpus or available_cores(),
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        _run(ray, grid, cells, progress)
    finally:
        if started:
            ray.shutdown()


def _run(ray: Any, grid: Grid, cells: list[Cell], progress: Progress) -> None:
    resources = grid.resources
    cluster = ray.cluster_resources()
    for name, key, wanted in [("cpus", "CPU", resources.cpus), ("gpus", "GPU", resources.gpus)]:
        if wanted > cluster.get(key, 0):
            raise ClbenchError(
                f"a cell asks for {wanted} {name} (resources.{name}) but the Ray cluster has "
                f"{cluster.get(key, 0):g}"
            )
    threads = resources.cpus // resources.processes or 1
    task = ray.remote(run_cell).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=grid.retries
    )
    refs = {
        task.remote(
            str(grid.folder), cell.id, threads, grid.retries, "ray", command(grid, cell, threads)
        ): cell
        for cell in cells
    }
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        for ref in ready:
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as err:  # retries used up: the driver tries again
                outcome = f"lost its worker ({type(err).__name__})"
            progress(refs[ref], outcome)
