"""Runs that survive damage (docs/reliability.md): hashed checkpoints with a fallback, the loss
guard, idempotent runs under a lock, metrics recomputed by report and plot, and a full disk."""

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.reporting.tables import report
from clbench.results.io import CHECKPOINT_FILES, read_json, read_results
from clbench.training import runner, train
from clbench.training.checkpoints import restore, sha256_file
from clbench.training.guard import LossError, diverged
from clbench.training.lock import LOCK_NAME, RunLock
from clbench.training.runner import run


def _matrix(run_dir: Path) -> list:
    return read_results(run_dir).matrix


def _reference(tiny_tasks, tiny_config, tmp_path) -> list:
    """The matrix of the same run, uninterrupted, in another output folder."""
    config = type(tiny_config)(**{**tiny_config.to_dict(), "output": str(tmp_path / "ref")})
    return _matrix(run(config, include=(str(tiny_tasks),)))


def test_checkpoints_are_hashed_and_the_previous_one_is_kept(tiny_tasks, tiny_config):
    run_dir = run(tiny_config, include=(str(tiny_tasks),), stop_after=2)
    state = read_json(run_dir / "state.json")
    assert [e["stage"] for e in state["checkpoints"]] == [1, 2]
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for entry in state["checkpoints"]:
        for file, digest in entry["sha256"].items():
            assert sha256_file(run_dir / entry["name"] / file) == digest
    run(tiny_config, include=(str(tiny_tasks),))
    assert not list(run_dir.glob("checkpoint-*"))  # a finished run keeps none


def test_a_damaged_checkpoint_falls_back_to_the_previous_stage(
    tiny_tasks, tiny_config, tmp_path, capsys
):
    include = (str(tiny_tasks),)
    run_dir = run(tiny_config, include=include, stop_after=2)
    model = run_dir / "checkpoint-2" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])  # truncated, as by a full disk or a crash
    capsys.readouterr()
    run(tiny_config, include=include, resume=True)
    err = capsys.readouterr().err
    assert f"the checkpoint of stage 2: {model} is damaged" in err
    assert "falling back to stage 1 and training stage 2 again" in err
    assert _matrix(run_dir) == _reference(tiny_tasks, tiny_config, tmp_path)


def test_a_lost_first_checkpoint_falls_back_to_row_zero(tiny_tasks, tiny_config, capsys):
    include = (str(tiny_tasks),)
    run_dir = run(tiny_config, include=include, stop_after=1)
    for path in (run_dir / "checkpoint-1").iterdir():
        path.unlink()
    (run_dir / "checkpoint-1").rmdir()
    capsys.readouterr()
    run(tiny_config, include=include, stop_after=1)
    assert "checkpoint-1/model.safetensors is missing" in capsys.readouterr().err
    assert len(read_json(run_dir / "state.json")["rows"]) == 2  # stage 1 trained again


