"""The complete method of docs/writing-a-method.md: the page shows exactly the file, and the
file works as a third-party method loaded by `module:Class`."""

import re
from pathlib import Path

import pytest
import torch
from conftest import REPO

from clbench.cli import main
from clbench.data.registry import load_task
from clbench.methods import Stage, Step, create_method
from clbench.results.io import load_results

DOCS = REPO / "docs"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(DOCS / "examples"))
    return "anchored_replay:AnchoredReplay"


def test_the_page_lists_the_file():
    page = (DOCS / "writing-a-method.md").read_text()
    listing = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    assert listing == (DOCS / "examples" / "anchored_replay.py").read_text()
    assert len(listing.splitlines()) <= 65


def test_penalty_is_zero_at_the_anchor_and_grows(example, tiny_tasks):
    method = create_method(example, {"anchor": 0.5})
    model = torch.nn.Linear(3, 1)
    data = load_task(str(tiny_tasks / "t-food.yaml")).load()
    stage = Stage(index=2, data=data, model=model, seed=0)
    method.before_task(stage)
    step = Step(0, [], None, None)
    zero = torch.tensor(0.0)
    assert method.training_loss(zero, step, stage) == 0
    with torch.no_grad():
        model.weight += 0.1
    assert method.training_loss(zero, step, stage).item() == pytest.approx(0.5 * 3 * 0.01)


def test_buffer_stays_balanced(example, tiny_tasks):
    method = create_method(example, {"buffer_size": 6})
    for index, name in enumerate(["t-pos", "t-food", "t-neg"], start=1):
        data = load_task(str(tiny_tasks / f"{name}.yaml")).load()
        stage = Stage(index=index, data=data, model=torch.nn.Linear(1, 1), seed=0)
        method.before_task(stage)
        method.after_task(stage)
    assert sorted(e.task for e in method.buffer) == ["t-food"] * 2 + ["t-neg"] * 2 + ["t-pos"] * 2


def test_runs_from_the_command_line_and_resumes(example, tiny_tasks, tmp_path):
    def cli(output, *extra):
        args = ["run", "--sequence", "tiny", "--model", "tiny-random", "--steps-per-task", "3"]
        args += ["--batch-size", "4", "--method", example, "--method-arg", "buffer_size=8"]
        args += ["--output", str(output), "--include-path", str(tiny_tasks), *extra]
        assert main(args) == 0
        return next(Path(output).iterdir())

    whole = load_results(cli(tmp_path / "whole"))
    assert whole["method"]["name"] == "anchored-replay"
    assert whole["method"]["hyperparameters"]["buffer_size"] == 8
    assert len(whole["matrix"]) == 4

    cli(tmp_path / "parts", "--stop-after", "2")
    resumed = load_results(cli(tmp_path / "parts", "--resume"))
    assert resumed["matrix"] == whole["matrix"]
