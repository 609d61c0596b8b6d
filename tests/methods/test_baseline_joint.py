"""Joint: batches drawn uniformly from the union of the tasks so far, and seeded; with
`from_scratch`, every stage re-trained from the first weights on the union."""

from collections import Counter

import pytest
import torch

import clbench.training.train
from clbench.config import RunConfig
from clbench.data.registry import load_task
from clbench.methods import Stage, create_method
from clbench.results.io import load_results, read_results
from clbench.training import runner
from clbench.training.models import apply_lora, load_model
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


# ---- re-training on the union (from_scratch) ---------------------------------------------------


def _two_tasks(tiny_tasks, tiny_config, name: str, **method_args):
    (tiny_tasks / "two.yaml").write_text("name: two\ntasks: [t-pos, t-food]\n", encoding="utf-8")
    values = tiny_config.to_dict() | {"sequence": "two", "method": "joint", "run_id": name}
    return RunConfig(**values | {"method_args": method_args})


def _spy_stage_starts(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Every parameter of the model as each stage's training begins (after `before_task`)."""
    starts = []
    real = runner.train_task

    def spy(model, stage, *args):
        starts.append({n: p.detach().clone() for n, p in stage.model.named_parameters()})
        return real(model, stage, *args)

    monkeypatch.setattr(runner, "train_task", spy)
    return starts


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("from_scratch", [True, False])
def test_from_scratch_retrains_each_stage_from_the_first_weights_for_k_times_the_steps(
    tiny_tasks, tiny_config, monkeypatch, from_scratch
):
    starts = _spy_stage_starts(monkeypatch)
    config = _two_tasks(tiny_tasks, tiny_config, "run", from_scratch=from_scratch)
    results = read_results(run(config, include=(str(tiny_tasks),)))
    assert len(starts) == 2 and _same(starts[0], starts[1]) == from_scratch
    steps = [record["steps"] for record in results.timings["stages"][1:]]
    assert steps == ([3, 6] if from_scratch else [3, 3])
    assert results.cost.optimizer_steps == sum(steps)  # the cost counts the extra steps
    assert results.method.hyperparameters["from_scratch"] is from_scratch


def test_from_scratch_resumed_after_stage_1_gives_the_same_run(tiny_tasks, tiny_config):
    include = (str(tiny_tasks),)
    whole = read_results(
        run(_two_tasks(tiny_tasks, tiny_config, "whole", from_scratch=True), include=include)
    )
    config = _two_tasks(tiny_tasks, tiny_config, "stopped", from_scratch=True)
    run(config, include=include, stop_after=1)
    resumed = read_results(run(config, include=include))  # wrap_model sees the first weights
    assert resumed.matrix == whole.matrix


def test_from_scratch_keeps_only_the_trainable_weights_under_peft():
    model = apply_lora(load_model("tiny-random").model, 4, 8)
    joint = create_method("joint", {"from_scratch": True})
    joint.wrap_model(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(joint.initial) == trainable and all("lora" in n for n in trainable)
    assert create_method("joint").wrap_model(model) is model  # the default keeps no copy


def test_warmup_fraction_gives_the_schedule_of_cpt_rewarm(tiny_config):
    args = {"warmup_fraction": 0.2, "min_lr_ratio": 0.1}
    joint = create_method("joint", args)
    rewarm = create_method("cpt-rewarm", args)
    stage = Stage(index=2, data=None, model=None, seed=0, config=tiny_config)
    weight = [torch.nn.Parameter(torch.zeros(2))]
    optimizer, schedule = joint.configure_optimizer(weight, stage, 20)
    rates = []
    for _ in range(20):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates == [tiny_config.lr * rewarm.lr_factor(s, 20) for s in range(20)]
    assert rates[0] == 0 and rates[4] == tiny_config.lr and rates[-1] < 0.2 * tiny_config.lr