def test_no_intact_checkpoint_is_one_clear_error(tiny_tasks, tiny_config, capsys):
    include = (str(tiny_tasks),)
    run_dir = run(tiny_config, include=include, stop_after=2)
    for k in (1, 2):
        (run_dir / f"checkpoint-{k}" / "method.safetensors").write_bytes(b"broken")
    args = ["run", "--resume", str(run_dir), "--include-path", str(tiny_tasks)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--fresh" in err
    assert f"the checkpoint of stage 2: {run_dir}/checkpoint-2/method.safetensors" in err


def test_a_checkpoint_that_cannot_be_read_is_one_clear_error(tiny_tasks, tiny_config):
    """A state.json without hashes (written before them) is trusted, but a broken file still
    gives a ClbenchError naming it, not the safetensors error."""
    include = (str(tiny_tasks),)
    run_dir = run(tiny_config, include=include, stop_after=1)
    state = read_json(run_dir / "state.json")
    del state["checkpoints"]
    (run_dir / "state.json").write_text(json.dumps(state))
    (run_dir / "checkpoint-1" / "method.safetensors").write_bytes(b"broken")
    with pytest.raises(ClbenchError, match=r"checkpoint-1/method\.safetensors: cannot load"):
        run(tiny_config, include=include)


def _poisoned(stage: int, step: int, monkeypatch) -> None:
    """Make the loss of `stage` NaN from optimizer step `step` (from 1) on."""
    real = train._loss

    def loss(model, reference, batch, stage_, method, done, padding):
        value = real(model, reference, batch, stage_, method, done, padding)
        return value * math.nan if (stage_.index, done + 1) >= (stage, step) else value

    monkeypatch.setattr(train, "_loss", loss)


def test_a_nan_loss_stops_the_run_which_stays_resumable(
    tiny_tasks, tiny_config, tmp_path, monkeypatch
):
    include = (str(tiny_tasks),)
    _poisoned(2, 2, monkeypatch)
    with pytest.raises(LossError) as caught:
        run(tiny_config, include=include)
    message = str(caught.value)
    assert "task 't-food', stage 2, step 2: the training loss is nan" in message
    assert "--mixed-precision no" in message and "--lr 0.01" in message
    run_dir = runner.run_dir_of(tiny_config)
    assert len(read_json(run_dir / "state.json")["rows"]) == 2  # stage 1 kept
    assert not (run_dir / LOCK_NAME).exists()  # released on the error
    monkeypatch.undo()
    run(tiny_config, include=include)
    assert _matrix(run_dir) == _reference(tiny_tasks, tiny_config, tmp_path)


def test_a_stage_whose_loss_grows_is_flagged_diverged(tiny_tasks, tiny_config, monkeypatch):
    real = train._loss

    def growing(model, reference, batch, stage, method, done, padding):
        value = real(model, reference, batch, stage, method, done, padding)
        return value * (1 + 5 * done) if stage.index == 3 else value

    monkeypatch.setattr(train, "_loss", growing)
    results = read_results(run(tiny_config, include=(str(tiny_tasks),)))
    assert results.diverged == [3]
    assert "diverged: the training loss of stage 3" in report([results])
    first, final = (results.timings["stages"][3][key] for key in ("first_loss", "final_loss"))
    assert final > 2 * first


def test_divergence_needs_both_losses_and_the_factor():
    stages = [
        {"stage": 0},
        {"stage": 1, "first_loss": 2.0, "final_loss": 3.9},
        {"stage": 2, "first_loss": 2.0, "final_loss": 4.1},
        {"stage": 3, "first_loss": None, "final_loss": 9.0},
    ]
    assert diverged(stages) == [2]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _args(tiny_tasks, tmp_path, *extra: str) -> list[str]:
    return [
        "run",
        *("--sequence", "tiny", "--model", "tiny-random", "--steps-per-task", "1"),
        *("--include-path", str(tiny_tasks), "--output", str(tmp_path / "out"), "--run-id", "r"),
        *extra,
    ]


def test_the_same_command_continues_shows_or_starts_over(tiny_tasks, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "out" / "r"
    assert _cli(_args(tiny_tasks, tmp_path, "--stop-after", "1"), capsys)[0] == 0
    code, out, err = _cli(_args(tiny_tasks, tmp_path), capsys)  # as `make demo` again
    assert code == 0 and f"continuing the unfinished run in {run_dir}" in err
    assert "results:" in out

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run was prepared again")

    monkeypatch.setattr(runner, "_prepare", no_model)
    code, out, err = _cli(_args(tiny_tasks, tmp_path), capsys)
    assert code == 0 and "holds this run, finished; its results follow" in err
    assert "metrics (%)" in out
    monkeypatch.undo()

    (run_dir / "results.json").write_text("{}")  # --fresh drops even a broken file
    code, out, err = _cli(_args(tiny_tasks, tmp_path, "--fresh", "--stop-after", "1"), capsys)
    assert code == 0 and "starting the run in" in err
    assert not (run_dir / "results.json").exists()
    assert len(read_json(run_dir / "state.json")["rows"]) == 2
    code, _, err = _cli(_args(tiny_tasks, tmp_path, "--fresh", "--resume"), capsys)
    assert code == 2 and "cannot be given with --resume" in err


def test_a_second_process_cannot_run_the_same_run(tiny_tasks, tmp_path, capsys):
    run_dir = tmp_path / "out" / "r"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from clbench.training.lock import "
            "RunLock; lock = RunLock(Path(sys.argv[1])).__enter__(); print('held', flush=True);"
            " time.sleep(60)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = _cli(_args(tiny_tasks, tmp_path), capsys)
        assert code == 2
        assert f"{run_dir} is being run by process {holder.pid} on " in err
    finally:
        holder.kill()  # as kill -9: the system drops its lock
        holder.wait()
    assert (run_dir / LOCK_NAME).exists()  # the dead holder's file is left ...
    code, _, _ = _cli(_args(tiny_tasks, tmp_path, "--stop-after", "1"), capsys)
    assert code == 0  # ... and blocks nothing
    assert not (run_dir / LOCK_NAME).exists()


def test_a_lock_is_released_and_taken_again(tmp_path):
    with RunLock(tmp_path / "r") as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(ClbenchError, match="is being run by process"):
            RunLock(tmp_path / "r").__enter__()
    with RunLock(tmp_path / "r"):
        pass


def test_report_and_plot_recompute_edited_metrics(tiny_tasks, tmp_path, capsys):
    assert _cli(_args(tiny_tasks, tmp_path), capsys)[0] == 0
    path = tmp_path / "out" / "r" / "results.json"
    content = read_json(path)
    true_aa = content["metrics"]["aa"]
    content["metrics"]["aa"] = 0.999
    path.write_text(json.dumps(content))
    code, out, err = _cli(["report", str(path)], capsys)
    assert code == 0
    assert f"{path}: the stored metrics differ from its matrix (aa 0.999 -> {true_aa})" in err
    assert f"{100 * true_aa:.1f}" in out and "99.9" not in out
    code, _, err = _cli(
        ["plot", str(path), "--kind", "bars", "--out", str(tmp_path / "b.png")], capsys
    )
    assert code == 0 and f"{path}: the stored metrics differ" in err
    content["metrics"]["aa"] = true_aa
    path.write_text(json.dumps(content))
    assert "differ" not in _cli(["report", str(path)], capsys)[2]


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_state(
    tiny_tasks, tiny_config, tmp_path, monkeypatch
):
    include = (str(tiny_tasks),)
    run_dir = run(tiny_config, include=include, stop_after=1)
    state = (run_dir / "state.json").read_bytes()
    written = run_dir / "checkpoint-1" / "model.safetensors"
    digest = sha256_file(written)
    from clbench.results import io

    real = io.save_model

    def half_written(model, filename):
        real(model, filename)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])
        _full_disk()

    monkeypatch.setattr(io, "save_model", half_written)
    with pytest.raises(ClbenchError) as caught:
        run(tiny_config, include=include)
    assert str(caught.value) == (
        f"cannot write the checkpoint of stage 2 to {run_dir / 'checkpoint-2'}: No space left "
        "on device; the run can be resumed from its last finished stage"
    )
    # What changed is only what stage 2's training wrote: the step checkpoint of its last step
    # (so its training is kept) and its in-stage curve, empty here.
    after = json.loads((run_dir / "state.json").read_text())
    step = after.pop("step_checkpoint")
    assert after.pop("in_stage") == [[], [], []]
    before = json.loads(state)
    before.pop("in_stage")
    assert after == before
    assert (step["stage"], step["step"]) == (2, tiny_config.steps_per_task)
    folders = sorted(p.name for p in run_dir.iterdir() if "checkpoint" in p.name)
    assert folders == ["checkpoint-1", step["name"]]
    assert sha256_file(written) == digest
    monkeypatch.undo()
    run(tiny_config, include=include)
    assert _matrix(run_dir) == _reference(tiny_tasks, tiny_config, tmp_path)


