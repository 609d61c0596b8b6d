"""Joint: batches drawn uniformly from the union of the tasks so far, and seeded."""

from collections import Counter

import clbench.training.train
from clbench.data.registry import load_task
from clbench.methods import Stage, create_method
from clbench.results.io import load_results
from clbench.training.runner import run


def _stage(index, task_name, tiny_tasks):
    data = load_task(str(tiny_tasks / f"{task_name}.yaml")).load()
    return Stage(index=index, data=data, model=None, seed=0)


def _joint_at_stage_3(tiny_tasks):
    joint = create_method("joint")
    stages = [_stage(i, name, tiny_tasks) for i, name in enumerate(["t-pos", "t-food", "t-neg"], 1)]
    for stage in stages:
        joint.before_task(stage)
    return joint, stages[2]


def test_batches_come_uniformly_from_every_task_so_far(tiny_tasks):
    joint, third = _joint_at_stage_3(tiny_tasks)
    assert len(joint.pool) == 48
    counts = Counter()
    for _ in range(300):
        batch = joint.training_batch(third.data.train[:4], third)
        assert len(batch) == 4 and len(set(batch)) == 4  # same size, no repeats in a batch
        counts.update(e.task for e in batch)
    # 1200 draws from three tasks of 16 examples each: about 400 each.
    assert set(counts) == {"t-pos", "t-food", "t-neg"}
    assert all(330 < n < 470 for n in counts.values()), counts


def test_batches_are_seeded_by_the_stage_and_the_pool_round_trips(tiny_tasks):
    joint, third = _joint_at_stage_3(tiny_tasks)
    again, _ = _joint_at_stage_3(tiny_tasks)
    batches = [joint.training_batch(third.data.train[:4], third) for _ in range(5)]
    assert batches == [again.training_batch(third.data.train[:4], third) for _ in range(5)]
    other = create_method("joint")
    other.load_state_dict(joint.state_dict())
    other.before_task(_stage(4, "t-pos", tiny_tasks))  # another stage, other batches
    assert other.pool[:48] == joint.pool
    assert batches != [other.training_batch(third.data.train[:4], third) for _ in range(5)]


def _spy_batches(monkeypatch):
    """The set of tasks in every trained batch, in order."""
    seen = []
    real = clbench.training.train.collate
    monkeypatch.setattr(
        clbench.training.train,
        "collate",
        lambda tok, batch, n: seen.append({e.task for e in batch}) or real(tok, batch, n),
    )
    return seen


def test_a_run_trains_stage_k_on_tasks_1_to_k(tiny_tasks, tiny_config, monkeypatch):
    seen = _spy_batches(monkeypatch)
    tiny_config.method = "joint"
    results = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    assert len(results["matrix"]) == 4 and all(len(row) == 3 for row in results["matrix"])
    steps = tiny_config.steps_per_task
    stage_tasks = [set().union(*seen[k * steps : (k + 1) * steps]) for k in range(3)]
    assert stage_tasks == [{"t-pos"}, {"t-pos", "t-food"}, {"t-pos", "t-food", "t-neg"}]
