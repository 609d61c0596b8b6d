"""Grid files: expansion to cells, ids, every input error before a cell starts; cell status
from the folder, retries and failure records, the driver and the command line, without
running a model (tests/sweep/test_sweep_backends.py runs real cells)."""

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.results.io import write_json
from clbench.results.schema import SCHEMA_VERSION
from clbench.sweep import backends, driver
from clbench.sweep.cells import (
    SweepFolder,
    cell_status,
    hold_lock,
    run_cell,
    set_aside_corrupt,
    write_spec,
)
from clbench.sweep.grid import cell_id, load_grid, slurm_minutes

BASE = {"sequence": "tiny", "model": "tiny-random", "steps_per_task": 2}


def write_grid(tmp_path: Path, tasks: Path, **spec) -> Path:
    grid = {"include": [str(tasks)], "output": str(tmp_path / "sweep"), "base": dict(BASE)}
    grid.update(spec)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False), encoding="utf-8")
    return path


def test_axes_expand_in_order_with_each_methods_own_args(tiny_tasks, tmp_path):
    methods = ["seq-ft", {"name": "ewc", "method_args": {"ewc_lambda": 10.0}, "peft": "lora"}]
    path = write_grid(tmp_path, tiny_tasks, axes={"seed": [0, 1], "method": methods})
    grid = load_grid(path)
    assert [c.axes for c in grid.cells] == [
        {"seed": 0, "method": "seq-ft"},
        {"seed": 0, "method": "ewc (ewc_lambda=10.0, peft=lora)"},
        {"seed": 1, "method": "seq-ft"},
        {"seed": 1, "method": "ewc (ewc_lambda=10.0, peft=lora)"},
    ]
    ewc = grid.cells[1].config
    assert (ewc.method, ewc.method_args, ewc.peft) == ("ewc", {"ewc_lambda": 10.0}, "lora")
    assert grid.cells[0].config.peft is None and grid.cells[0].config.method_args == {}
    for cell in grid.cells:
        assert cell.config.run_id == cell.id and cell.stages == 3
        assert Path(cell.config.output) == tmp_path / "sweep" / "runs"
    assert grid.cells[0].id.startswith("tiny_seq-ft_tiny-random_seed0_")


def test_a_cell_has_the_same_id_in_every_sweep_and_only_its_config_decides_it(tiny_tasks, tmp_path):
    first = load_grid(write_grid(tmp_path, tiny_tasks, axes={"seed": [0, 1]}))
    (tmp_path / "other").mkdir()
    other = write_grid(tmp_path / "other", tiny_tasks, axes={"seed": [1], "lr": [1e-4, 1e-3]})
    second = load_grid(other)
    # seed 1 with the default lr (1e-4) is one run in both sweeps, whatever their folders.
    assert first.cells[1].id == second.cells[0].id
    assert len({c.id for c in [*first.cells, *second.cells]}) == 3


def test_a_protocol_whose_budget_changes_makes_new_cells(tiny_tasks, tmp_path):
    protocol = {"name": "tiny-budget", "version": 1, "status": "provisional"}
    protocol |= {"sequences": ["tiny"], "seeds": [0], "config": {"steps_per_task": 2}}
    where = tiny_tasks / "protocols" / "tiny-budget.yaml"
    where.parent.mkdir()
    ids = []
    for steps, description in [(2, "first"), (2, "reworded"), (3, "more steps")]:
        budget = {"description": description, "config": {"steps_per_task": steps}}
        where.write_text(yaml.safe_dump(protocol | budget))
        base = {"sequence": "tiny", "model": "tiny-random", "protocol": "tiny-budget"}
        (cell,) = load_grid(write_grid(tmp_path, tiny_tasks, base=base)).cells
        ids.append(cell.id)
    assert ids[0] == ids[1] != ids[2]


def test_base_can_be_a_run_config_file_next_to_the_grid(tiny_tasks, tmp_path):
    (tmp_path / "budget.yaml").write_text(yaml.safe_dump({**BASE, "lr": 0.5}), encoding="utf-8")
    grid = load_grid(write_grid(tmp_path, tiny_tasks, base="budget.yaml", axes={"seed": [3]}))
    [cell] = grid.cells
    assert (cell.config.lr, cell.config.seed, cell.config.steps_per_task) == (0.5, 3, 2)


