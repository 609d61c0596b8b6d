"""`kill -9` at random points of a tiny run: during training, evaluation, the checkpoint write,
the state write and the results write, and at a random time; and SIGTERM or SIGUSR1 as a
cluster sends them. Each stopped run, started again, ends with the matrix of a run that was
never stopped (docs/reliability.md)."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from clbench.config import RunConfig
from clbench.results import io
from clbench.results.io import read_results
from clbench.training import runner, train
from clbench.training.runner import run
from clbench.training.signals import EXIT_PREEMPTED, Preempted, preemptible

POINTS = 12


def _outcome(config: RunConfig) -> tuple[list, list]:
    """The matrix, and each stage's first and last loss, which tell weights apart where a tiny
    model's scores cannot."""
    results = read_results(runner.run_dir_of(config))
    stages = results.timings["stages"]
    return results.matrix, [(s.get("first_loss"), s.get("final_loss")) for s in stages]


KINDS = ("train", "evaluate", "checkpoint", "state", "results", "timer")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kind: str, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill this process at the `n`-th call (from 1) of the code that `kind` names."""
    calls = Counter()

    def counted(name: str, real, before: bool = True):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            if before and calls[name] == n:
                _die()
            result = real(*args, **kwargs)
            if not before and calls[name] == n:
                _die()
            return result

        return wrapper

    if kind == "train":
        monkeypatch.setattr(train, "_loss", counted(kind, train._loss))
    elif kind == "evaluate":
        monkeypatch.setattr(runner, "evaluate_task", counted(kind, runner.evaluate_task))
    elif kind == "checkpoint":  # the model file is written, half of it, when the process dies
        real = io.save_model

        def half_written(model, filename):
            calls[kind] += 1
            real(model, filename)
            if calls[kind] == n:
                Path(filename).write_bytes(Path(filename).read_bytes()[:5000])
                _die()

        monkeypatch.setattr(io, "save_model", half_written)
    elif kind in ("state", "results"):  # the temporary file is whole, not yet renamed
        real_replace = os.replace

        def replace(src, dst):
            if Path(dst).name == f"{kind}.json":
                calls[kind] += 1
                if calls[kind] == n:
                    _die()
            real_replace(src, dst)

        monkeypatch.setattr(io.os, "replace", replace)
    else:
        threading.Timer(n / 1000, _die).start()


def _killed_run(config: RunConfig, include: tuple[str, ...], kind: str, n: int) -> bool:
    """Run `config` in a forked process armed to die at (kind, n); whether it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        # The parent's OpenMP pool does not survive fork, and a parallel region would wait on
        # it forever; with one thread torch runs no parallel region.
        torch.set_num_threads(1)
        try:
            with pytest.MonkeyPatch.context() as monkeypatch:
                _arm(kind, n, monkeypatch)
                run(config, include=include)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _counts(config: RunConfig, include: tuple[str, ...], monkeypatch) -> Counter:
    """How often a whole run calls the code of each kind."""
    calls = Counter()

    def spy(name: str, real):
        def wrapper(*args, **kwargs):
            if name != "replace" or Path(args[1]).name in ("state.json", "results.json"):
                calls[Path(args[1]).stem if name == "replace" else name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(train, "_loss", spy("train", train._loss))
    monkeypatch.setattr(runner, "evaluate_task", spy("evaluate", runner.evaluate_task))
    monkeypatch.setattr(io, "save_model", spy("checkpoint", io.save_model))
    monkeypatch.setattr(io.os, "replace", spy("replace", os.replace))
    run(config, include=include)
    monkeypatch.undo()
    return calls


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_9_at_random_points_resumes_to_the_same_matrix(
    tiny_tasks, tiny_config, tmp_path, monkeypatch, capsys
):
    include = (str(tiny_tasks),)
    tiny_config.output = str(tmp_path / "reference")
    calls = _counts(tiny_config, include, monkeypatch)
    reference = _outcome(tiny_config)
    assert set(calls) == set(KINDS) - {"timer"}

    rng = random.Random(16)
    # Every kind at least once, the rest drawn at random; the timer fires within a whole run.
    kinds = [*KINDS, *rng.choices(KINDS, k=POINTS - len(KINDS))]
    tried, killed, identical = [], 0, 0
    for i, kind in enumerate(kinds):
        n = rng.randint(1, calls[kind]) if kind != "timer" else rng.randint(50, 1000)
        tiny_config.output = str(tmp_path / f"point{i}")
        was_killed = _killed_run(tiny_config, include, kind, n)
        killed += was_killed
        run(tiny_config, include=include)  # the same call again continues the run
        same = _outcome(tiny_config) == reference
        identical += same
        tried.append((kind, n, was_killed, same))
    with capsys.disabled():
        print(f"\nkill -9 points: {len(tried)} tried, {killed} killed, {identical} identical")
        for kind, n, was_killed, same in tried:
            print(f"  {kind:10} {n:5}  killed={was_killed}  same matrix={same}")
    assert identical == len(tried)
    assert killed >= POINTS - 1  # the timer may fire after a fast run has finished


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signals_raise_preempted_and_are_put_back(number):
    before = signal.getsignal(number)
    with pytest.raises(Preempted, match=signal.Signals(number).name), preemptible():
        os.kill(os.getpid(), number)
        time.sleep(5)  # the handler runs before this ends
    assert signal.getsignal(number) == before


def test_a_preempted_run_exits_75_and_the_same_command_continues_it(
    tiny_tasks, tiny_config, tmp_path
):
    number = signal.SIGTERM
    include = (str(tiny_tasks),)
    tiny_config.steps_per_task = 40  # stage 1 outlasts the signal's delivery on a loaded machine
    tiny_config.output = str(tmp_path / "reference")
    run(tiny_config, include=include)
    reference = _outcome(tiny_config)
    tiny_config.output = str(tmp_path / "preempted")
    argv = [sys.executable, "-m", "clbench.cli", "run", "--include-path", str(tiny_tasks)]
    for key in ("sequence", "model", "steps_per_task", "batch_size", "lr", "output"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(tiny_config, key))]
    argv += ["--eval-batch-size", str(tiny_config.eval_batch_size)]
    state = runner.run_dir_of(tiny_config) / "state.json"
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    while not state.exists() and process.poll() is None:  # row 0 is written: stage 1 trains
        time.sleep(0.05)
    process.send_signal(number)
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED == 75
    assert f"stopped by {signal.Signals(number).name}; finished stages are saved" in err
    assert not (state.parent / "results.json").exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "continuing the unfinished run" in done.stderr
    assert _outcome(tiny_config) == reference
