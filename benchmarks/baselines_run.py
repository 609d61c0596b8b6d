"""Run every shipped baseline on `standard-cl-order1` with one shared budget and several seeds,
keep each run's results.json under runs/baselines/, and submit them to leaderboard/.

    python benchmarks/baselines_run.py --data-dir DATA_DIR [--seeds 0 1 2] [--methods seq-ft ...]

Each run is one `clbench run --config benchmarks/baselines.yaml --data-dir DATA_DIR --method M
--seed S` (plus
`--peft lora` for methods that do not build their own parameter-efficient structure); the
commands are printed as they start. Finished runs are skipped, so the sweep can be stopped and
started again. At the end, `clbench submit --replace` writes one leaderboard submission per
method from all its finished runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "baselines.yaml"
RESULTS = ROOT / "runs" / "baselines" / "standard-cl-order1"
# Methods that bring their own adapters, prompts or blocks; the others train a LoRA adapter.
OWN_STRUCTURE = {"lora-seq", "o-lora", "prompt-tuning", "block-expansion"}
METHODS = [  # cheapest first, so an interrupted sweep still covers the most methods
    "seq-ft",
    "joint",
    "replay",
    "lora-seq",
    "ewc",
    "l2",
    "lwf",
    "agem",
    "o-lora",
    "cpt-rewarm",
    "block-expansion",
    "prompt-tuning",
    "ssr",
    "lamol",
]


def command(method: str, seed: int, data_dir: str, output: Path) -> list[str]:
    args = ["clbench", "run", "--config", str(CONFIG.relative_to(ROOT)), "--data-dir", data_dir]
    args += ["--method", method, "--seed", str(seed)]
    if method not in OWN_STRUCTURE:
        args += ["--peft", "lora"]
    return [*args, "--output", str(output)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the local mirror (SPEC section 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for method in args.methods:
            target = RESULTS / f"{method}_seed{seed}.json"
            if target.exists():
                continue
            with tempfile.TemporaryDirectory() as scratch:
                cmd = command(method, seed, args.data_dir, Path(scratch))
                print("$", " ".join([*cmd[:-1], "RUNS"]), flush=True)
                started = time.perf_counter()
                cmd[0:1] = [sys.executable, "-m", "clbench.cli"]
                subprocess.run(cmd, check=True, cwd=ROOT)
                found = next(Path(scratch).glob("*/results.json"))
                results = json.loads(found.read_text())
                shutil.copyfile(found, target)
            metrics = results["metrics"]
            print(
                f"{method} seed {seed}: AA {metrics['aa']:.3f} BWT {metrics['bwt']:.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    for method in args.methods:
        runs = sorted(RESULTS.glob(f"{method}_seed*.json"))
        if runs:
            submit = ["-m", "clbench.cli", "submit", *map(str, runs), "--replace"]
            subprocess.run(
                [sys.executable, *submit, "--data-dir", args.data_dir], check=True, cwd=ROOT
            )


if __name__ == "__main__":
    main()
