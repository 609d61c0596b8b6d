"""Finding results files and reading them into the table of runs, one row per run.

`clbench report`, `clbench plot`, leaderboard submissions and the leaderboard build all read
runs through here: `read_runs` gives their `Results`, `runs_frame` the table.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clbench import metrics
from clbench.errors import ClbenchError
from clbench.results.io import read_json
from clbench.results.schema import Results, is_results

# What must be equal for runs of one method to be averaged together, besides the test data
# (clbench.results.compare). Budget and hyper-parameters are canonical JSON, compared key by key.
COMPARED = ("budget", "model_source", "model_revision", "peft", "hyperparameters")
ORDER_SUFFIX = re.compile(r"(.+)-order(\d+)")


def split_order(sequence: str) -> tuple[str, int | None]:
    """`standard-cl-order2` -> ("standard-cl", 2): the sequence group and the task order.
    A name without an `-orderN` suffix is its own group, with no order."""
    named = ORDER_SUFFIX.fullmatch(sequence)
    return (named.group(1), int(named.group(2))) if named else (sequence, None)


# ---- finding files ----------------------------------------------------------------------------


def results_paths(paths_or_globs: Iterable[str | Path]) -> list[Path]:
    """The results files named: a results file, a run folder, a folder of runs, or a glob."""
    found: dict[Path, Path] = {}  # resolved -> as given, so a file named twice counts once
    unfinished: list[str] = []
    for item in paths_or_globs:
        text = str(item)
        named = not _is_glob(text)
        matches = [text] if named else sorted(glob.glob(text, recursive=True))
        if not matches:
            raise ClbenchError(f"no results.json matches {text!r}")
        for match in map(Path, matches):
            files = _results_files(match)
            if not files and named:
                raise ClbenchError(
                    f"no results.json at or under {match} (is the run finished? results files "
                    "under other names are read when named, or by a glob such as 'DIR/*.json')"
                )
            if not files:  # a glob over a sweep in progress also matches the cells still running
                unfinished.append(str(match))
            for path in files:
                found.setdefault(path.resolve(), path)
    if not found:
        raise ClbenchError(
            f"no results.json in the {len(unfinished)} folder(s) matched (are the runs finished?)"
            if unfinished
            else "no runs given"
        )
    if unfinished:
        warnings.warn(
            f"left out {len(unfinished)} folder(s) matched with no results.json yet "
            f"(unfinished runs?): {', '.join(unfinished)}",
            stacklevel=2,
        )
    return list(found.values())


def _is_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def _results_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(path.rglob("results.json")) if path.is_dir() else []


def load_results_file(path: str | Path) -> list[Results]:
    """The runs in a results file: one for results.json, all of them for a leaderboard
    submission (which holds each run's results.json content under `runs`)."""
    path = Path(path)
    content = read_json(path)
    if isinstance(content, dict) and "submission_version" in content:
        runs = content.get("runs")
        if not isinstance(runs, list) or not all(map(is_results, runs)):
            raise ClbenchError(f"{path}: field 'runs' must be a list of results objects")
        return [Results.from_json(run, f"{path}: runs[{i}]") for i, run in enumerate(runs)]
    if not is_results(content):
        raise ClbenchError(f"{path}: not a clbench results file (no 'matrix')")
    return [Results.from_json(content, str(path))]


def read_runs(paths_or_globs: Iterable[str | Path]) -> list[Results]:
    """Every run of the results files, run folders, folders of runs and globs named."""
    return [run for path in results_paths(paths_or_globs) for run in load_results_file(path)]


# ---- the table of runs ------------------------------------------------------------------------


def load_runs(paths_or_globs: Iterable[str | Path]) -> pd.DataFrame:
    """`runs_frame` of `read_runs`."""
    return runs_frame(read_runs(paths_or_globs))


def runs_frame(runs: Sequence[Results]) -> pd.DataFrame:
    """One row per run: its metrics (fractions, as in results.json) and what it was run with.

    Columns: run_id, path (where it was read from), created_at, sequence, sequence_group and
    order (`split_order`), method, model, model_source, model_revision, peft, seed, budget and
    hyperparameters (canonical JSON), protocol (`name vVERSION HASH`, or "none"),
    uses_task_id, extra_memory, test_data and test_data_set (hashes of the test fingerprints in
    order and as a set), unit_factor and unit (what the metrics are shown in:
    `clbench.metrics.metrics_unit`), comparability_key (equal for runs that may be averaged
    within one sequence), and one column per metric of the table (NaN where undefined).
    """
    if not runs:
        raise ClbenchError("no runs given")
    frame = pd.DataFrame([_row(run) for run in runs])
    frame["order"] = frame["order"].astype("Int64")
    copies = frame[frame["created_at"].notna()].duplicated(["run_id", "created_at"], keep=False)
    if copies.any():
        paths = ", ".join(frame.loc[copies[copies].index, "path"])
        raise ClbenchError(f"the same run is given twice (same run_id and created_at): {paths}")
    return frame


def _row(run: Results) -> dict[str, Any]:
    group, order = split_order(run.sequence.name)
    fingerprints = [task.fingerprint for task in run.sequence.tasks]
    row = {
        "run_id": run.run_id,
        "path": run.source,
        "created_at": run.created_at,
        "sequence": run.sequence.name,
        "sequence_group": group,
        "order": order,
        "method": run.method.name,
        "model": run.model.name,
        "model_source": _text(run.model.source),
        "model_revision": _text(run.model.revision),
        "peft": _text(run.model.peft),
        "seed": run.seed,
        "budget": canonical(run.budget),
        "protocol": _protocol(run),
        "hyperparameters": canonical(run.method.hyperparameters),
        "uses_task_id": run.method.uses_task_id,
        "extra_memory": run.method.extra_memory,
        "test_data": _digest(fingerprints),
        "test_data_set": _digest(sorted(set(fingerprints))),
    }
    row["unit_factor"], row["unit"] = metrics.metrics_unit([t.metric for t in run.sequence.tasks])
    row["comparability_key"] = _digest(
        [row[key] for key in ("sequence", "protocol", "test_data", "model", "method", *COMPARED)]
    )
    return row | {key: run.metric(key) for key in metrics.METRICS}


def reported_metrics(frame: pd.DataFrame) -> tuple[str, ...]:
    """The metrics a table of these runs shows by default: every "matrix" metric of the table,
    and a "probes" metric (general forgetting) when some run has it."""
    return tuple(
        key
        for key, metric in metrics.METRICS.items()
        if metric.source == "matrix" or frame[key].notna().any()
    )


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _protocol(run: Results) -> str:
    """`name vVERSION HASH` of the run's protocol, or "none"."""
    found = run.protocol
    return "none" if found is None else f"{found.name} v{found.version} {found.hash[:8]}"


def _text(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else canonical(value)


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:12]