def test_a_full_disk_during_the_results_write(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    run_dir = runner.run_dir_of(tiny_config)
    from clbench.results import io

    real = os.replace

    def replace(src, dst):
        if Path(dst).name == "results.json":
            _full_disk()
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(ClbenchError, match=r"cannot write .*results.json: No space left on device"):
        run(tiny_config, include=include)
    state = read_json(run_dir / "state.json")
    assert len(state["rows"]) == 4 and not (run_dir / "results.json").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".results.json")]  # no debris
    monkeypatch.undo()
    monkeypatch.setattr(runner, "train_task", None)  # every row is in state.json: no training
    run(tiny_config, include=include)
    assert _matrix(run_dir) == state["rows"]


def test_a_fallback_restores_the_running_totals_of_its_stage(tmp_path):
    entries = []
    for stage in (1, 2):
        folder = tmp_path / f"checkpoint-{stage}"
        folder.mkdir()
        for file in CHECKPOINT_FILES:
            (folder / file).write_text(f"stage {stage}")
        sha = {file: sha256_file(folder / file) for file in CHECKPOINT_FILES}
        totals = {"cost": {"optimizer_steps": 3 * stage}}
        entries.append({"name": folder.name, "stage": stage, "sha256": sha, "totals": totals})
        entries[-1]["method_state"] = {"seen": stage}
    state = {"rows": [[0], [1], [2]], "stages": [{}, {}, {}], "cost": {"optimizer_steps": 6}}
    state |= {"checkpoints": entries, "checkpoint": "checkpoint-2", "method_state": {"seen": 2}}
    (tmp_path / "checkpoint-2" / "model.safetensors").write_text("damaged")
    said = []
    restored = restore(tmp_path, state, said.append)
    assert restored["rows"] == [[0], [1]] and len(restored["stages"]) == 2
    assert restored["cost"] == {"optimizer_steps": 3} and restored["method_state"] == {"seen": 1}
    assert restored["checkpoint"] == "checkpoint-1" and len(said) == 1
    (tmp_path / "checkpoint-1" / "model.safetensors").write_text("damaged")
    with pytest.raises(ClbenchError, match="stage 1 is not intact either"):
        restore(tmp_path, state, said.append)
    # The first stage's checkpoint lost: back to the start, row 0 and its totals recomputed.
    state |= {"checkpoints": entries[:1], "checkpoint": "checkpoint-1"}
    restored = restore(tmp_path, state, said.append)
    assert restored["rows"] == [] and "cost" not in restored and restored["checkpoint"] is None
