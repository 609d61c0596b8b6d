"""Logged predictions: every cell of the matrix keeps its predictions next to the gold answers.

    <run folder>/predictions/row<k>/<task>.jsonl    one line per test example, in test order

Each line holds the example's `index` in the task's test set, a `prompt_sha256` (the prompt
itself would make a 4-task run of 200 test examples per task 3.5 MB instead of 1.2 MB), the
`prediction` and the `gold` answer as the task's scorer takes them, the example's own `score`
(the scorer applied to that example alone) and, for ranked tasks, every option's summed
log-likelihood (`option_scores`). results.json's `predictions` block lists every file with its
SHA-256, so a reader can check the files and recompute each cell from them
(docs/results-schema.md).

A file is written to a temporary name and renamed, so an interrupted row leaves none half
written; a resumed run rewrites the row it had not finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clbench.data.task import TaskData
from clbench.errors import ClbenchError
from clbench.evaluation.scorers import SCORERS
from clbench.results.io import write_text

FORMAT = 1  # the version of the line layout above
FOLDER = "predictions"
_DECIMALS = 4  # of the option scores; enough to see the margin, and a third of the size


def row_dir(run_dir: Path, row: int) -> Path:
    """The folder of matrix row `row` (0: before training)."""
    return run_dir / FOLDER / f"row{row}"


def write_cell(
    folder: Path, data: TaskData, samples: list[dict[str, Any]], evaluation: str | None = None
) -> None:
    """Write one cell's file into its row's `folder`, from `evaluate_task`'s samples;
    `evaluation` is how the task was scored (`evaluation_of`), by default its own way."""
    write(folder / f"{data.task.name}.jsonl", records(data, samples, evaluation))


def records(
    data: TaskData, samples: list[dict[str, Any]], evaluation: str | None = None
) -> list[dict[str, Any]]:
    """One line per test example, as the module docstring describes."""
    if evaluation in (None, data.task.evaluation):
        metric, args, golds = data.task.metric, data.metric_args, data.references
    else:  # a ranked task that generated its label: exact match with the label's text
        metric, args, golds = "exact_match", {}, [e.target.strip() for e in data.test]
    ranked = evaluation in (None, "rank") and data.options is not None
    lines = []
    for i, (example, sample, gold) in enumerate(zip(data.test, samples, golds, strict=True)):
        prediction = sample["prediction"]
        line = {
            "index": i,
            "prompt_sha256": hashlib.sha256(example.prompt.encode("utf-8")).hexdigest(),
            "prediction": prediction,
            "gold": gold,
            "score": SCORERS[metric]([prediction], [gold], **args)[metric],
        }
        if ranked:  # what the chosen and the gold index stand for
            line["option"], line["gold_option"] = data.options[prediction], data.options[gold]
        if "option_scores" in sample:
            line["option_scores"] = [round(s, _DECIMALS) for s in sample["option_scores"]]
        lines.append(line)
    return lines


def write(path: Path, lines: Iterable[dict[str, Any]]) -> None:
    """Write JSONL whole or not at all (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def read(path: Path) -> list[dict[str, Any]]:
    """The lines of one predictions file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ClbenchError(f"cannot read predictions {path}: {err.strerror}") from err
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ClbenchError(f"{path}:{err.lineno}: not a JSON line ({err.msg})") from err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified(run_dir: Path, path: str, digest: str) -> Path:
    """The file at `path` (relative to `run_dir`), refused unless its SHA-256 is `digest`."""
    found = run_dir / path
    if not found.is_file():
        raise ClbenchError(f"predictions file {found} is missing")
    if sha256(found) != digest:
        raise ClbenchError(f"predictions file {found} changed since results.json recorded it")
    return found


def block(run_dir: Path, tasks: list[str], rows: int) -> dict[str, Any] | None:
    """results.json's `predictions`: the folder, the line format and every file's path
    (relative to the run folder) and SHA-256, row by row; None when the run kept none."""
    if not (run_dir / FOLDER).is_dir():
        return None
    files = []
    for row in range(rows):
        paths = [row_dir(run_dir, row) / f"{task}.jsonl" for task in tasks]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ClbenchError(f"predictions are missing: {', '.join(missing)}")
        files.append(
            [
                {"task": t, "path": p.relative_to(run_dir).as_posix(), "sha256": sha256(p)}
                for t, p in zip(tasks, paths, strict=True)
            ]
        )
    return {"format": FORMAT, "folder": FOLDER, "files": files}
