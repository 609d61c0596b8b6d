"""Where cells run. Each backend takes the grid and the cells to run and calls `run_cell` for
every cell somewhere, reporting each outcome as it arrives:

- `local`: a pool of `workers` cells at a time on this machine, each in its own process;
- `slurm`: one submitit job array, requeued and resumed when preempted or timed out;
- `ray`: Ray core tasks on a running cluster or on a local one, retried when a worker is lost.

`slurm` and `ray` need their optional extras; `load` checks for them before any cell starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable

from clbench.errors import ClbenchError
from clbench.sweep.cells import cell_command
from clbench.sweep.grid import Cell, Grid

Progress = Callable[[Cell, str], None]
Backend = Callable[[Grid, list[Cell], Progress], None]
# backend -> (module that needs the extra, extra)
EXTRAS = {"slurm": ("submitit", "slurm"), "ray": ("ray", "ray")}


def load(name: str) -> Backend:
    """The backend's `run` function; a ClbenchError with the pip command if its extra is absent."""
    if name in EXTRAS:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:  # not imported: ray reads settings then
            raise ClbenchError(
                f"the {name} backend needs {module}, which is not installed: "
                f"pip install 'clbench[{extra}]'"
            )
    return importlib.import_module(f"clbench.sweep.backends.{name}").run


def available_cores() -> int:
    """The cores this process may use (its affinity, which containers and SLURM restrict)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def command(grid: Grid, cell: Cell, threads: int) -> list[str]:
    resources = grid.resources
    return cell_command(
        grid.folder,
        cell.id,
        threads,
        resources.processes,
        resources.gpus,
        tuple(resources.accelerate_args),
    )
