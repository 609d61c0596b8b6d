"""A grid's `references`: one reference cell per (task, seed) shared by every method whatever
its PEFT, each cell's FWD a number, nothing computed twice, and the time that sharing row 0
and the references saved, from the files."""

import math
from pathlib import Path

import pytest
import yaml
from conftest import write_task

from clbench.results.io import read_json, write_json
from clbench.sweep import backends, driver
from clbench.sweep.cells import SweepFolder
from clbench.sweep.grid import load_grid
from clbench.training.references import TRAINING_FILE

# seq-ft trains the grid's LoRA adapter, lora-seq (peft none) builds its own adapters.
METHODS = [{"name": "seq-ft", "peft": "lora"}, "lora-seq"]


def write_grid(root: Path, references, methods=METHODS) -> Path:
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for name, question in [("r-pos", "positive"), ("r-food", "food")]:
        write_task(tasks, name, question, train=8, test=4)
    (tasks / "pair.yaml").write_text(yaml.safe_dump({"name": "pair", "tasks": ["r-pos", "r-food"]}))
    base = {"sequence": "pair", "model": "tiny-random", "steps_per_task": 1, "batch_size": 4}
    grid = {
        "include": ["tasks"],
        "output": str(root / "sweep"),
        "base": {**base, "eval_batch_size": 4, "lr": 1e-2},
        "references": references,
        "axes": {"method": methods, "seed": [0, 1]},
        "retries": 0,
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("references", "peft"), [(True, None), ({"peft": "lora", "lora_r": 4}, "lora")]
)
def test_every_method_shares_one_reference_per_task_and_seed(tmp_path, references, peft):
    grid = load_grid(write_grid(tmp_path, references))
    refs = [c for c in grid.cells if c.reference is not None]
    cells = [c for c in grid.cells if c.reference is None]
    assert grid.cells[:4] == refs  # reference cells first
    assert [(c.axes["reference"], c.axes["seed"]) for c in refs] == [
        ("r-pos", 0),
        ("r-food", 0),
        ("r-pos", 1),
        ("r-food", 1),
    ]
    for ref in refs:
        config = ref.config
        assert (config.method, config.peft, config.references) == ("seq-ft", peft, "none")
        assert ref.reference["peft"] == peft and ref.reference["task"] == ref.axes["reference"]
        assert ref.id.startswith(f"reference_{ref.axes['reference']}_seq-ft_tiny-random_")
    assert grid.references == tmp_path / "sweep" / "references"
    for cell in cells:  # lora-seq (peft none) reads the same references as seq-ft with LoRA
        seed = cell.config.seed
        assert cell.needs == tuple(r.id for r in refs if r.config.seed == seed)
        assert cell.config.references == str(grid.references)
    # The references' training is part of each cell's id: other references, other cells.
    other = load_grid(write_grid(tmp_path / "other", {"peft": "lora", "lora_r": 2}))
    assert not {c.id for c in cells} & {c.id for c in other.cells}


def test_a_grid_without_references_has_no_reference_cells(tmp_path):
    grid = load_grid(write_grid(tmp_path, False))
    assert grid.references is None and "reference" not in grid.axes
    assert all(c.reference is None and not c.needs for c in grid.cells)
    assert {c.config.references for c in grid.cells} == {"none"}


