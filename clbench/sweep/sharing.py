"""The time a sweep saved by sharing row 0 and the single-task references between its cells,
from the files alone: each shared piece was computed once, and every other cell that used it
would otherwise have computed it again, so it saved (cells that used it - 1) x its seconds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tabulate import tabulate

from clbench.results.io import read_json
from clbench.sweep.cells import SweepFolder, results_problem
from clbench.sweep.grid import Grid


def sharing_table(grid: Grid) -> str:
    """One row per kind of shared piece: how many were computed, how many cells used them,
    their seconds (each once) and the seconds saved; empty if the sweep shared nothing yet."""
    folder = SweepFolder(grid.folder)
    done = {cell.id for cell in grid.cells if _done(folder.run_dir(cell.id))}
    rows = []
    notes = []
    # Row 0: the cells that reused one name its cache entry.
    reusers = Counter(
        row0["key"]
        for cell in done
        if (row0 := read_json(folder.run_dir(cell) / "results.json").get("row0"))
    )
    if reusers:
        seconds = {key: _row0_seconds(folder, key) for key in reusers}
        unknown = [key for key, value in seconds.items() if value is None]
        if unknown:
            notes.append(
                f"row 0 of {len(unknown)} kind(s) counted as 0 s: the cell that evaluated it is "
                "no longer in the sweep folder, and its entry predates the recorded seconds"
            )
        seconds = {key: value or 0.0 for key, value in seconds.items()}
        users = sum(reusers.values()) + len(reusers)
        saved = sum(count * seconds[key] for key, count in reusers.items())
        rows.append(["row 0", len(reusers), users, sum(seconds.values()), saved])
    # References: every cell that reads one, finished, used it.
    references = [cell for cell in grid.cells if cell.reference is not None and cell.id in done]
    if references:
        uses = Counter(need for cell in grid.cells if cell.id in done for need in cell.needs)
        seconds = {cell.id: stage_seconds(folder.run_dir(cell.id)) for cell in references}
        saved = sum(max(uses[ref] - 1, 0) * seconds[ref] for ref in seconds)
        used = sum(uses[ref] for ref in seconds)
        rows.append(["references", len(references), used, sum(seconds.values()), saved])
    if not rows:
        return ""
    headers = ["shared", "computed", "used by cells", "seconds (each once)", "seconds saved"]
    table = tabulate(rows, headers=headers, floatfmt=".0f")
    total = sum(row[-1] for row in rows)
    return "\n".join([table, f"time saved by sharing: {total:.0f} s", *notes])


def _done(run_dir: Path) -> bool:
    return (run_dir / "results.json").exists() and results_problem(run_dir) is None


def _row0_seconds(folder: SweepFolder, key: str) -> float | None:
    """The seconds row 0 `key` took: recorded in its entry, else (older entries) row 0's stage
    in the cell that evaluated it; None when neither is there any more."""
    entry = read_json(folder.row0() / key / "row0.json")
    if "seconds" in entry:
        return entry["seconds"]
    source = folder.run_dir(entry["source"])
    return stage_seconds(source, first=True) if (source / "state.json").exists() else None


def stage_seconds(run_dir: Path, first: bool = False) -> float:
    """Training and evaluation seconds of a run's stages (row 0's alone with `first`)."""
    stages = read_json(run_dir / "state.json")["stages"]
    return sum(s["train_seconds"] + s["eval_seconds"] for s in stages[: 1 if first else None])