def test_flags_override_the_grid_file(tiny_tasks, tmp_path):
    path = write_grid(tmp_path, tiny_tasks, axes={"seed": [0]}, resources={"cpus": 2})
    overrides = {"backend": "ray", "workers": 3, "base": {"data_dir": "mirror"}}
    grid = load_grid(path, {**overrides, "resources": {"gpus": 1}, "output": str(tmp_path / "o")})
    assert (grid.backend, grid.workers, grid.folder) == ("ray", 3, tmp_path / "o")
    assert (grid.resources.cpus, grid.resources.gpus) == (2, 1)
    assert grid.cells[0].config.data_dir == "mirror"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"axes": {"seeds": [0, 1]}}, "unknown axis .* 'seeds'.*Did you mean 'seed'"),
        ({"axes": {"seed": []}}, "axis 'seed' must be a non-empty list"),
        ({"axes": {"seed": 0}}, "axis 'seed' must be a non-empty list"),
        ({"axes": {"method": ["no-such-method"]}}, "unknown method 'no-such-method'"),
        (
            {"axes": {"method": [{"name": "ewc", "method_args": {"lambda": 1}}]}},
            "unknown field.*lambda",
        ),
        ({"axes": {"method": [{"method_args": {}}]}}, "axis 'method', entry 1: expected"),
        ({"axes": {"lr": ["fast"]}}, r"cell \(lr=fast\): field 'lr' must be float"),
        ({"axes": {"sequence": ["no-such-sequence"]}}, "unknown sequence 'no-such-sequence'"),
        ({"axes": {"output": ["a"]}}, "'output' cannot be an axis"),
        ({"axes": {"method_args": [{}]}}, "give each method its own method_args"),
        (
            {"axes": {"peft": ["lora"], "method": [{"name": "l2", "peft": None}]}},
            "sets peft, which the grid also sets as an axis",
        ),
        ({"axes": {"seed": [1, 1]}}, "are the same run"),
        ({"references": {"lora_rank": 4}}, "unknown field of 'references'.*lora_rank"),
        ({"references": {"peft": "adapters"}}, "references.*peft"),
        (
            {"references": True, "axes": {"references": ["compute"]}},
            r"cell \(references=compute\) sets references, which the grid's 'references' sets",
        ),
        ({"axes": [{"seed": [0]}, "lr"]}, "axes block 2: expected a mapping"),
        ({"axes": [{"seed": [0]}, {"seed": [0]}]}, "are the same run"),
        ({"base": {**BASE, "protocol": "cpu-small"}}, "contradicts protocol .cpu-small."),
        ({"base": {**BASE, "run_id": "x"}}, "base sets run_id, which the sweep sets"),
        ({"base": {**BASE, "steps": 3}}, "unknown field.*steps"),
        ({"backend": "kubernetes"}, "unknown backend 'kubernetes'"),
        ({"retries": -1}, "'retries' must be >= 0"),
        ({"workers": 0}, "'workers' must be >= 1"),
        ({"grid": 1}, r"unknown field\(s\) grid"),
        ({"resources": {"gpus": 2, "processes": 4}}, "one process per GPU"),
        ({"slurm": {"partitions": "gpu"}}, "slurm: unknown field.*partitions"),
        ({"slurm": {"cluster": "pbs"}}, "unknown slurm.cluster .* 'pbs'"),
        ({"slurm": {"time": "soon"}}, "slurm time 'soon'"),
    ],
)
def test_bad_grids_fail_before_any_cell_with_one_clear_error(tiny_tasks, tmp_path, spec, message):
    with pytest.raises(ClbenchError, match=message):
        load_grid(write_grid(tmp_path, tiny_tasks, **spec))
    assert not (tmp_path / "sweep").exists()


def test_two_configs_in_one_folder_are_refused(tiny_tasks, tmp_path, monkeypatch):
    monkeypatch.setattr("clbench.sweep.grid.cell_id", lambda config, training, include: "same")
    with pytest.raises(ClbenchError, match="write the same folder same with different configs"):
        load_grid(write_grid(tmp_path, tiny_tasks, axes={"seed": [0, 1]}))


