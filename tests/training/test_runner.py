"""The stage loop on the tiny random model: shape, row 0, determinism, checkpoints."""

from pathlib import Path

import pytest
import torch

import clbench.training.runner
from clbench.results.io import load_results, read_json
from clbench.training.models import load_model
from clbench.training.runner import run


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_matrix_shape_row_zero_and_upper_triangle(tiny_tasks, tiny_config, monkeypatch):
    calls = []  # (task, weight checksum) of every evaluation
    real = clbench.training.runner.evaluate_task

    def spy(model, tokenizer, data, *args):
        calls.append((data.task.name, _checksum(model)))
        return real(model, tokenizer, data, *args)

    monkeypatch.setattr(clbench.training.runner, "evaluate_task", spy)
    results = load_results(run(tiny_config, include=(str(tiny_tasks),)))

    matrix = results["matrix"]
    assert len(matrix) == 4 and all(len(row) == 3 for row in matrix)
    assert all(isinstance(cell, float) and 0 <= cell <= 1 for row in matrix for cell in row)
    # Every cell, the upper triangle included, comes from its own evaluation, row by row.
    tasks = ["t-pos", "t-food", "t-neg"]
    assert [name for name, _ in calls] == tasks * 4
    base = _checksum(load_model("tiny-random").model)
    assert [c for _, c in calls[:3]] == pytest.approx([base] * 3, abs=0)  # untouched weights
    assert all(c != base for _, c in calls[3:])  # later rows see trained weights
    assert results["metrics"]["aa"] == pytest.approx(sum(matrix[3]) / 3)
    assert results["sequence"]["tasks"][0]["fingerprint"].startswith("sha256:")
    assert not (Path(tiny_config.output) / results["run_id"] / "matrix.png").exists()  # CLI's


def test_same_seed_same_run(tiny_tasks, tiny_config, tmp_path):
    first = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    tiny_config.output = str(tmp_path / "again")
    second = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    assert first["matrix"] == second["matrix"]
    losses = [s.get("final_loss") for s in first["timings"]["stages"]]
    assert losses == [s.get("final_loss") for s in second["timings"]["stages"]]
    tiny_config.output, tiny_config.seed = str(tmp_path / "other"), 1
    other = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    assert losses != [s.get("final_loss") for s in other["timings"]["stages"]]


def test_an_interrupted_run_keeps_its_checkpoint_until_it_ends(tiny_tasks, tiny_config):
    """What an interrupted run leaves on disk. That a resumed run ends as an uninterrupted one
    is tested for every method in test_every_method.py."""
    include = (str(tiny_tasks),)
    run_dir = run(tiny_config, include=include, stop_after=1)
    state = read_json(run_dir / "state.json")
    assert len(state["rows"]) == 2 and state["checkpoint"] == "checkpoint-1"
    assert (run_dir / "checkpoint-1" / "model.safetensors").is_file()
    assert not (run_dir / "results.json").exists()

    run(tiny_config, include=include, resume=True)
    assert (run_dir / "results.json").is_file()
    assert not list(run_dir.glob("checkpoint-*"))  # a finished run keeps no checkpoint


def test_lora_trains_only_the_adapter_and_resumes(tiny_tasks, tiny_config, tmp_path, monkeypatch):
    include = (str(tiny_tasks),)
    tiny_config.peft = "lora"
    base = {n: p.detach().clone() for n, p in load_model("tiny-random").model.named_parameters()}
    final = {}
    real = clbench.training.runner.train_task

    def spy(model, stage, *args):
        result = real(model, stage, *args)
        final.update({n: p.detach().clone() for n, p in model.named_parameters()})
        return result

    monkeypatch.setattr(clbench.training.runner, "train_task", spy)
    whole = load_results(run(tiny_config, include=include))
    assert whole["model"]["peft"] == {"type": "lora", "r": 8, "alpha": 16}
    assert 0 < whole["model"]["trainable_parameters"] < whole["model"]["parameters"]
    lora = {n: p for n, p in final.items() if "lora_" in n}
    frozen = {n: p for n, p in final.items() if "lora_" not in n}
    assert lora and len(frozen) == len(base)
    for name, value in frozen.items():  # peft names: base_model.model.<original>[.base_layer]
        original = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, base[original]), name
    assert any(not torch.all(p == 0) for n, p in lora.items() if "lora_B" in n)  # B starts at 0

    tiny_config.output = str(tmp_path / "lora-resumed")
    run(tiny_config, include=include, stop_after=2)
    resumed = load_results(run(tiny_config, include=include, resume=True))
    assert resumed["matrix"] == whole["matrix"]
