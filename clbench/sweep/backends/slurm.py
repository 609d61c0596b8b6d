"""The `slurm` backend: one submitit job array per sweep, one job per cell.

A job that SLURM preempts or times out gets submitit's signal; `CellJob` is checkpointable, so
submitit requeues it and the requeued job resumes the cell from its last finished stage. A
cell's worker stopped by a preemption signal of its own (exit code 75) takes the same way: the
job raises submitit's signal itself.
submitit's files (job scripts, stdout and stderr of each job) go to <sweep>/slurm/.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import submitit

from clbench.errors import ClbenchError
from clbench.sweep.backends import Progress, command
from clbench.sweep.cells import PREEMPTED, run_cell
from clbench.sweep.grid import Cell, Grid, slurm_minutes


class CellJob(submitit.helpers.Checkpointable):
    """The job of one cell; `checkpoint` (inherited) resubmits it as it is, since the cell's
    progress is in its run folder."""

    def __init__(self, root: str, threads: int, retries: int, commands: dict[str, list[str]]):
        self.root, self.threads, self.retries, self.commands = root, threads, retries, commands

    def __call__(self, cell: str) -> str:
        command = self.commands[cell]
        outcome = run_cell(self.root, cell, self.threads, self.retries, "slurm", command, True)
        requeue = submitit.JobEnvironment._usr_sig()
        if outcome == PREEMPTED and callable(signal.getsignal(requeue)):
            # submitit's handler checkpoints this job as it is and requeues it; without one
            # (cluster: debug runs jobs in the sweep's process) the sweep runs the cell again.
            signal.raise_signal(requeue)
        return outcome


def parameters(grid: Grid) -> dict[str, Any]:
    """submitit's parameters for the job of one cell; those named slurm_* only apply on SLURM."""
    options, resources = grid.slurm, grid.resources
    params: dict[str, Any] = {
        "name": f"clbench-{grid.folder.name}",
        "timeout_min": slurm_minutes(options.time),
        "cpus_per_task": resources.cpus,
        "gpus_per_node": resources.gpus,
        "nodes": 1,
        "tasks_per_node": 1,  # `accelerate launch` starts a cell's processes itself
    }
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
        if getattr(options, key) is not None:
            params[f"slurm_{key}"] = getattr(options, key)
    if options.additional:
        params["slurm_additional_parameters"] = options.additional
    return params


def executor(grid: Grid) -> submitit.AutoExecutor:
    # Named, not detected: without SLURM, submitit would silently run the cells here.
    auto = submitit.AutoExecutor(folder=grid.folder / "slurm" / "%j", cluster=grid.slurm.cluster)
    auto.update_parameters(**parameters(grid))
    return auto


def run(grid: Grid, cells: list[Cell], progress: Progress) -> None:
    threads = grid.resources.cpus // grid.resources.processes or 1
    commands = {cell.id: command(grid, cell, threads) for cell in cells}
    job = CellJob(str(grid.folder), threads, grid.retries, commands)
    try:
        jobs = executor(grid).map_array(job, [cell.id for cell in cells])  # one array
    except (OSError, RuntimeError, subprocess.CalledProcessError) as err:  # no SLURM here
        raise ClbenchError(f"could not submit the job array: {err}") from err
    by_job = {j.job_id: cell for j, cell in zip(jobs, cells, strict=True)}
    for finished in submitit.helpers.as_completed(jobs, poll_frequency=2):
        try:
            outcome = finished.result()
        except Exception as err:  # the job died (node failure, scancel): the driver retries
            outcome = f"job {finished.job_id} ended without a result ({type(err).__name__})"
        progress(by_job[finished.job_id], outcome)