def test_a_missing_extra_names_the_pip_command(tiny_tasks, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    grid = load_grid(write_grid(tmp_path, tiny_tasks, backend="slurm"))
    with pytest.raises(ClbenchError, match=r"pip install 'clbench\[slurm\]'"):
        driver.run_sweep(grid)
    assert not (tmp_path / "sweep").exists()


def test_the_slurm_backend_without_slurm_says_so(tiny_tasks, tmp_path):
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed")
    if shutil.which("srun"):
        pytest.skip("this machine has SLURM")
    grid = load_grid(write_grid(tmp_path, tiny_tasks, backend="slurm"))
    with pytest.raises(ClbenchError, match="could not submit the job array"):
        driver.run_sweep(grid)
    assert not (grid.folder / "runs").exists()


def test_slurm_job_parameters_come_from_the_grid_and_the_flags(tiny_tasks, tmp_path):
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed")
    from clbench.sweep.backends.slurm import parameters

    slurm = {"partition": "gpu", "time": "2:00:00", "array_parallelism": 8, "qos": "low"}
    slurm["additional"] = {"exclude": "node1"}
    path = write_grid(tmp_path, tiny_tasks, slurm=slurm, resources={"cpus": 8, "gpus": 1})
    grid = load_grid(path, {"slurm": {"partition": "debug"}, "resources": {"cpus": 4}})
    assert parameters(grid) == {
        "name": "clbench-sweep",
        "timeout_min": 120,
        "cpus_per_task": 4,
        "gpus_per_node": 1,
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_partition": "debug",
        "slurm_qos": "low",
        "slurm_array_parallelism": 8,
        "slurm_additional_parameters": {"exclude": "node1"},
    }


@pytest.mark.parametrize(
    ("time", "minutes"),
    [(90, 90), ("90", 90), ("30:00", 30), ("2:00:00", 120), ("1-00", 1440), ("0:00:30", 1)],
)
def test_slurm_times(time, minutes):
    assert slurm_minutes(time) == minutes


def test_slurm_time_errors():
    with pytest.raises(ClbenchError, match="expected minutes or D-HH:MM:SS"):
        slurm_minutes("two hours")
    with pytest.raises(ClbenchError, match="at least one minute"):
        slurm_minutes(0)


def test_a_cell_on_several_gpus_runs_under_accelerate_launch(tiny_tasks, tmp_path):
    resources = {
        "cpus": 16,
        "gpus": 4,
        "processes": 4,
        "accelerate_args": ["--main_process_port", "0"],
    }
    grid = load_grid(write_grid(tmp_path, tiny_tasks, resources=resources))
    [cell] = grid.cells
    assert backends.command(grid, cell, threads=4) == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "4",
        "--num_machines",
        "1",
        "--multi_gpu",
        "--main_process_port",
        "0",
        "--module",
        "clbench.sweep.worker",
        str(tmp_path / "sweep"),
        cell.id,
        "--threads",
        "4",
    ]
    plain = load_grid(write_grid(tmp_path, tiny_tasks))
    assert backends.command(plain, plain.cells[0], threads=2)[:3] == [
        sys.executable,
        "-m",
        "clbench.sweep.worker",
    ]


# ---- cells on disk ----------------------------------------------------------------------------


def fake_run(folder: SweepFolder, cell, rows: int | None = None, seconds: float = 360.0) -> Path:
    """The files a run leaves: finished (results.json) or, with `rows`, after rows - 1 stages;
    its stages took `seconds` in all."""
    run_dir = folder.run_dir(cell.id)
    run_dir.mkdir(parents=True)
    config = cell.config.to_dict()
    matrix = [[0.5] * cell.stages for _ in range(cell.stages + 1)]
    finished, rows = rows is None, rows or len(matrix)
    stages = [
        {"stage": i, "train_seconds": seconds / rows, "eval_seconds": 0.0} for i in range(rows)
    ]
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "state.json", {"rows": matrix[:rows], "stages": stages})
    if finished:
        tasks = [{"name": f"t{i}", "fingerprint": f"f{i}"} for i in range(cell.stages)]
        results = {
            "schema_version": SCHEMA_VERSION,
            "run_id": cell.id,
            "sequence": {"name": "tiny", "tasks": tasks},
            "method": {"name": "seq-ft", "hyperparameters": {}},
            "model": {"name": "tiny-random"},
            "seed": cell.config.seed,
            "budget": {},
            "config": config,
        }
        write_json(run_dir / "results.json", {**results, "matrix": matrix})
    return run_dir


@pytest.fixture
def grid(tiny_tasks, tmp_path):
    return load_grid(write_grid(tmp_path, tiny_tasks, axes={"seed": [0, 1, 2, 3]}, retries=1))


