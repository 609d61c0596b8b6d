"""The sweep itself: check the grid, prepare the cells, hand the unfinished ones to a backend
(the reference cells first, then the cells whose references are done), and afterwards print
their status, write the report and figures, and submit."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from statistics import mean

from tabulate import tabulate

from clbench.data.protocol import apply_protocol
from clbench.errors import ClbenchError
from clbench.results.io import read_json, write_json, write_text
from clbench.sweep import backends
from clbench.sweep.cells import (
    STATES,
    CellStatus,
    SweepFolder,
    cell_status,
    hold_lock,
    is_locked,
    set_aside_corrupt,
    write_spec,
)
from clbench.sweep.grid import Cell, Grid
from clbench.sweep.sharing import sharing_table, stage_seconds
from clbench.training.references import TRAINING_FILE

Output = Callable[[str], None]


def run_sweep(grid: Grid, out: Output = print) -> list[CellStatus]:
    """Run every cell that is not done; returns every cell's status at the end."""
    backend = backends.load(grid.backend)  # a missing extra fails before anything is written
    folder = SweepFolder(grid.folder)
    _check_folders(grid, folder)
    grid.folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(grid.folder / "sweep.lock") as held:
        if held is None:
            raise ClbenchError(f"another `clbench sweep` is running on {grid.folder}")
        todo = _prepare(grid, folder, out)
        out(
            f"{len(grid.cells)} cells in {grid.folder}: {len(grid.cells) - len(todo)} done or "
            f"running elsewhere, {len(todo)} to run ({grid.backend})"
        )
        started, finished = time.monotonic(), []

        def progress(cell: Cell, outcome: str) -> None:
            finished.append(cell)
            if outcome == "failed":
                outcome += ": " + folder.record(cell.id)["failed"]["error"]
            out(f"[{len(finished)}/{len(todo)}] {_axes(cell)}: {outcome}")

        # Each backend retries within a cell; a cell whose job or task vanished without a
        # word (a node lost, a job killed) is neither done nor failed, and goes again.
        for round_ in range(1 + grid.retries):
            if not todo:
                break
            if round_:
                out(f"{len(todo)} cells ended without a result; running them again")
            finished.clear()
            for batch in _batches(grid, folder, todo, out):
                backend(grid, batch, progress)
            todo = [c for c in todo if _status(folder, c).state == "pending"]
        statuses = [_status(folder, cell) for cell in grid.cells]
    counts = Counter(s.state for s in statuses)
    summary = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
    out(f"{summary} ({time.monotonic() - started:.0f} s)")
    return statuses


def _batches(
    grid: Grid, folder: SweepFolder, todo: list[Cell], out: Output
) -> Iterator[list[Cell]]:
    """The cells to hand to the backend, in turn: the reference cells, then, once they have
    run, the cells whose references are all done."""
    references = [c for c in todo if c.reference is not None]
    if references:
        yield references
    done = {
        c.id for c in grid.cells if c.reference is not None and _status(folder, c).state == "done"
    }
    cells = [c for c in todo if c.reference is None]
    ready = [c for c in cells if set(c.needs) <= done]
    if len(ready) < len(cells):
        out(f"{len(cells) - len(ready)} cells wait for references that did not finish")
    if ready:
        yield ready


def _status(folder: SweepFolder, cell: Cell) -> CellStatus:
    return cell_status(folder, cell.id, cell.stages)


def _check_folders(grid: Grid, folder: SweepFolder) -> None:
    """Refuse to start if a cell's folder already holds a run with another config."""
    conflicts = []
    for cell in grid.cells:
        saved = folder.run_dir(cell.id) / "config.json"
        if saved.exists():  # the runner saves the config with its protocol applied
            current = apply_protocol(cell.config, grid.include)
            differs = current.differs_from(read_json(saved))
            if differs:
                conflicts.append(f"{saved.parent} (differs in: {', '.join(differs)})")
    if conflicts:
        raise ClbenchError(
            "these cell folders hold runs with other configs; move them away or choose another "
            "output:\n  " + "\n  ".join(conflicts)
        )


def _prepare(grid: Grid, folder: SweepFolder, out: Output) -> list[Cell]:
    """Write each cell's file, set corrupt results aside; returns the cells to run."""
    todo = []
    if grid.references is not None:  # how the folder's references train, for every cell
        grid.references.mkdir(parents=True, exist_ok=True)
        write_json(grid.references / TRAINING_FILE, grid.reference_training)
    for cell in grid.cells:
        reference = None
        if cell.reference is not None:
            reference = {"key": cell.reference, "folder": str(grid.references)}
        write_spec(folder, cell.id, cell.config.to_dict(), grid.include, reference)
        if is_locked(folder.lock(cell.id)):
            out(f"{_axes(cell)}: running elsewhere (a job of an earlier sweep); not started")
            continue
        problem = set_aside_corrupt(folder, cell.id)
        if problem:
            out(f"{_axes(cell)}: corrupt results.json: {problem}")
        if _status(folder, cell).state != "done":
            todo.append(cell)
    return todo


def _axes(cell: Cell) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.axes.items()) or cell.id


