"""Run `mixed-six` (one task of each family) on smollm2-135m with a small budget, and record per
family the zero-shot row, the final row, and the time spent training and evaluating.

    python benchmarks/mixed_six.py --data-dir DATA_DIR [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from clbench.config import RunConfig
from clbench.results.io import load_results
from clbench.training.runner import run

BUDGET = {
    "steps_per_task": 20,
    "batch_size": 8,
    "lr": 1e-4,
    "max_train_examples": 400,
    "max_test_examples": 40,
    "max_length": 256,
    "eval_batch_size": 16,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mixed_six.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        config = RunConfig(
            sequence="mixed-six",
            model="smollm2-135m",
            data_dir=args.data_dir,
            output=scratch,
            **BUDGET,
        )
        results = load_results(run(config))
    stages = results["timings"]["stages"]
    rows = []
    for j, task in enumerate(results["sequence"]["tasks"]):
        rows.append(
            {
                "family": task["family"],
                "task": task["name"],
                "metric": task["metric"],
                "zero_shot": results["matrix"][0][j],
                "after_own_stage": results["matrix"][j + 1][j],
                "final": results["matrix"][-1][j],
                "train_seconds": stages[j + 1]["train_seconds"],
            }
        )
    record = {
        "budget": BUDGET,
        "per_family": rows,
        "metrics": results["metrics"],
        "eval_seconds_per_row": [s["eval_seconds"] for s in stages],
        "scores": results["scores"],
        "environment": results["environment"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for row in rows:
        print(json.dumps(row))
    print(json.dumps(results["metrics"]))


if __name__ == "__main__":
    main()
