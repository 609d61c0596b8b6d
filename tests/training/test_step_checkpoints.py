"""Step checkpoints inside a stage (`--save-every N`) and preemption that saves at the next
step boundary (docs/reliability.md#step-checkpoints): a stage stopped in its middle and
resumed trains on exactly as an uninterrupted one, step by step."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clbench.methods import method_names
from clbench.results.io import read_json, read_results
from clbench.training import runner, train
from clbench.training.cost import COUNTERS
from clbench.training.runner import run
from clbench.training.signals import (
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    Preempted,
    deferred,
    preemptible,
    requested,
)


class _Crash(Exception):
    """Stands for a process that dies in the middle of an optimizer step."""


def _config(tiny_config, tmp_path: Path, name: str, **fields):
    """Seven steps a stage over four batches a pass: checkpoints fall inside a pass and at its
    end. Replay draws from its buffer with its own random generator at every step."""
    values = {
        **tiny_config.to_dict(),
        "method": "replay",
        "method_args": {"buffer_size": 8},
        "steps_per_task": 7,
        "output": str(tmp_path / name),
        **fields,
    }
    return type(tiny_config)(**values)


def _record_losses(monkeypatch, crash_at: tuple[int, int] | None = None) -> list:
    """Record (stage, step, loss) of every optimizer step; with `crash_at` (stage, step),
    fail during that step, after its loss and before any checkpoint of it."""
    losses = []
    real = train.check_loss

    def check(value, stage, step, accelerator):
        if (stage.index, step) == crash_at:
            raise _Crash
        losses.append((stage.index, step, value))
        return real(value, stage, step, accelerator)

    monkeypatch.setattr(train, "check_loss", check)
    return losses


def _uninterrupted(tiny_tasks, tiny_config, tmp_path, monkeypatch) -> tuple[list, dict]:
    """The matrix and the loss of every (stage, step) of the run never stopped."""
    losses = _record_losses(monkeypatch)
    run_dir = run(_config(tiny_config, tmp_path, "reference"), include=(str(tiny_tasks),))
    monkeypatch.undo()
    return read_results(run_dir).matrix, {(s, n): v for s, n, v in losses}


def _step_folders(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("*checkpoint-*-step-*"))


@pytest.mark.parametrize(
    ("crash_step", "saved_step"),
    [(4, 2), (7, 6)],  # saved inside the first pass; inside the second, after a whole pass
)
def test_a_stage_stopped_mid_way_resumes_from_its_step_checkpoint_to_the_same_run(
    tiny_tasks, tiny_config, tmp_path, monkeypatch, crash_step, saved_step
):
    include = (str(tiny_tasks),)
    matrix, reference = _uninterrupted(tiny_tasks, tiny_config, tmp_path, monkeypatch)
    config = _config(tiny_config, tmp_path, "stopped", save_every=2)
    before = _record_losses(monkeypatch, crash_at=(2, crash_step))
    with pytest.raises(_Crash):
        run(config, include=include)
    run_dir = runner.run_dir_of(config)
    entry = read_json(run_dir / "state.json")["step_checkpoint"]
    assert (entry["stage"], entry["step"]) == (2, saved_step)
    assert _step_folders(run_dir) == [f"checkpoint-2-step-{saved_step}"]  # the latest only

    monkeypatch.undo()
    after = _record_losses(monkeypatch)
    run(config, include=include)
    # Stage 2 continued after the saved step; it did not train again from its start.
    assert after[0][:2] == (2, saved_step + 1)
    losses = {(s, n): v for s, n, v in before} | {(s, n): v for s, n, v in after}
    assert losses == reference  # exactly: weights, optimizer, schedule, data and generators
    assert read_results(run_dir).matrix == matrix


def _fast_args() -> dict:
    """The hyper-parameters that keep each method's tiny run short (tests/methods)."""
    path = Path(__file__).parents[1] / "methods" / "test_every_method.py"
    spec = importlib.util.spec_from_file_location("test_every_method", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FAST_ARGS


@pytest.mark.parametrize("name", sorted(method_names()))
def test_every_method_resumes_mid_stage_as_if_never_stopped(
    name, tiny_tasks, tiny_config, tmp_path, monkeypatch
):
    """What each method changes during a stage (its random generators, by default) is in
    the step checkpoint: stopped at step 4 of stage 2 and resumed from step 2, every later
    loss and the matrix are the uninterrupted run's."""
    include = (str(tiny_tasks),)
    fields = {"method": name, "method_args": _fast_args().get(name, {}), "max_test_examples": 4}
    fields["steps_per_task"] = 5
    losses = _record_losses(monkeypatch)
    whole = read_results(run(_config(tiny_config, tmp_path, "whole", **fields), include=include))
    reference = {(s, n): v for s, n, v in losses}
    monkeypatch.undo()
    config = _config(tiny_config, tmp_path, "stopped", save_every=2, **fields)
    before = _record_losses(monkeypatch, crash_at=(2, 4))
    with pytest.raises(_Crash):
        run(config, include=include)
    monkeypatch.undo()
    after = _record_losses(monkeypatch)
    resumed = read_results(run(config, include=include))
    assert after[0][:2] == (2, 3)
    assert {(s, n): v for s, n, v in before} | {(s, n): v for s, n, v in after} == reference
    assert resumed.matrix == whole.matrix


def test_no_step_checkpoint_is_left_once_its_stage_is_saved(tiny_tasks, tiny_config, tmp_path):
    include = (str(tiny_tasks),)
    config = _config(tiny_config, tmp_path, "run", save_every=2)
    run_dir = run(config, include=include, stop_after=1)
    assert _step_folders(run_dir) == []
    assert "step_checkpoint" not in read_json(run_dir / "state.json")
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-1"]
    # --save-every says how a run is carried out, not what it computes: the same run goes on.
    config.save_every = 0
    run(config, include=include)
    assert read_json(run_dir / "config.json")["save_every"] == 0
    assert read_results(run_dir).config == read_json(run_dir / "config.json")
    assert not list(run_dir.glob("*checkpoint-*"))


def test_a_damaged_step_checkpoint_trains_its_stage_again_from_the_start(
    tiny_tasks, tiny_config, tmp_path, monkeypatch, capsys
):
    include = (str(tiny_tasks),)
    matrix, reference = _uninterrupted(tiny_tasks, tiny_config, tmp_path, monkeypatch)
    config = _config(tiny_config, tmp_path, "damaged", save_every=2)
    _record_losses(monkeypatch, crash_at=(2, 5))
    with pytest.raises(_Crash):
        run(config, include=include)
    run_dir = runner.run_dir_of(config)
    weights = run_dir / "checkpoint-2-step-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.undo()
    after = _record_losses(monkeypatch)
    capsys.readouterr()
    run(config, include=include)
    err = capsys.readouterr().err
    assert (
        f"clbench: warning: the step checkpoint of stage 2 (step 4): {weights} is damaged "
        "(its SHA-256 is not the one state.json recorded); training stage 2 again from its start"
    ) in err
    assert after[0][:2] == (2, 1)
    assert {(s, n): v for s, n, v in after} == {k: v for k, v in reference.items() if k[0] >= 2}
    assert read_results(run_dir).matrix == matrix


def test_a_signal_in_a_deferred_block_is_recorded_then_raised_at_its_end():
    with pytest.raises(Preempted, match="SIGUSR1"), preemptible(), deferred():
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.2)  # the handler runs meanwhile, and raises nothing
        assert requested() == "SIGUSR1"
    assert requested() is None


