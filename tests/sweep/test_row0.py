"""Row 0 shared between the cells of a sweep: which methods may share it, and a 2-cell tiny
sweep that evaluates it once."""

import dataclasses
import json

import pytest
import torch
import yaml

from clbench.config import RunConfig
from clbench.data import registry
from clbench.methods import BUILTIN_METHODS, create_method
from clbench.results.io import read_json
from clbench.sweep import driver
from clbench.sweep.grid import load_grid
from clbench.training.models import load_model
from clbench.training.runner import run

ARGS = {"block-expansion": {"num_new_blocks": 1}}


@pytest.mark.parametrize("name", sorted(BUILTIN_METHODS))
def test_a_method_declares_whether_it_changes_row_0(name, tiny_tasks):
    """The declaration matches what `wrap_model` and the first stage's `before_eval` do to
    the base model's outputs."""
    torch.manual_seed(0)
    loaded = load_model("tiny-random")
    ids = torch.tensor([[5, 17, 42, 8, 99, 3]])
    base = loaded.model.eval()(input_ids=ids).logits[:, -1].clone()
    method = create_method(name, ARGS.get(name, {}))
    model = method.wrap_model(loaded.model).eval()
    data = registry.load_task("t-pos", (str(tiny_tasks),)).load(None, 4, 4)
    method.before_eval(model, data)
    with torch.no_grad():
        wrapped = model(input_ids=ids).logits[:, -1]
    changed = not torch.equal(base, wrapped)
    assert changed == type(method).changes_model_before_training


def test_a_sweep_evaluates_row_0_once_and_the_other_cell_reuses_it(tiny_tasks, tmp_path):
    base = {
        "sequence": "tiny",
        "model": "tiny-random",
        "steps_per_task": 1,
        "batch_size": 4,
        "eval_batch_size": 4,
        "max_test_examples": 4,
    }
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        yaml.safe_dump(
            {
                "include": [str(tiny_tasks)],
                "output": str(tmp_path / "sweep"),
                "base": base,
                "axes": {"method": ["lwf", "lora-seq"]},
                "retries": 0,
            }
        )
    )
    grid = load_grid(grid_file)
    assert {s.state for s in driver.run_sweep(grid, out=lambda _: None)} == {"done"}
    entries = sorted((tmp_path / "sweep" / "row0").glob("*/row0.json"))
    assert len(entries) == 1  # evaluated once
    results = {
        cell.id: read_json(tmp_path / "sweep" / "runs" / cell.id / "results.json")
        for cell in grid.cells
    }
    [evaluated] = [c for c in grid.cells if results[c.id]["row0"] is None]
    [reused] = [c for c in grid.cells if results[c.id]["row0"] is not None]
    record = results[reused.id]["row0"]
    assert record == {"reused": True, "key": entries[0].parent.name, "source": evaluated.id}
    assert results[reused.id]["timings"]["stages"][0]["eval_seconds"] == 0.0
    # What the reusing cell would have evaluated itself: its row 0 alone, in another folder.
    alone = dataclasses.replace(reused.config, output=str(tmp_path / "alone"), run_id="alone")
    state = json.loads(
        (run(alone, include=(str(tiny_tasks),), stop_after=0) / "state.json").read_text()
    )
    assert results[reused.id]["matrix"][0] == state["rows"][0]
    assert results[reused.id]["scores"][0] == state["scores"][0]


def test_a_method_that_changes_the_model_evaluates_its_own_row_0(tiny_tasks, tmp_path):
    cache = tmp_path / "row0"
    config = RunConfig(
        sequence="tiny",
        model="tiny-random",
        steps_per_task=1,
        batch_size=4,
        eval_batch_size=4,
        max_test_examples=4,
        output=str(tmp_path / "runs"),
    )
    include = (str(tiny_tasks),)
    first = run(config, include=include, row0_cache=cache)
    second = dataclasses.replace(
        config, method="prompt-tuning", method_args={"num_virtual_tokens": 2}
    )
    third = dataclasses.replace(config, seed=1)
    assert read_json(first / "results.json")["row0"] is None
    assert (
        read_json(run(second, include=include, row0_cache=cache) / "results.json")["row0"] is None
    )
    assert read_json(run(third, include=include, row0_cache=cache) / "results.json")["row0"][
        "reused"
    ]
    assert len(list(cache.glob("*/row0.json"))) == 1
