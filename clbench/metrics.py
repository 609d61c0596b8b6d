"""Continual-learning metrics computed from an accuracy matrix.

R has shape (T+1) x T: R[0][j] is the score on task j before any training and
R[k][j] the score on task j right after training on task k. Formulas:
BWT and FWT follow GEM (Lopez-Paz & Ranzato, 2017); forgetting follows
Chaudhry et al. (2018); AA/AIA are the usual final and incremental averages and
FWD compares each newly learned task against a single-task reference S.
Missing cells (None or NaN) make exactly the metrics that need them NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_KEYS = ("aa", "aia", "fgt", "bwt", "fwd", "fwt")
METRIC_NAMES = {
    "aa": "average accuracy",
    "aia": "average incremental accuracy",
    "fgt": "forgetting",
    "bwt": "backward transfer",
    "fwd": "forward transfer",
    "fwt": "zero-shot forward transfer",
    "gf": "general forgetting",  # from the probe matrix, not the task matrix
}


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _cell(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    # bool is an int subclass and np.bool_ converts to float silently; both are bugs upstream.
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where} is a bool ({bool(value)}); expected a number or None")
    if not isinstance(value, numbers.Real):
        raise ValueError(
            f"{where} is a {type(value).__name__} ({value!r}); expected a number or None"
        )
    if math.isinf(value):
        raise ValueError(f"{where} is infinite ({value}); expected a finite number or None")
    return float(value)


def _matrix(matrix: Any) -> np.ndarray:
    rows = matrix.tolist() if isinstance(matrix, np.ndarray) else matrix
    if not _is_sequence(rows):
        raise ValueError(f"matrix must be a 2-D nested sequence; got {type(matrix).__name__}")
    rows = [row.tolist() if isinstance(row, np.ndarray) else row for row in rows]
    if len(rows) == 0:
        raise ValueError("matrix is empty; expected T+1 rows and T >= 1 columns")
    for i, row in enumerate(rows):
        if not _is_sequence(row):
            raise ValueError(
                f"matrix row {i} is a {type(row).__name__}, not a sequence; matrix must be 2-D"
            )
        if len(row) != len(rows[0]):
            raise ValueError(f"matrix row {i} has {len(row)} cells, expected {len(rows[0])}")
    n_cols = len(rows[0])
    if n_cols == 0:
        raise ValueError("matrix has no columns; expected T >= 1 tasks")
    if len(rows) != n_cols + 1:
        raise ValueError(
            f"matrix must have T+1 rows for T columns; got {len(rows)} rows and {n_cols} columns"
        )
    return np.array(
        [[_cell(v, f"matrix[{i}][{j}]") for j, v in enumerate(row)] for i, row in enumerate(rows)]
    )


def _single_task(single_task: Any, n_tasks: int) -> np.ndarray | None:
    if single_task is None:
        return None
    values = single_task.tolist() if isinstance(single_task, np.ndarray) else single_task
    if not _is_sequence(values):
        raise ValueError(f"single_task must be a sequence; got {type(single_task).__name__}")
    if len(values) != n_tasks:
        raise ValueError(f"single_task has {len(values)} values, expected T = {n_tasks}")
    return np.array([_cell(v, f"single_task[{j}]") for j, v in enumerate(values)])


def _mean(values: Any) -> float:
    # No terms (T = 1) means the metric is undefined, not zero.
    return float(np.mean(values)) if len(values) else math.nan


def _metrics(a: np.ndarray, s: np.ndarray | None) -> dict[str, float]:
    t = a.shape[1]
    learned = a[1:].diagonal()  # a[j][j]: task j right after training on it
    before = a[:-1].diagonal()  # a[j-1][j]: task j right before training on it
    return {
        "aa": _mean(a[t]),
        "aia": _mean([_mean(a[k, :k]) for k in range(1, t + 1)]),
        "fgt": _mean([a[c + 1 : t, c].max() - a[t, c] for c in range(t - 1)]),
        "bwt": _mean(a[t, :-1] - learned[:-1]),
        "fwd": math.nan if s is None else _mean(learned[1:] - s[1:]),
        "fwt": _mean(before[1:] - a[0, 1:]),
    }


def compute(matrix: Any, single_task: Sequence[Any] | None = None) -> dict[str, float]:
    """Return the six metrics (keys ``METRIC_KEYS``) for a (T+1) x T score matrix."""
    a = _matrix(matrix)
    return _metrics(a, _single_task(single_task, a.shape[1]))


def curves(matrix: Any, single_task: Sequence[Any] | None = None) -> dict[str, list[float]]:
    """Return each metric after every stage k = 1..T, computed on the first k tasks."""
    a = _matrix(matrix)
    s = _single_task(single_task, a.shape[1])
    stages = [
        _metrics(a[: k + 1, :k], None if s is None else s[:k]) for k in range(1, a.shape[1] + 1)
    ]
    return {f"{key}_k": [stage[key] for stage in stages] for key in METRIC_KEYS}


def general_forgetting(probe_matrix: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Each probe's drop from before training (row 0) to after the last stage; positive means
    general ability was lost."""
    first, last = probe_matrix[0], probe_matrix[-1]
    return [None if a is None or b is None else a - b for a, b in zip(first, last, strict=True)]
