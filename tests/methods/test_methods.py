"""The method registry and the two core methods."""

import pytest

import clbench.training.train
from clbench.data.registry import load_task
from clbench.errors import ClbenchError
from clbench.methods import Stage, create_method
from clbench.results.io import load_results
from clbench.training.runner import run


def _stage(index, task_name, tiny_tasks):
    data = load_task(str(tiny_tasks / f"{task_name}.yaml")).load()
    return Stage(index=index, data=data, model=None, seed=0)


def test_replay_mixes_earlier_examples_into_later_batches(tiny_tasks):
    replay = create_method("replay", {"buffer_size": 10, "replay_ratio": 0.5})
    first = _stage(1, "t-pos", tiny_tasks)
    replay.before_task(first)
    assert replay.training_batch(first.data.train[:4], first) == first.data.train[:4]  # empty
    replay.after_task(first)
    assert len(replay.buffer) == 10 and replay.seen == 16
    assert all(example in first.data.train for example in replay.buffer)

    second = _stage(2, "t-food", tiny_tasks)
    replay.before_task(second)
    batch = replay.training_batch(second.data.train[:4], second)
    assert batch[:4] == second.data.train[:4]
    assert [e.task for e in batch[4:]] == ["t-pos", "t-pos"]  # 0.5 x 4 replayed


def test_replay_in_a_run_trains_on_earlier_tasks(tiny_tasks, tiny_config, monkeypatch):
    seen_tasks = []
    real = clbench.training.train.collate
    monkeypatch.setattr(
        clbench.training.train,
        "collate",
        lambda tok, batch, n: seen_tasks.append({e.task for e in batch}) or real(tok, batch, n),
    )
    tiny_config.method = "replay"
    results = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    steps = tiny_config.steps_per_task
    assert seen_tasks[:steps] == [{"t-pos"}] * steps  # nothing to replay in stage 1
    assert all("t-pos" in tasks and "t-food" in tasks for tasks in seen_tasks[steps : 2 * steps])
    assert all("t-neg" in tasks and len(tasks) > 1 for tasks in seen_tasks[2 * steps :])
    assert results["method"]["hyperparameters"] == {"buffer_size": 200, "replay_ratio": 0.5}


def test_method_by_module_path_and_bad_hyperparameters():
    method = create_method("clbench.methods.seq_ft:SeqFT")
    assert method.name == "seq-ft"
    with pytest.raises(ClbenchError, match=r"unknown field.*bogus"):
        create_method("replay", {"bogus": 1})
    with pytest.raises(ClbenchError, match=r"buffer_size.*must be int"):
        create_method("replay", {"buffer_size": "many"})
    with pytest.raises(ClbenchError, match="cannot load method"):
        create_method("no_such_module:Thing")
    with pytest.raises(ClbenchError, match="not a subclass"):
        create_method("clbench.config:RunConfig")