def test_a_sweep_computes_each_reference_once_and_every_cell_gets_fwd(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the sweep folder lies below it: recorded relative
    grid = load_grid(write_grid(tmp_path, {"peft": "lora"}), {"workers": 2})
    statuses = driver.run_sweep(grid, out=lambda _: None)
    assert {s.state for s in statuses} == {"done"}, driver.status_table(grid)
    folder = SweepFolder(grid.folder)
    # 2 tasks x 2 seeds: four reference runs, for 2 methods x 2 seeds.
    runs = sorted(p.name for p in (grid.folder / "runs").iterdir())
    assert len([r for r in runs if r.startswith("reference_")]) == 4 and len(runs) == 8
    # The run folders name no path of this machine (a repository may commit them).
    for name in ("config.json", "results.json", "state.json"):
        for path in (grid.folder / "runs").glob(f"*/{name}"):
            assert str(tmp_path) not in path.read_text(), path
    config = read_json(folder.run_dir(grid.cells[0].id) / "config.json")
    assert config["sequence"] == "sweep/references/sequences/r-pos.yaml"
    assert config["output"] == "sweep/runs"
    stored = sorted(p for p in grid.references.glob("*.json") if p.name != TRAINING_FILE)
    assert len(stored) == 4
    assert read_json(grid.references / TRAINING_FILE) == {
        "peft": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
    }
    scores = {}
    for path in stored:
        entry = read_json(path)
        reference = read_json(grid.references / entry["run"] / "results.json")
        assert entry["score"] == reference["matrix"][1][0]
        assert reference["config"]["peft"] == "lora"
        scores[(entry["key"]["task"], entry["key"]["seed"])] = entry["score"]
    for cell in (c for c in grid.cells if c.reference is None):
        results = read_json(folder.run_dir(cell.id) / "results.json")
        seed = cell.config.seed
        assert results["single_task"] == [scores[("r-pos", seed)], scores[("r-food", seed)]]
        fwd = results["metrics"]["fwd"]
        assert isinstance(fwd, float) and math.isfinite(fwd)
        assert math.isclose(fwd, results["matrix"][2][1] - results["single_task"][1])
    # The report and the submissions cover the methods' cells; the references are their inputs.
    methods = [folder.run_dir(c.id) for c in grid.cells if c.reference is None]
    assert driver.done_runs(grid) == methods and len(methods) == 4

    # The time saved, from the files: each reference used by 2 cells saved its seconds once.
    table = driver.status_table(grid)
    assert "12 cells" not in table and "8 cells (4 of them single-task references)" in table
    row = next(line for line in table.splitlines() if line.startswith("references"))
    seconds = sum(
        s["train_seconds"] + s["eval_seconds"]
        for cell in grid.cells[:4]
        for s in read_json(folder.run_dir(cell.id) / "state.json")["stages"]
    )
    assert row.split()[1:3] == ["4", "8"]
    assert [float(v) for v in row.split()[3:5]] == [round(seconds), round(seconds)]
    # Row 0's seconds are those recorded in its shared entries, once each.
    entries = list(folder.row0().glob("*/row0.json"))
    row0 = next(line for line in table.splitlines() if line.startswith("row 0")).split()
    assert float(row0[4]) == round(sum(read_json(path)["seconds"] for path in entries))
    assert "time saved by sharing:" in table

    # A second sweep computes nothing.
    attempts = {c.id: len(folder.record(c.id)["attempts"]) for c in grid.cells}
    lines = []
    driver.run_sweep(load_grid(grid.path), out=lines.append)
    assert "8 cells in" in lines[0] and "0 to run" in lines[0]
    assert {c.id: len(folder.record(c.id)["attempts"]) for c in grid.cells} == attempts

    # An entry written before the seconds were recorded, by a cell no longer in the folder:
    # counted as 0 s, and the table says so.
    for path in entries:
        write_json(path, {"scores": read_json(path)["scores"], "source": "a-removed-cell"})
    table = driver.status_table(grid)
    assert float(next(ln for ln in table.splitlines() if ln.startswith("row 0")).split()[4]) == 0
    assert "counted as 0 s: the cell that evaluated it is no longer" in table


def test_cells_wait_for_references_that_did_not_finish(tmp_path, monkeypatch):
    grid = load_grid(write_grid(tmp_path, True))
    handed = []

    def backend(grid, cells, progress):  # a stand-in that loses every cell
        handed.append([c.id for c in cells])
        for cell in cells:
            progress(cell, "lost")

    monkeypatch.setattr(backends, "load", lambda name: backend)
    lines = []
    statuses = driver.run_sweep(grid, out=lines.append)  # retries 0: one round
    assert handed == [[c.id for c in grid.cells if c.reference is not None]]
    assert "4 cells wait for references that did not finish" in lines
    assert {s.state for s in statuses} == {"pending"}