def test_a_second_ctrl_c_in_a_deferred_block_stops_at_once():
    with pytest.raises(KeyboardInterrupt), preemptible(), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert requested() == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        pytest.fail("the second SIGINT did not stop the block")


@pytest.mark.parametrize(
    ("number", "code"), [(signal.SIGTERM, EXIT_PREEMPTED), (signal.SIGINT, EXIT_INTERRUPTED)]
)
def test_a_signal_mid_stage_saves_a_step_checkpoint_and_the_run_resumes_exactly(
    tiny_tasks, tiny_config, tmp_path, number, code
):
    """Without --save-every, the signal alone (preemption, or Ctrl-C) writes a step checkpoint,
    after the step that was running; the same command then finishes the run as if it had
    never stopped."""
    tiny_config.steps_per_task = 30  # stage 1 outlasts the signal's delivery
    tiny_config.output = str(tmp_path / "reference")
    reference_dir = run(tiny_config, include=(str(tiny_tasks),))
    reference = read_results(reference_dir)
    tiny_config.output = str(tmp_path / "preempted")
    argv = [sys.executable, "-m", "clbench.cli", "run", "--include-path", str(tiny_tasks)]
    for key in ("sequence", "model", "steps_per_task", "batch_size", "lr", "output"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(tiny_config, key))]
    argv += ["--eval-batch-size", str(tiny_config.eval_batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        # The progress bar of stage 1 is drawn just before its first step.
        while "stage 1/3 train" not in log.read_text() and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(number)
        process.wait(timeout=120)
    err = log.read_text()
    assert process.returncode == code
    run_dir = runner.run_dir_of(tiny_config)
    entry = read_json(run_dir / "state.json")["step_checkpoint"]
    assert entry["stage"] == 1 and 1 <= entry["step"] < 30
    assert (run_dir / entry["name"]).is_dir()
    assert f"stage 1 is saved at optimizer step {entry['step']} ({entry['name']})" in err
    assert f"stopped by {signal.Signals(number).name}" in err

    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    results = read_results(run_dir)
    assert results.matrix == reference.matrix
    assert _trained(results) == _trained(reference)
    assert [getattr(results.cost, k) for k in COUNTERS] == [
        getattr(reference.cost, k) for k in COUNTERS
    ]
    assert not list(run_dir.glob("*checkpoint-*"))


def _trained(results) -> list:
    """Each stage's steps and first and last loss."""
    return [
        (s.get("steps"), s.get("first_loss"), s.get("final_loss"))
        for s in results.timings["stages"]
    ]


def test_a_signal_during_the_stage_evaluation_keeps_the_stage_training(
    tiny_tasks, tiny_config, tmp_path, monkeypatch
):
    """Preemption after stage 2's last step, while it is evaluated: the resumed run evaluates
    stage 2 again but does not train it again, and ends as if it had never stopped."""
    include = (str(tiny_tasks),)
    matrix, reference = _uninterrupted(tiny_tasks, tiny_config, tmp_path, monkeypatch)
    config = _config(tiny_config, tmp_path, "stopped")  # no --save-every
    before = _record_losses(monkeypatch)
    evaluate = runner._evaluate_all

    def preempted_after_stage_2(*args):
        if args[-1] == 2:
            raise Preempted("SIGTERM")
        return evaluate(*args)

    monkeypatch.setattr(runner, "_evaluate_all", preempted_after_stage_2)
    with pytest.raises(Preempted):
        run(config, include=include)
    run_dir = runner.run_dir_of(config)
    entry = read_json(run_dir / "state.json")["step_checkpoint"]
    assert (entry["stage"], entry["step"]) == (2, config.steps_per_task)
    # The stage's optimizer is not needed after its last step, so its moments are not written.
    assert sorted(entry["sha256"]) == ["model.safetensors", "progress.json", "rng.safetensors"]

    monkeypatch.undo()
    after = _record_losses(monkeypatch)
    run(config, include=include)
    assert after[0][:2] == (3, 1)  # stage 2 was not trained again
    losses = {(s, n): v for s, n, v in before} | {(s, n): v for s, n, v in after}
    assert losses == reference
    assert read_results(run_dir).matrix == matrix
    assert not list(run_dir.glob("*checkpoint-*-step-*"))
