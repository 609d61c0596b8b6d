"""Continual-learning metrics, and the table that says everything about each of them.

R has shape (T+1) x T: R[0][j] is the score on task j before any training and R[k][j] the
score on task j right after training on task k. The formulas and the direction of every metric
are in docs/metrics.md; `METRICS` is the one place that names them. Report, leaderboard, plots
and the leaderboard site all read this table, so adding a metric is one entry in it (see
docs/contributing.md). Missing cells (None or NaN) make exactly the metrics that need them NaN.

A task's score may be one where lower is better (`LOWER_IS_BETTER`: bits per byte, a loss).
The metrics read such a column negated, so each keeps its reading on any sequence: AA, BWT, FWD
and FWT higher is better, FGT lower, and a positive BWT still means an earlier task improved
(docs/metrics.md#direction). `task_metrics` names each column's score; without it every column
is higher-is-better, as before.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


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


# Task scores (scorer keys of clbench.evaluation.scorers) where lower is better.
LOWER_IS_BETTER = frozenset({"bits_per_byte", "perplexity", "loss"})


def higher_is_better(score: str | None) -> bool:
    """The direction of a task score; a score not named (None) is higher-is-better."""
    return score not in LOWER_IS_BETTER


# How tables and plots show a task score: a factor and a unit. Fractions show in percent.
SCORE_UNITS = {
    "bits_per_byte": (1.0, "bits/byte"),
    "perplexity": (1.0, "perplexity"),
    "loss": (1.0, "nats/token"),
}


def score_unit(score: str | None) -> tuple[float, str]:
    """The factor and unit that task score `score` is shown in: (100, "%") for a fraction."""
    return SCORE_UNITS.get(score, (100.0, "%"))


def metrics_unit(task_metrics: Sequence[str | None]) -> tuple[float, str]:
    """The factor and unit of the metrics of a run whose tasks score `task_metrics`: a loss's
    unit when every task is scored by it (the metrics are then negated losses), else percent."""
    units = {score_unit(score) for score in task_metrics}
    return units.pop() if len(units) == 1 else (100.0, "%")


def _signs(task_metrics: Sequence[str | None] | None, n_tasks: int) -> np.ndarray:
    if task_metrics is None:
        return np.ones(n_tasks)
    if len(task_metrics) != n_tasks:
        raise ValueError(f"task_metrics has {len(task_metrics)} names, expected T = {n_tasks}")
    return np.array([1.0 if higher_is_better(m) else -1.0 for m in task_metrics])


def _scores(
    matrix: Any,
    single_task: Sequence[Any] | None,
    task_metrics: Sequence[str | None] | None,
    probe_matrix: Any = None,
) -> Scores:
    """The direction-adjusted inputs of the metrics: lower-is-better columns negated."""
    a = _matrix(matrix)
    s = _single_task(single_task, a.shape[1])
    signs = _signs(task_metrics, a.shape[1])
    p = None if probe_matrix is None else np.array(probe_matrix, dtype=float)  # None -> NaN
    return Scores(a * signs, None if s is None else s * signs, p)


def _mean(values: Any) -> float:
    # No terms (T = 1) means the metric is undefined, not zero.
    return float(np.mean(values)) if len(values) else math.nan


@dataclass(frozen=True)
class Scores:
    """What a metric is computed from, as float arrays with NaN for missing cells: the task
    matrix `r` ((T+1) x T), the single-task reference `s` (T, or None) and the probe matrix
    `p` ((T+1) x P, or None for a run without probes)."""

    r: np.ndarray
    s: np.ndarray | None = None
    p: np.ndarray | None = None


@dataclass(frozen=True)
class Metric:
    """One metric: `key` in files and options, `short` for column headers, `name` in words,
    its direction, the section of docs/metrics.md with its formula, and its function.

    `source` is what it needs: "matrix" metrics are what `compute` returns (and `curves` per
    stage); "probes" metrics need the probe matrix of a run made with `--probes`, and tables
    show them only when some run has them.
    """

    key: str
    short: str
    name: str
    higher_is_better: bool
    formula: str
    fn: Callable[[Scores], float]
    source: Literal["matrix", "probes"] = "matrix"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def _aa(x: Scores) -> float:
    return _mean(x.r[-1])


def _aia(x: Scores) -> float:
    return _mean([_mean(x.r[k, :k]) for k in range(1, x.r.shape[1] + 1)])


def _fgt(x: Scores) -> float:
    t = x.r.shape[1]
    return _mean([x.r[c + 1 : t, c].max() - x.r[t, c] for c in range(t - 1)])


def _bwt(x: Scores) -> float:
    learned = x.r[1:].diagonal()  # r[j][j]: task j right after training on it
    return _mean(x.r[-1, :-1] - learned[:-1])


def _fwd(x: Scores) -> float:
    return math.nan if x.s is None else _mean(x.r[1:].diagonal()[1:] - x.s[1:])


def _fwt(x: Scores) -> float:
    before = x.r[:-1].diagonal()  # r[j-1][j]: task j right before training on it
    return _mean(before[1:] - x.r[0, 1:])


def _gf(x: Scores) -> float:
    if x.p is None:
        return math.nan
    drops = x.p[0] - x.p[-1]
    return _mean(drops[~np.isnan(drops)])  # the probes that have both rows


_DOC = "docs/metrics.md"
METRICS: dict[str, Metric] = {
    metric.key: metric
    for metric in (
        Metric("aa", "AA", "average accuracy", True, f"{_DOC}#aa-average-accuracy", _aa),
        Metric(
            "aia",
            "AIA",
            "average incremental accuracy",
            True,
            f"{_DOC}#aia-average-incremental-accuracy",
            _aia,
        ),
        Metric("fgt", "FGT", "forgetting", False, f"{_DOC}#fgt-forgetting", _fgt),
        Metric("bwt", "BWT", "backward transfer", True, f"{_DOC}#bwt-backward-transfer", _bwt),
        Metric("fwd", "FWD", "forward transfer", True, f"{_DOC}#fwd-forward-transfer", _fwd),
        Metric(
            "fwt",
            "FWT",
            "zero-shot forward transfer",
            True,
            f"{_DOC}#fwt-zero-shot-forward-transfer",
            _fwt,
        ),
        Metric(
            "gf",
            "GF",
            "general forgetting",
            False,
            f"{_DOC}#gf-general-forgetting",
            _gf,
            source="probes",
        ),
    )
}


def matrix_keys() -> tuple[str, ...]:
    """The keys of the metrics `compute` returns, in table order."""
    return tuple(key for key, metric in METRICS.items() if metric.source == "matrix")


# Taken from the table when this module is imported; code that must follow a table changed
# at run time (as a test does) reads METRICS itself.
METRIC_KEYS = matrix_keys()
METRIC_NAMES = {key: metric.name for key, metric in METRICS.items()}


def compute(
    matrix: Any,
    single_task: Sequence[Any] | None = None,
    task_metrics: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Every "matrix" metric of the table (keys `METRIC_KEYS`) for a (T+1) x T score matrix
    whose column j holds scores `task_metrics[j]` (default: all higher-is-better)."""
    scores = _scores(matrix, single_task, task_metrics)
    return {key: METRICS[key].fn(scores) for key in matrix_keys()}


