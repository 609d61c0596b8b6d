"""One source of truth for metrics: `clbench report` and `clbench plot` compute every run's
metrics again from its matrices, and warn where a file stored other values."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

from clbench import metrics
from clbench.results.schema import Results


def recompute_metrics(
    runs: Sequence[Results], warn: Callable[[str], None] | None = None
) -> list[Results]:
    """`runs`, each with `metrics` computed from its matrix (and single-task scores and probe
    matrix); a run whose stored metrics differ is named to `warn` (stderr by default)."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    for run in runs:
        found = metrics.compute_all(
            run.matrix,
            run.single_task,
            None if run.probes is None else run.probes.matrix,
            [task.metric for task in run.sequence.tasks],
        )
        found = {key: None if math.isnan(value) else value for key, value in found.items()}
        differ = [key for key, value in found.items() if not _same(run.metrics.get(key), value)]
        if differ:
            shown = ", ".join(f"{k} {run.metrics.get(k)} -> {found[k]}" for k in differ)
            warn(
                f"clbench: warning: {run.source}: the stored metrics differ from its matrix "
                f"({shown}); the values computed from the matrix are used"
            )
        run.metrics = {**run.metrics, **found}
    return list(runs)


def _same(stored: float | None, computed: float | None) -> bool:
    if stored is None or computed is None:
        return stored is computed
    return math.isclose(stored, computed, rel_tol=1e-9, abs_tol=1e-12)
