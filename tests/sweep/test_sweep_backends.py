"""A 4-cell tiny grid on each backend (the local pool, submitit's local executor, a local Ray
cluster of 2 CPUs), each with one worker killed in the middle of a cell: the sweep still
finishes, and every cell's results are those of an uninterrupted run."""

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_task

from clbench.methods.seq_ft import SeqFT
from clbench.results.io import read_json
from clbench.sweep.cells import SweepFolder
from clbench.sweep.driver import run_sweep, status_table, write_report
from clbench.sweep.grid import load_grid

PAUSE_ENV = "CLBENCH_TEST_PAUSE_DIR"


class PausingSeqFT(SeqFT):
    """seq-ft that, in the first cell to finish training stage 2, stops there until killed
    (once: its next attempt goes on). Without the environment variable it is plain seq-ft."""

    def after_task(self, stage) -> None:
        super().after_task(stage)
        folder = os.environ.get(PAUSE_ENV)
        if not folder or stage.index != 2:
            return
        try:
            fd = os.open(Path(folder) / "paused.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        note = {"pid": os.getpid(), "ppid": os.getppid(), "run_id": stage.config.run_id}
        os.write(fd, json.dumps(note).encode())
        os.close(fd)
        time.sleep(300)  # the test kills this process or its parent long before


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid of 2 seeds x 2 learning rates of `PausingSeqFT` on two small generated tasks."""
    root = tmp_path_factory.mktemp("grid")
    tasks = root / "tasks"
    tasks.mkdir()
    for name, question in [("s-pos", "positive"), ("s-food", "food")]:
        write_task(tasks, name, question, train=12, test=4)
    (tasks / "two.yaml").write_text(yaml.safe_dump({"name": "two", "tasks": ["s-pos", "s-food"]}))
    grid = {
        "include": ["tasks"],
        "base": {
            "sequence": "two",
            "model": "tiny-random",
            "method": f"{Path(__file__).stem}:PausingSeqFT",
            "steps_per_task": 2,
            "batch_size": 4,
            "eval_batch_size": 4,
        },
        "axes": {"seed": [0, 1], "lr": [1e-2, 3e-3]},
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def uninterrupted(grid_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each cell's results run in this process, one thread, as the cells run."""
    from clbench.training.runner import run

    output = str(tmp_path_factory.mktemp("uninterrupted"))
    grid = load_grid(grid_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {}
        for cell in grid.cells:
            run_dir = run(dataclasses.replace(cell.config, output=output), include=grid.include)
            results[cell.id] = read_json(run_dir / "results.json")
    finally:
        torch.set_num_threads(threads)
    return results


@pytest.fixture
def cell_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The cells' processes find `PausingSeqFT` and pause once in `tmp_path`."""
    here = Path(__file__).parent  # this module, and the conftest it imports from tests/
    path = os.pathsep.join(
        filter(None, [str(here), str(here.parent), os.environ.get("PYTHONPATH")])
    )
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv(PAUSE_ENV, str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def kill_when_paused(pause_dir: Path, which: str, sig: int = signal.SIGKILL) -> dict:
    """In a thread: wait until a cell pauses, then send `sig` to the cell's process ("pid")
    or to the worker that started it ("ppid"). Returns the pause note, filled in later."""
    note: dict = {}

    def kill() -> None:
        marker = pause_dir / "paused.json"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if marker.exists() and marker.stat().st_size:
                note.update(json.loads(marker.read_text()))
                os.kill(note[which], sig)
                return
            time.sleep(0.2)

    threading.Thread(target=kill, daemon=True).start()
    return note


def check_sweep(grid_file: Path, overrides: dict, note: dict, uninterrupted: dict) -> None:
    grid = load_grid(grid_file, overrides)
    started = time.monotonic()
    statuses = run_sweep(grid)
    print(f"{overrides['backend']}: 4 cells with one kill in {time.monotonic() - started:.0f} s")
    assert [s.state for s in statuses] == ["done"] * 4, status_table(grid)
    assert note, "no cell paused, so none was killed"
    folder = SweepFolder(grid.folder)
    for cell in grid.cells:
        results = read_json(folder.run_dir(cell.id) / "results.json")
        expected = uninterrupted[cell.id]
        assert results["matrix"] == expected["matrix"]
        assert results["scores"] == expected["scores"]
        losses = [s.get("final_loss") for s in results["timings"]["stages"]]
        assert losses == [s.get("final_loss") for s in expected["timings"]["stages"]]
    killed = note["run_id"]
    attempts = folder.record(killed)["attempts"]
    assert len(attempts) == 2 and attempts[0]["error"], attempts
    # The second attempt resumed after stage 1: it trained and evaluated stage 2 only.
    second = folder.log(killed).read_text().split("==== attempt 2")[1]
    assert "after s-food:" in second and "after s-pos:" not in second


def test_local_pool(grid_file, uninterrupted, cell_env, tmp_path):
    note = kill_when_paused(cell_env, "pid")
    output = str(tmp_path / "sweep")
    check_sweep(
        grid_file, {"backend": "local", "workers": 2, "output": output}, note, uninterrupted
    )
    record = SweepFolder(Path(output)).record(note["run_id"])
    assert record["attempts"][0]["error"] == "killed by SIGKILL"

    report = write_report(load_grid(grid_file, {"output": output}))
    assert [p.name for p in report[:2]] == ["report.md", "report.tex"]
    assert "PausingSeqFT" in report[0].read_text() or "pausing" in report[0].read_text().lower()
    assert {p.suffix for p in report[2:]} == {".pdf"} and len(report) == 6  # cost too


def test_local_pool_a_preempted_cell_is_run_again_not_failed(
    grid_file, uninterrupted, cell_env, tmp_path
):
    # SIGTERM to the cell's process: the worker stops with exit code 75, and the next attempt,
    # which uses no retry (retries 0 here), resumes the cell.
    note = kill_when_paused(cell_env, "pid", signal.SIGTERM)
    overrides = {"backend": "local", "workers": 2, "retries": 0, "output": str(tmp_path / "s")}
    check_sweep(grid_file, overrides, note, uninterrupted)
    first = SweepFolder(tmp_path / "s").record(note["run_id"])["attempts"][0]
    assert first["preempted"] is True and first["error"] == "preempted by SIGTERM"


def test_ctrl_c_stops_a_local_sweep_and_the_same_command_continues_it(
    grid_file, uninterrupted, cell_env, tmp_path
):
    # Ctrl-C reaches the driver and the cells' processes (one process group): no attempt
    # starts after it, the attempts are marked interrupted, not failed, and no retry is spent.
    output = tmp_path / "sweep"
    argv = [sys.executable, "-m", "clbench.cli", "sweep", str(grid_file), "--output", str(output)]
    argv += ["--workers", "1"]  # so that a second cell is still to start when Ctrl-C comes
    log = tmp_path / "driver.txt"
    with open(log, "w") as out:
        # A shell without job control starts background commands with SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler: the driver must get the default.
        driver = subprocess.Popen(
            argv, stdout=out, stderr=out, start_new_session=True, preexec_fn=_default_sigint
        )
        marker = cell_env / "paused.json"
        while not (marker.exists() and marker.stat().st_size) and driver.poll() is None:
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130, log.read_text()
    assert "interrupted; finished stages are saved" in log.read_text()
    folder = SweepFolder(output)
    records = [folder.record(cell.id) for cell in load_grid(grid_file).cells]
    attempts = [a for record in records for a in record["attempts"]]
    assert len(attempts) == 1, records  # the cells after the one stopped never started
    assert attempts[0]["interrupted"] is True and attempts[0]["ended"]
    assert not any(record["failed"] for record in records)

    note = json.loads(marker.read_text())
    overrides = {"backend": "local", "workers": 2, "output": str(output)}
    check_sweep(grid_file, overrides, note, uninterrupted)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_submitit_local_executor(grid_file, uninterrupted, cell_env, tmp_path):
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed")
    # SLURM's preemption signal to the job's process: submitit requeues the job.
    note = kill_when_paused(cell_env, "ppid", signal.SIGUSR2)
    options = {"cluster": "local", "time": 30}
    overrides = {"backend": "slurm", "slurm": options, "output": str(tmp_path / "sweep")}
    check_sweep(grid_file, overrides, note, uninterrupted)
    record = SweepFolder(tmp_path / "sweep").record(note["run_id"])
    assert record["attempts"][0]["error"] == "interrupted: SystemExit"
    assert list((tmp_path / "sweep" / "slurm").glob("*/*_log.out"))  # submitit's logs


def test_submitit_requeues_a_job_whose_cell_was_preempted(
    grid_file, uninterrupted, cell_env, tmp_path
):
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed")
    # SIGTERM to the cell's own process: its exit code 75 makes the job requeue itself.
    note = kill_when_paused(cell_env, "pid", signal.SIGTERM)
    options = {"cluster": "local", "time": 30}
    overrides = {"backend": "slurm", "slurm": options, "output": str(tmp_path / "sweep")}
    check_sweep(grid_file, overrides, note, uninterrupted)
    first = SweepFolder(tmp_path / "sweep").record(note["run_id"])["attempts"][0]
    assert first["preempted"] is True
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / "slurm").glob("*/*_log.*"))
    assert "Requeued job" in logs  # submitit's own requeue, not another attempt in the job


def test_ray_local_cluster(grid_file, uninterrupted, cell_env, tmp_path):
    if importlib.util.find_spec("ray") is None:  # not imported: the sweep sets ray up
        pytest.skip("ray is not installed")
    note = kill_when_paused(cell_env, "ppid")  # the Ray worker: Ray retries the task
    overrides = {"backend": "ray", "ray": {"cpus": 2}, "output": str(tmp_path / "sweep")}
    check_sweep(grid_file, overrides, note, uninterrupted)
    record = SweepFolder(tmp_path / "sweep").record(note["run_id"])
    assert record["attempts"][0]["error"].startswith("interrupted")
