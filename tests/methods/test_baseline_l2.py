"""L2: the pull toward the previous task's weights, its value and its effect on training."""

import pytest
import torch

from clbench.data.registry import load_task
from clbench.methods import Stage, create_method
from clbench.training.models import load_model


def _stage(index, task_name, tiny_tasks, config, loaded):
    data = load_task(str(tiny_tasks / f"{task_name}.yaml")).load()
    return Stage(index, data, loaded.model, 0, loaded.tokenizer, config)


def _distance(model, anchor):
    with torch.no_grad():
        return float(sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters()) ** 0.5)


def test_penalty_is_zero_at_the_anchor_and_half_lambda_squared_distance(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    l2 = create_method("l2", {"l2_lambda": 3.0})
    loss = torch.tensor(0.7)
    l2.before_task(_stage(1, "t-pos", tiny_tasks, tiny_config, loaded))
    assert l2.training_loss(loss, None, None) is loss  # the first task has no anchor

    stage = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    l2.before_task(stage)
    assert set(l2.anchor) == {n for n, _ in loaded.model.named_parameters()}
    with torch.no_grad():
        assert float(l2.penalty(loaded.model)) == 0.0
    generator = torch.Generator().manual_seed(0)
    named = list(loaded.model.named_parameters())
    shifts = {n: torch.randn(p.shape, generator=generator) for n, p in named}
    for scale in (1e-3, 2e-3):  # quadratic: twice as far, four times the penalty
        with torch.no_grad():
            for n, p in named:
                p.copy_(l2.anchor[n] + scale * shifts[n])
        expected = 3.0 / 2 * scale**2 * sum(float((s**2).sum()) for s in shifts.values())
        with torch.no_grad():
            assert float(l2.penalty(loaded.model)) == pytest.approx(expected, rel=1e-3)


def _train_second_task(tiny_tasks, tiny_config, l2_lambda):
    """Four AdamW steps on task 2 from fixed weights; returns the distance from them."""
    loaded = load_model("tiny-random")
    l2 = create_method("l2", {"l2_lambda": l2_lambda})
    stage = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    l2.before_task(stage)
    optimizer = torch.optim.AdamW(loaded.model.parameters(), lr=1e-2)
    for start in range(0, 16, 4):
        optimizer.zero_grad()
        loss = stage.loss(stage.data.train[start : start + 4])
        l2.training_loss(loss, None, stage).backward()
        optimizer.step()
    return _distance(loaded.model, l2.anchor)


def test_the_pull_keeps_training_near_the_previous_weights(tiny_tasks, tiny_config):
    free = _train_second_task(tiny_tasks, tiny_config, l2_lambda=0.0)
    pulled = _train_second_task(tiny_tasks, tiny_config, l2_lambda=100.0)
    assert free > 0 and pulled < 0.7 * free
