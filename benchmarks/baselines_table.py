"""The tables of docs/baselines.md, from the results files that benchmarks/baselines_run.py keeps.

python benchmarks/baselines_table.py > tables.md
"""

from __future__ import annotations

import pandas as pd
from baselines_run import METHODS, RESULTS

from clbench.metrics import METRIC_KEYS
from clbench.report import matrix_frame, render
from clbench.results import load_results


def main() -> None:
    runs = [load_results(path) for path in sorted(RESULTS.glob("*.json"))]
    rows = []
    for results in runs:
        stages = results["timings"]["stages"]
        rows.append(
            {
                "method": results["method"]["name"],
                "seed": results["seed"],
                **{key: results["metrics"][key] for key in METRIC_KEYS if key != "fwd"},
                "minutes": sum(s["train_seconds"] + s["eval_seconds"] for s in stages) / 60,
            }
        )
    frame = pd.DataFrame(rows)
    metrics = [key for key in METRIC_KEYS if key != "fwd"]
    frame[metrics] *= 100
    grouped = frame.groupby("method", sort=False)
    summary = pd.DataFrame(
        {
            **{
                key.upper(): grouped[key].mean().map("{:.1f}".format)
                + grouped[key].std().map(lambda s: "" if pd.isna(s) else f" ± {s:.1f}")
                for key in metrics
            },
            "n": grouped.size(),
            "minutes per run": grouped["minutes"].mean().map("{:.1f}".format),
        }
    )
    order = [m for m in METHODS if m in summary.index]
    print("### Metrics (%, mean ± std over seeds)\n")
    print(summary.loc[order].to_markdown())
    for method in order:
        for results in runs:
            if results["method"]["name"] == method and results["seed"] == 0:
                print(f"\n### {method}, seed 0 (%)\n")
                print(render(matrix_frame(results), "md"))


if __name__ == "__main__":
    main()