def status_table(grid: Grid) -> str:
    """Every cell: its axis values, status, progress or error, attempts and times."""
    folder = SweepFolder(grid.folder)
    statuses = [_status(folder, cell) for cell in grid.cells]
    rows = []
    for cell, status in zip(grid.cells, statuses, strict=True):
        detail = status.detail if len(status.detail) <= 60 else status.detail[:57] + "..."
        started = (
            datetime.fromisoformat(status.started).astimezone().strftime("%Y-%m-%d %H:%M")
            if status.started
            else ""
        )
        seconds = f"{status.seconds:.0f} s" if status.seconds is not None else ""
        values = [cell.axes.get(axis, "") for axis in grid.axes]
        rows.append([*values, status.state, detail, status.attempts, started, seconds, cell.id])
    headers = [*grid.axes, "status", "detail", "attempts", "started", "time", "cell"]
    counts = Counter(s.state for s in statuses)
    lines = [
        tabulate(rows, headers=headers, disable_numparse=True),
        "",
        f"{len(statuses)} cells{_of_them_references(grid)}: "
        + ", ".join(f"{counts[state]} {state}" for state in STATES),
    ]
    for cell, status in zip(grid.cells, statuses, strict=True):
        if status.state == "failed":
            lines.append(f"failed {_axes(cell)}: {status.detail} (log: {folder.log(cell.id)})")
    estimate = _time_left(grid, folder, statuses)
    if estimate:
        lines.append(estimate)
    shared = sharing_table(grid)
    if shared:
        lines += ["", shared]
    return "\n".join(lines) + "\n"


def _time_left(grid: Grid, folder: SweepFolder, statuses: list[CellStatus]) -> str:
    """The run time the cells not done would take, judged by the finished cells' stages: those
    of the same method, else those of all methods (references only if nothing else is done).
    Empty when nothing is finished or left."""
    kind = {cell.id: "reference" if cell.reference else cell.config.method for cell in grid.cells}
    seconds: dict[str, list[float]] = defaultdict(list)
    left = []
    for cell, status in zip(grid.cells, statuses, strict=True):
        if status.state == "done":
            seconds[kind[cell.id]].append(stage_seconds(folder.run_dir(cell.id)))
        else:
            left.append(kind[cell.id])
    if not left or not seconds:
        return ""
    runs = [k for k in seconds if k != "reference"] or list(seconds)
    overall = mean(value for k in runs for value in seconds[k])
    total = sum(mean(seconds[k]) if k in seconds else overall for k in left)
    unknown = sorted(set(left) - set(seconds))
    basis = "the finished cells of the same method"
    if unknown:
        basis += f"; of all methods for {', '.join(unknown)}, none of whose cells is finished"
    return (
        f"cells not done: {len(left)}, about {total / 3600:.1f} h of run time, to divide by the "
        f"cells run at a time (judged by {basis})"
    )


def _of_them_references(grid: Grid) -> str:
    count = sum(cell.reference is not None for cell in grid.cells)
    return f" ({count} of them single-task references)" if count else ""


def done_runs(grid: Grid) -> list[Path]:
    """The finished cells of the grid's methods, for the report and the submissions: the
    single-task reference cells are inputs of FWD, not entries of their own."""
    folder = SweepFolder(grid.folder)
    done = [
        folder.run_dir(c.id)
        for c in grid.cells
        if c.reference is None and _status(folder, c).state == "done"
    ]
    if not done:
        raise ClbenchError(f"no finished cells of the grid's methods in {grid.folder}")
    return done


def write_report(grid: Grid) -> list[Path]:
    """report.md and report.tex (the tables of `clbench report`) and figures/*.pdf: per
    sequence bars, stages and curves, the cost and the probes where the runs have them, and
    the loss against training tokens for a sequence with language-modelling tasks."""
    from clbench.reporting import plots
    from clbench.reporting.tables import parse_metrics, tables
    from clbench.results.load import read_runs, runs_frame

    options = grid.report
    results = read_runs(done_runs(grid))
    runs = runs_frame(results)
    metrics = None if options.metrics is None else parse_metrics(options.metrics)
    written = []
    for fmt, name in [("md", "report.md"), ("latex", "report.tex")]:
        text = tables(
            runs,
            fmt,
            baseline=options.baseline,
            metrics=metrics,
            average_orders=options.average_orders,
            decimals=options.decimals,
            interval=options.interval,
            results=results,
        )
        write_text(grid.folder / name, text)
        written.append(grid.folder / name)
    by_sequence: dict[str, list] = {}
    for run in results:
        by_sequence.setdefault(run.sequence.name, []).append(run)
    for sequence, group in by_sequence.items():
        kinds = ["bars", "stages", "curves"] + (["general"] if all(r.probes for r in group) else [])
        kinds += ["cost"] if all(r.cost for r in group) else []  # runs before cost was counted
        kinds += (
            ["loss-vs-tokens"]
            if any(t.evaluation == "loss" for t in group[0].sequence.tasks)
            else []
        )
        for kind in kinds:
            figure = plots.plot(group, kind, "double")
            name = f"{re.sub(r'[^A-Za-z0-9._-]+', '-', sequence)}-{kind}.pdf"
            written.append(plots.save(figure, grid.folder / "figures" / name))
    return written


def submit_runs(grid: Grid, name: str | None, leaderboard: Path, replace: bool) -> list[Path]:
    """Leaderboard submissions of the finished cells, as `clbench submit` writes them."""
    from clbench.leaderboard.submission import submit

    data_dir = grid.cells[0].config.data_dir
    return submit(
        [str(d) for d in done_runs(grid)],
        leaderboard,
        name=name,
        data_dir=data_dir,
        replace=replace,
    )