def test_status_comes_from_the_folder(grid):
    folder = SweepFolder(grid.folder)
    done, interrupted, failed, running = grid.cells
    fake_run(folder, done)
    fake_run(folder, interrupted, rows=2)
    folder.attempts(done.id).parent.mkdir(parents=True)
    write_json(
        folder.attempts(interrupted.id),
        {"attempts": [{"started": "2026-01-01T00:00:00+00:00"}], "failed": None},
    )
    write_json(
        folder.attempts(failed.id), {"attempts": [], "failed": {"error": "boom", "log": "x"}}
    )
    with hold_lock(folder.lock(running.id)):
        states = [cell_status(folder, c.id, c.stages) for c in grid.cells]
    assert [(s.state, s.detail) for s in states] == [
        ("done", "stage 3/3"),
        ("pending", "interrupted after stage 1/3"),
        ("failed", "boom"),
        ("running", "stage 0/3"),
    ]
    table = driver.status_table(grid)
    assert "1 done, 0 running, 1 failed, 2 pending" in table  # the lock is released now
    assert f"failed seed=2: boom (log: {folder.log(failed.id)})" in table


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda r: "{not json", "not valid JSON"),
        (lambda r: r.replace('"seed": 0,', '"seed": "0",', 1), "seed"),
        (lambda r: r.replace('"seed": 0', '"seed": 7'), "not the run folder's config.json"),
        (lambda r: r.replace("0.5", "0.25", 1), "differs from the rows of state.json"),
    ],
)
def test_a_corrupt_results_file_is_reported_and_its_cell_rerun(grid, damage, problem):
    folder = SweepFolder(grid.folder)
    cell = grid.cells[0]
    results = fake_run(folder, cell) / "results.json"
    results.write_text(damage(results.read_text()))
    status = cell_status(folder, cell.id, cell.stages)
    assert status.state == "pending" and problem in status.detail
    assert "moved to" in set_aside_corrupt(folder, cell.id)
    assert not folder.run_dir(cell.id).exists()
    assert len(list((grid.folder / "corrupt").iterdir())) == 1


def failing(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; print('trying'); sys.exit({code})"]


def test_a_failing_cell_is_retried_then_marked_failed_with_its_error_and_log(grid):
    folder = SweepFolder(grid.folder)
    cell = grid.cells[0]
    write_spec(folder, cell.id, cell.config.to_dict(), grid.include)
    assert run_cell(grid.folder, cell.id, 1, 2, "local", failing(3)) == "failed"
    record = folder.record(cell.id)
    assert [a["error"] for a in record["attempts"]] == ["exited with code 3"] * 3
    assert record["failed"]["error"] == "exited with code 3"
    assert folder.log(cell.id).read_text().splitlines().count("trying") == 3
    # A ClbenchError is bad input: the worker says so, and it is not retried.
    note = {"error": "ClbenchError: no data", "retry": False}
    script = f"import json; open({str(folder.error(cell.id))!r}, 'w').write({json.dumps(note)!r})"
    command = [sys.executable, "-c", script + "; raise SystemExit(1)"]
    assert run_cell(grid.folder, cell.id, 1, 2, "local", command) == "failed"
    assert len(folder.record(cell.id)["attempts"]) == 4
    assert folder.record(cell.id)["failed"]["error"] == "ClbenchError: no data"


def test_a_preempted_attempt_uses_no_retry(grid, tmp_path):
    folder = SweepFolder(grid.folder)
    cell = grid.cells[0]
    write_spec(folder, cell.id, cell.config.to_dict(), grid.include)
    marker = tmp_path / "preempted-once"
    # Exit code 75 (preempted) the first time, then a failure.
    script = (
        f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); "
        "sys.exit(3 if m.exists() else (m.touch() or 75))"
    )
    command = [sys.executable, "-c", script]
    assert run_cell(grid.folder, cell.id, 1, 0, "local", command) == "failed"
    attempts = folder.record(cell.id)["attempts"]
    assert [(a["error"], a.get("preempted")) for a in attempts] == [
        ("preempted", True),
        ("exited with code 3", None),
    ]
    # A job that requeues itself (slurm) gets the cell back as "preempted".
    marker.unlink()
    assert run_cell(grid.folder, cell.id, 1, 0, "slurm", command, requeue=True) == "preempted"


