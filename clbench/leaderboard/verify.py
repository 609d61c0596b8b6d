"""Verifying a submitted run: every matrix cell recomputed from its logged predictions.

A submission keeps each run's predictions in a folder laid out as the run's own
(clbench.evaluation.predictions), so the run's `predictions` block locates and hashes them.
For each cell, the file must be the one the run recorded (its SHA-256), every line must be what
the run would have written for its prediction on the task's test data (index, prompt hash, gold
answer, the example's own score and option texts), and the task's scorer applied to the file's
predictions must give the matrix cell.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from clbench.data.task import TaskData
from clbench.errors import ClbenchError
from clbench.evaluation import predictions
from clbench.evaluation.evaluate import evaluation_of, score_predictions
from clbench.results.schema import PredictionFile, Results

TOLERANCE = 1e-9  # numbers are recomputed in float64 from the same inputs
# A prediction of another type than the task's scorer takes fails inside the scorer.
_UNSCORABLE = (ClbenchError, TypeError, ValueError, IndexError, KeyError)


def check_run(run: Results, run_dir: Path, data: list[TaskData]) -> list[str]:
    """What is wrong with the predictions of `run` kept in `run_dir`, given the test `data` of
    its tasks (in sequence order); [] when every cell is recomputed from them. Each problem
    starts with the run's field it concerns."""
    block = run.predictions
    if block is None:
        raise ClbenchError(f"{run.source}: no predictions to verify")
    if (block.format, block.folder) != (predictions.FORMAT, predictions.FOLDER):
        return [
            f"predictions is format {block.format} in {block.folder!r}; this clbench verifies "
            f"format {predictions.FORMAT} in {predictions.FOLDER!r}"
        ]
    mode = run.budget.get("eval_mode", "rank")
    problems = []
    for k, row in enumerate(block.files):
        for j, (cell, task_data) in enumerate(zip(row, data, strict=True)):
            where = f"matrix[{k}][{j}] ({_row_name(run, k)}, task {task_data.task.name})"
            problem = _check_cell(cell, run.matrix[k][j], run_dir, k, task_data, mode)
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


def _row_name(run: Results, row: int) -> str:
    return "before training" if row == 0 else f"after {run.tasks[row - 1]}"


def _check_cell(
    cell: PredictionFile, claimed: Any, run_dir: Path, row: int, data: TaskData, mode: str
) -> str | None:
    """What is wrong with one cell's predictions file and value, or None."""
    expected = (predictions.row_dir(Path(), row) / f"{data.task.name}.jsonl").as_posix()
    if (cell.task, cell.path) != (data.task.name, expected):
        return f"its predictions file is {cell.path!r} of {cell.task!r}; expected {expected!r}"
    try:
        path = predictions.verified(run_dir, cell.path, cell.sha256)
        lines = predictions.read(path)
    except ClbenchError as err:
        return str(err)
    if len(lines) != len(data.test):
        return f"{path} has {len(lines)} lines; the test data has {len(data.test)} examples"
    evaluation = evaluation_of(data.task, mode)
    try:
        kept = [_sample(line) for line in lines]
        written = _as_json(predictions.records(data, kept, evaluation))
        scores = score_predictions(data, [s["prediction"] for s in kept], mode)
    except _UNSCORABLE as err:
        return f"{path}: the predictions cannot be scored ({err.__class__.__name__}: {err})"
    for number, (line, want) in enumerate(zip(lines, written, strict=True), start=1):
        for key in sorted(want.keys() | line.keys()):
            if line.get(key) != want.get(key):
                return (
                    f"{path}:{number}: {key} is {show(line.get(key))}, but the test data "
                    f"gives {show(want.get(key))}"
                )
    recomputed = scores[data.task.metric]
    if not same(claimed, recomputed):
        return f"the matrix gives {show(claimed)} but its predictions give {show(recomputed)}"
    return None


def _sample(line: Any) -> dict[str, Any]:
    """The evaluator's sample of one line: what `predictions.records` turns into the line."""
    if not isinstance(line, dict) or "prediction" not in line:
        raise ValueError(f"a line without a prediction: {show(line)}")
    sample = {"prediction": line["prediction"]}
    if "option_scores" in line:
        sample["option_scores"] = line["option_scores"]
    return sample


def _as_json(value: Any) -> Any:
    """`value` as a file gives it back (tuples as lists)."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def show(value: Any) -> str:
    """A value for an error message, cut at 60 characters."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def same(claimed: Any, expected: float | None) -> bool:
    """Whether a claimed number is the recomputed one (both null for an undefined one)."""
    if expected is None or claimed is None:
        return claimed is None and expected is None
    if not isinstance(claimed, numbers.Real) or isinstance(claimed, bool):
        return False
    return abs(claimed - expected) <= TOLERANCE
