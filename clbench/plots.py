"""Figures made from results files only (never from a live run)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on servers with no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def heatmap(results: dict[str, Any]) -> Figure:
    """The annotated (T+1) x T matrix in percent; row 0 is the model before training."""
    matrix = (
        np.array(
            [[np.nan if v is None else v for v in row] for row in results["matrix"]], dtype=float
        )
        * 100
    )
    tasks = [t["name"] for t in results["sequence"]["tasks"]]
    rows = ["before training"] + [f"after {name}" for name in tasks]
    width = 1.6 + 0.9 * len(tasks)
    fig, ax = plt.subplots(figsize=(width, 0.9 + 0.45 * len(rows)), layout="constrained")
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(
                j,
                i,
                f"{value:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if value > 60 else "white",
            )
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.axhline(0.5, color="white", linewidth=2)  # separates the base model from the stages
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("model")
    method = results["method"]["name"]
    ax.set_title(
        f"{results['sequence']['name']} · {method} · {results['model']['name']}", fontsize=9
    )
    fig.colorbar(image, ax=ax, label="score (%)")
    return fig