def test_the_sweep_goes_on_past_a_failed_cell(grid, monkeypatch, capsys):
    """The driver with a stand-in backend: cell 2 fails, the others finish."""

    def backend(grid, cells, progress):
        folder = SweepFolder(grid.folder)
        for cell in cells:
            if cell.axes["seed"] == 2:
                outcome = run_cell(grid.folder, cell.id, 1, grid.retries, "local", failing(1))
            else:
                fake_run(folder, cell)
                outcome = "done"
            progress(cell, outcome)

    monkeypatch.setattr(backends, "load", lambda name: backend)
    assert main(["sweep", str(grid.path)]) == 1
    out = capsys.readouterr().out
    assert "[3/4] seed=2: failed: exited with code 1" in out and "3 done, 1 failed" in out
    # Done cells are skipped next time; the failed one gets its retries again.
    assert main(["sweep", str(grid.path)]) == 1
    assert "3 done or running elsewhere, 1 to run" in capsys.readouterr().out
    assert len(SweepFolder(grid.folder).record(grid.cells[2].id)["attempts"]) == 4


def test_a_cell_whose_job_vanished_is_run_again(grid, monkeypatch):
    """A backend that loses cell 1 (a job killed outright): the next round runs it."""
    rounds = []

    def backend(grid, cells, progress):
        rounds.append([cell.axes["seed"] for cell in cells])
        for cell in cells:
            if len(rounds) > 1 or cell.axes["seed"] != 1:
                fake_run(SweepFolder(grid.folder), cell)
                progress(cell, "done")

    monkeypatch.setattr(backends, "load", lambda name: backend)
    lines = []
    statuses = driver.run_sweep(grid, out=lines.append)
    assert rounds == [[0, 1, 2, 3], [1]] and {s.state for s in statuses} == {"done"}
    assert "1 cells ended without a result; running them again" in lines


def test_a_field_added_later_at_its_default_keeps_cell_ids_and_folders(grid):
    """A config.json written before a field existed holds the same run; operational fields
    (save_every) never make another cell."""
    cell = grid.cells[1]
    folder = SweepFolder(grid.folder)
    run_dir = fake_run(folder, cell)
    older = {
        k: v for k, v in cell.config.to_dict().items() if k not in ("eval_every", "save_every")
    }
    write_json(run_dir / "config.json", older)
    assert cell.config.differs_from(older) == []
    assert cell_id(dataclasses.replace(cell.config, save_every=5)) == cell.id
    # Where the data and the run live is not what the run computes: one cell on every machine.
    elsewhere = dataclasses.replace(cell.config, data_dir="/mirror", output="/scratch/runs")
    assert cell_id(elsewhere) == cell.id and elsewhere.differs_from(older) == []
    assert cell_id(dataclasses.replace(cell.config, eval_every=5)) != cell.id
    driver._check_folders(grid, folder)  # no "other configs" refusal


def test_a_folder_holding_another_run_is_refused(grid):
    folder = SweepFolder(grid.folder)
    run_dir = fake_run(folder, grid.cells[1])
    write_json(run_dir / "config.json", {**grid.cells[1].config.to_dict(), "lr": 0.5})
    with pytest.raises(ClbenchError, match=r"(?s)other configs.*differs in: lr"):
        driver.run_sweep(grid)
    assert not folder.spec(grid.cells[0].id).exists()  # nothing was started


def test_status_judges_the_time_left_by_the_finished_cells(tiny_tasks, tmp_path):
    axes = {"method": ["seq-ft", "ewc"], "seed": [0, 1]}
    grid = load_grid(write_grid(tmp_path, tiny_tasks, axes=axes))
    folder = SweepFolder(grid.folder)
    seq_ft = [c for c in grid.cells if c.config.method == "seq-ft"]
    ewc = [c for c in grid.cells if c.config.method == "ewc"]
    assert "cells not done" not in driver.status_table(grid)  # nothing finished to judge by
    fake_run(folder, seq_ft[0], seconds=360.0)
    fake_run(folder, seq_ft[1], seconds=1080.0)
    # ewc has no finished cell: each of its two counts as the mean of all finished (720 s).
    assert (
        "cells not done: 2, about 0.4 h of run time, to divide by the cells run at a time "
        "(judged by the finished cells of the same method; of all methods for ewc, none of "
        "whose cells is finished)"
    ) in driver.status_table(grid)
    fake_run(folder, ewc[0], seconds=3600.0)
    assert "cells not done: 1, about 1.0 h of run time" in driver.status_table(grid)
    assert "of all methods" not in driver.status_table(grid)
    fake_run(folder, ewc[1])
    assert "cells not done" not in driver.status_table(grid)


