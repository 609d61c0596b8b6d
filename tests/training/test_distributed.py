"""Two CPU processes under torchrun (what `accelerate launch` starts): DDP training, sharded
evaluation gathered on the main process."""

import os
import subprocess
import sys

from clbench.results.io import load_results
from clbench.training.runner import run


def test_two_processes_fill_the_same_row_zero(tiny_tasks, tiny_config, tmp_path):
    tiny_config.max_test_examples = 7  # an odd count: the shards differ in size
    single = load_results(run(tiny_config, include=(str(tiny_tasks),)))

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "clbench.cli",
        "run",
        "--sequence",
        "tiny",
        "--model",
        "tiny-random",
        "--include-path",
        str(tiny_tasks),
        "--steps-per-task",
        "2",
        "--batch-size",
        "2",
        "--max-test-examples",
        "7",
        "--output",
        str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results:") == 1  # only the main process reports
    (run_dir,) = (tmp_path / "ddp").iterdir()
    multi = load_results(run_dir)
    assert multi["environment"]["num_processes"] == 2
    assert multi["matrix"][0] == single["matrix"][0]
    assert len(multi["matrix"]) == 4 and all(
        s["steps"] == 2 for s in multi["timings"]["stages"][1:]
    )