def compute_all(
    matrix: Any,
    single_task: Sequence[Any] | None = None,
    probe_matrix: Sequence[Sequence[float | None]] | None = None,
    task_metrics: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Every metric of the table: `compute`'s, then those of the probe matrix (NaN without
    one), as results.json's `metrics` holds them."""
    scores = _scores(matrix, single_task, task_metrics, probe_matrix)
    return {key: metric.fn(scores) for key, metric in METRICS.items()}


def curves(
    matrix: Any,
    single_task: Sequence[Any] | None = None,
    task_metrics: Sequence[str | None] | None = None,
) -> dict[str, list[float]]:
    """Return each "matrix" metric after every stage k = 1..T, computed on the first k tasks."""
    adjusted = _scores(matrix, single_task, task_metrics)
    a, s = adjusted.r, adjusted.s
    stages = [
        Scores(a[: k + 1, :k], None if s is None else s[:k]) for k in range(1, a.shape[1] + 1)
    ]
    return {f"{key}_k": [METRICS[key].fn(stage) for stage in stages] for key in matrix_keys()}


def general_forgetting(probe_matrix: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Each probe's drop from before training (row 0) to after the last stage; positive means
    general ability was lost."""
    first, last = probe_matrix[0], probe_matrix[-1]
    return [None if a is None or b is None else a - b for a, b in zip(first, last, strict=True)]
