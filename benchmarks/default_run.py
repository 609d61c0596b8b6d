"""Time the embedded default benchmark (`clbench run` with no arguments) and record its peak memory.

    python benchmarks/default_run.py [--fresh-cache] [--out benchmarks/results/default_run.json]

--fresh-cache points the model cache at an empty folder, so the one-time conversion of the
SmolLM2 GGUF file is included in the time (a user's very first run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-cache", action="store_true")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "default_run.json")
    )
    args = parser.parse_args()

    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as scratch:
        if args.fresh_cache:
            env["CLBENCH_CACHE"] = str(Path(scratch) / "cache")
        command = [
            sys.executable,
            "-m",
            "clbench.cli",
            "run",
            "--output",
            str(Path(scratch) / "runs"),
        ]
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        wall = time.perf_counter() - started
        results_file = next(Path(scratch, "runs").glob("*/results.json"))
        results = json.loads(results_file.read_text())

    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    record = {
        "command": "clbench run",
        "fresh_cache": args.fresh_cache,
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak_kib / 1024, 1),
        "stages": results["timings"]["stages"],
        "matrix": results["matrix"],
        "metrics": results["metrics"],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "packages": results["environment"]["packages"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("wall_seconds", "peak_rss_mb", "metrics")}, indent=2))


if __name__ == "__main__":
    main()
