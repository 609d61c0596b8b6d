"""Time one workload on an earlier commit of clbench and on this checkout, one after the other.

    python benchmarks/before_after.py --workload dpo --before REV --data-dir DATA_DIR
    python benchmarks/before_after.py --workload default --before REV

Each side is `python -m clbench.cli run ...` in a fresh process with the same thread count; the
earlier side runs from `git archive REV` unpacked into a temporary folder, first on PYTHONPATH.
The record (results/before_after-<workload>.json, or --out) holds, per side, the wall time,
the training seconds per optimizer step of every stage and the peak resident memory from
results.json, and the after / before ratios.

- `dpo`: one alignment stage (hh_rlhf_harmless, DPO) with the budget of the alignment stage of
  benchmarks/mixed_six.py (batch 8, 256 tokens, lr 1e-4, 400 train and 40 test examples), fewer
  steps.
- `default`: the embedded default benchmark, `clbench run` with no arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DPO_SEQUENCE = {"name": "dpo-bench", "tasks": ["hh_rlhf_harmless"]}


def workload_args(workload: str, folder: Path, args: argparse.Namespace) -> list[str]:
    if workload == "default":
        return []
    (folder / "dpo-bench.yaml").write_text(json.dumps(DPO_SEQUENCE), encoding="utf-8")
    budget = {
        "--sequence": "dpo-bench",
        "--include-path": str(folder),
        "--data-dir": str(Path(args.data_dir).resolve()),  # each side runs in its own folder
        "--steps-per-task": str(args.steps),
        "--batch-size": "8",
        "--lr": "1e-4",
        "--max-length": "256",
        "--max-train-examples": "400",
        "--max-test-examples": "40",
        "--eval-batch-size": "8",
        "--mixed-precision": "no",
    }
    return [item for pair in budget.items() for item in pair]


def run_side(source: Path, extra: list[str], output: Path, threads: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(threads)}
    env["HF_HUB_OFFLINE"] = "1"  # the data comes from the mirror; never wait on the network
    command = [sys.executable, "-m", "clbench.cli", "run", *extra, "--output", str(output)]
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=source, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = json.loads(next(output.glob("*/results.json")).read_text(encoding="utf-8"))
    steps = results["config"]["steps_per_task"]
    stages = [s for s in results["timings"]["stages"] if s["stage"] > 0]
    return {
        "wall_seconds": round(wall, 1),
        "seconds_per_step": [round(s["train_seconds"] / steps, 2) for s in stages],
        "eval_seconds": [round(s["eval_seconds"], 1) for s in results["timings"]["stages"]],
        "peak_rss_mb": results["peak_memory"]["cpu_max_rss_mb"],
        "matrix": results["matrix"],
    }


def unpack(revision: str, folder: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["dpo", "default"], required=True)
    parser.add_argument("--before", required=True, metavar="REV")
    parser.add_argument("--data-dir", help="the local mirror (for --workload dpo)")
    parser.add_argument("--steps", type=int, default=4, help="DPO steps (--workload dpo)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, help="the record (default: results/before_after-WORKLOAD.json)"
    )
    args = parser.parse_args()
    if args.workload == "dpo" and not args.data_dir:
        parser.error("--workload dpo needs --data-dir")

    record: dict[str, Any] = {
        "workload": args.workload,
        "before_revision": subprocess.run(
            ["git", "rev-parse", args.before], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip(),
        "threads": args.threads,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sources = {"before": unpack(args.before, scratch / "before"), "after": ROOT}
        for side, source in sources.items():
            (scratch / side / "tasks-extra").mkdir(parents=True, exist_ok=True)
            extra = workload_args(args.workload, scratch / side / "tasks-extra", args)
            print(f"{side}: running {args.workload} from {source}", flush=True)
            record[side] = run_side(source, extra, scratch / side / "runs", args.threads)
            print(f"{side}: {record[side]['wall_seconds']} s", flush=True)
    before, after = record["before"], record["after"]
    step_before = sum(before["seconds_per_step"]) / len(before["seconds_per_step"])
    step_after = sum(after["seconds_per_step"]) / len(after["seconds_per_step"])
    record["ratios"] = {
        "step_time_after_over_before": round(step_after / step_before, 3),
        "wall_after_over_before": round(after["wall_seconds"] / before["wall_seconds"], 3),
        "peak_rss_saved_mb": round(before["peak_rss_mb"] - after["peak_rss_mb"], 1),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"before_after-{args.workload}.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record["ratios"], indent=2))


if __name__ == "__main__":
    main()
