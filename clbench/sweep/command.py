"""The `clbench sweep` subcommand: its flags and what it does with them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clbench.sweep.grid import BACKENDS

# flag dest -> where it goes in the grid: (section or None for the top level, field)
GRID_FLAGS: dict[str, tuple[str | None, str]] = {
    "backend": (None, "backend"),
    "workers": (None, "workers"),
    "retries": (None, "retries"),
    "output": (None, "output"),
    "data_dir": ("base", "data_dir"),
    "cpus_per_cell": ("resources", "cpus"),
    "gpus_per_cell": ("resources", "gpus"),
    "partition": ("slurm", "partition"),
    "time": ("slurm", "time"),
    "ray_address": ("ray", "address"),
    "ray_cpus": ("ray", "cpus"),
}


# The flags of `clbench sweep` besides GRID.yaml: flag -> argparse options.
FLAGS: dict[str, dict[str, Any]] = {
    "--status": {"action": "store_true", "help": "print every cell's status; run nothing"},
    "--backend": {"choices": list(BACKENDS), "help": "(default: the grid's, else local)"},
    "--workers": {"type": int, "metavar": "N", "help": "local: cells at a time (default 1)"},
    "--retries": {"type": int, "metavar": "N", "help": "more attempts of a failing cell (2)"},
    "--output": {"metavar": "DIR", "help": "the sweep folder (runs/sweeps/<grid name>)"},
    "--data-dir": {"help": "the local mirror, for every cell"},
    "--include-path": {
        "action": "append",
        "default": [],
        "metavar": "DIR",
        "help": "a folder of extra task and sequence YAML files (repeat for several)",
    },
    "--cpus-per-cell": {"type": int, "metavar": "N", "help": "slurm, ray: CPUs (threads)"},
    "--gpus-per-cell": {"type": int, "metavar": "N", "help": "slurm, ray: GPUs of a cell"},
    "--partition": {"help": "slurm: the partition"},
    "--time": {"metavar": "MINUTES|HH:MM:SS", "help": "slurm: the time limit of a cell"},
    "--ray-address": {"metavar": "ADDRESS", "help": "ray: a running cluster (default: local)"},
    "--ray-cpus": {"type": int, "metavar": "N", "help": "ray: CPUs of the local cluster"},
    "--report": {"action": "store_true", "help": "then write report.md, report.tex, figures/"},
    "--submit": {
        "nargs": "?",
        "const": "",
        "metavar": "NAME",
        "help": "then write leaderboard submissions (default name: per method)",
    },
    "--leaderboard": {"default": "leaderboard", "metavar": "DIR", "help": "for --submit"},
    "--replace": {"action": "store_true", "help": "for --submit: overwrite submissions"},
}


def add_parser(commands: Any) -> None:
    """Register `sweep` in the subcommands of the `clbench` parser."""
    sweep = commands.add_parser(
        "sweep",
        help="run a grid of runs as resumable cells, here, on SLURM or on Ray (docs/sweeps.md)",
    )
    sweep.add_argument("grid", metavar="GRID.yaml", help="the grid file")
    for flag, options in FLAGS.items():
        sweep.add_argument(flag, **options)
    sweep.set_defaults(handler=handle)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as overrides of the grid file's keys."""
    found: dict[str, Any] = {}
    for dest, (section, key) in GRID_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if key == "time" and value.isdigit():
            value = int(value)
        if section is None:
            found[key] = value
        else:
            found.setdefault(section, {})[key] = value
    if args.include_path:
        found["include"] = [str(Path(p).resolve()) for p in args.include_path]
    return found


def handle(args: argparse.Namespace) -> int:
    from clbench.sweep.driver import run_sweep, status_table, submit_runs, write_report
    from clbench.sweep.grid import load_grid

    grid = load_grid(args.grid, overrides(args))
    if args.status:
        print(status_table(grid), end="")
        return 0
    statuses = run_sweep(grid)
    if args.report:
        for path in write_report(grid):
            print(f"wrote {path}")
    if args.submit is not None:
        for path in submit_runs(grid, args.submit or None, Path(args.leaderboard), args.replace):
            print(f"wrote {path}")
    return 0 if all(s.state == "done" for s in statuses) else 1
