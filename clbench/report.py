"""Tables from results files: the matrix and the metrics of each run, as Markdown, LaTeX or CSV."""

from __future__ import annotations

from typing import Any

import pandas as pd

from clbench.metrics import METRIC_KEYS, METRIC_NAMES

FORMATS = ("md", "latex", "csv")


def matrix_frame(results: dict[str, Any]) -> pd.DataFrame:
    """The (T+1) x T matrix in percent, rows named after the stage."""
    tasks = [t["name"] for t in results["sequence"]["tasks"]]
    index = ["0: before training"] + [f"{k}: after {name}" for k, name in enumerate(tasks, 1)]
    return pd.DataFrame(results["matrix"], index=index, columns=tasks, dtype=float) * 100


def metrics_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, one column per metric, in percent."""
    rows = {
        r["run_id"]: {METRIC_NAMES[k] + f" ({k})": r["metrics"][k] for k in METRIC_KEYS}
        for r in runs
    }
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float) * 100


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "md":
        # tabulate prints `missingval` for None only, so NaN cells become None first.
        cells = frame.astype(object).where(frame.notna(), None)
        return cells.to_markdown(floatfmt=".1f", missingval="n/a")
    if fmt == "latex":
        return frame.to_latex(float_format="%.1f", na_rep="n/a")
    return frame.to_csv(float_format="%.4f")


def report(runs: list[dict[str, Any]], fmt: str = "md") -> str:
    """Each run's matrix, then one table of every run's metrics (percent)."""
    parts = []
    for results in runs:
        title = (
            f"{results['run_id']}: {results['sequence']['name']}, {results['method']['name']}, "
            f"{results['model']['name']}, seed {results['seed']}"
        )
        if fmt == "md":
            parts.append(f"### {title}\n\n{render(matrix_frame(results), fmt)}")
        elif fmt == "latex":
            parts.append(f"% {title}\n{render(matrix_frame(results), fmt)}")
        else:
            parts.append(f"# {title}\n{render(matrix_frame(results), fmt)}")
    heading = {"md": "### metrics (%)\n\n", "latex": "% metrics (%)\n", "csv": "# metrics (%)\n"}[
        fmt
    ]
    parts.append(heading + render(metrics_frame(runs), fmt))
    return "\n\n".join(parts) + "\n"