def test_status_and_submit_on_the_command_line(grid, monkeypatch, capsys):
    folder = SweepFolder(grid.folder)
    for cell in grid.cells[:3]:
        fake_run(folder, cell)
    assert main(["sweep", str(grid.path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 3 done, 0 running, 0 failed, 1 pending" in out
    assert out.splitlines()[0].split() == [
        "seed",
        "status",
        "detail",
        "attempts",
        "started",
        "time",
        "cell",
    ]
    calls = []
    monkeypatch.setattr(
        "clbench.leaderboard.submission.submit",
        lambda runs, root, **kw: calls.append((runs, root, kw)) or [],
    )
    driver.submit_runs(grid, "mine", Path("lb"), replace=True)
    [(runs, root, options)] = calls
    assert runs == [str(folder.run_dir(c.id)) for c in grid.cells[:3]] and root == Path("lb")
    assert options == {"name": "mine", "data_dir": None, "replace": True}


def test_a_second_sweep_on_the_same_folder_is_refused(grid):
    grid.folder.mkdir(parents=True)
    with hold_lock(grid.folder / "sweep.lock"), pytest.raises(ClbenchError, match="another"):
        driver.run_sweep(grid)


def test_the_baselines_grid_runs_every_method_under_the_protocol_with_references():
    root = next(p for p in Path(__file__).parents if (p / "benchmarks").is_dir())
    grid = load_grid(root / "benchmarks" / "baselines_grid.yaml")
    references = [c for c in grid.cells if c.reference is not None]
    cells = [c for c in grid.cells if c.reference is None]
    # 4 tasks x 3 seeds, shared by both orders and every method; 14 x 3 + 6 x 3 cells.
    assert grid.cells[: len(references)] == references and len(references) == 12
    assert {(r.reference["peft"], r.reference["lora_r"]) for r in references} == {("lora", 8)}
    assert len(cells) == 60
    first = [(c.config.method, c.config.seed) for c in cells[:9]]
    assert first == [(m, s) for m in ("seq-ft", "replay", "joint") for s in (0, 1, 2)]
    own = {"lora-seq", "o-lora", "prompt-tuning", "block-expansion"}
    for cell in cells:
        config = cell.config
        assert config.peft == (None if config.method in own else "lora"), config.method
        assert config.protocol == "cpu-small"
        assert Path(config.references).resolve() == grid.references
        assert len(cell.needs) == 4
    assert len({c.config.method for c in cells}) == 14
    order2 = {c.config.method for c in cells if c.config.sequence == "standard-cl-order2"}
    assert order2 == {"seq-ft", "replay", "joint", "o-lora", "ewc", "ssr"}


def test_the_cpt_study_grid_runs_the_papers_strategies():
    root = next(p for p in Path(__file__).parents if (p / "benchmarks").is_dir())
    grid = load_grid(root / "benchmarks" / "cpt_study_grid.yaml")
    assert grid.folder == (root / "benchmarks" / "results" / "cpt-study").resolve()
    first = [c for c in grid.cells if c.config.seed == 0]
    methods = [(c.config.method, c.config.method_args) for c in first]
    assert [m for m, _ in methods] == ["seq-ft", *["cpt-rewarm"] * 5, "joint"]
    replay = [args["replay_fraction"] for m, args in methods if m == "cpt-rewarm"]
    assert replay == [0.0, 0.0, 0.005, 0.01, 0.05]
    assert [args.get("rewarm", True) for m, args in methods if m == "cpt-rewarm"] == [
        True,
        False,
        True,
        True,
        True,
    ]
    assert methods[-1][1]["from_scratch"] is True
    # The second seed: the two strategies without replay, with the first seed's settings.
    second = [(c.config.method, c.config.method_args) for c in grid.cells if c.config.seed == 1]
    assert second == methods[:2] and second[0][0] == "seq-ft"
    assert {c.config.sequence for c in grid.cells} == {"cpt-en-de"} and grid.references is None
    assert all(c.stages == 2 and c.config.eval_every == 20 for c in grid.cells)
