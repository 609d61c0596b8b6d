"""Continual pre-training with re-warming: the learning rate follows the closed form at every
step and warms up again in every stage; replayed examples replace part of each later batch."""

import math

import pytest
import torch

import clbench.training.train
from clbench.data.registry import load_task
from clbench.methods import Stage, create_method
from clbench.methods.cpt_rewarm import CPTRewarm
from clbench.results.io import load_results
from clbench.training.runner import run


def _closed_form(step, steps, lr, warmup_fraction, min_ratio):
    """Linear warm-up from 0 over ceil(fraction x steps) steps, then cosine to min_ratio x lr."""
    warmup = math.ceil(warmup_fraction * steps)
    if step < warmup:
        return lr * step / warmup
    angle = math.pi * (step - warmup) / (steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * (1 + math.cos(angle)) / 2)


def test_learning_rate_follows_the_closed_form_and_rewarms(tiny_tasks, tiny_config):
    method = create_method("cpt-rewarm", {"warmup_fraction": 0.1, "min_lr_ratio": 0.2})
    data = load_task(str(tiny_tasks / "t-pos.yaml")).load()
    steps = 50
    for index in (1, 2):
        stage = Stage(index, data, None, 0, None, tiny_config)
        parameter = torch.nn.Parameter(torch.zeros(3))
        optimizer, scheduler = method.configure_optimizer([parameter], stage, steps)
        seen = []
        for _ in range(steps):
            seen.append(optimizer.param_groups[0]["lr"])
            parameter.grad = torch.ones(3)
            optimizer.step()
            scheduler.step()
        expected = [_closed_form(s, steps, tiny_config.lr, 0.1, 0.2) for s in range(steps)]
        assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert seen[0] == 0 and max(seen) == pytest.approx(tiny_config.lr)  # warms up from 0
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * tiny_config.lr)  # decayed


def test_without_rewarming_later_stages_keep_the_decayed_rate(tiny_tasks, tiny_config):
    method = create_method("cpt-rewarm", {"min_lr_ratio": 0.2, "rewarm": False})
    data = load_task(str(tiny_tasks / "t-pos.yaml")).load()
    seen = {}
    for index in (1, 2, 3):
        parameter = torch.nn.Parameter(torch.zeros(3))
        stage = Stage(index, data, None, 0, None, tiny_config)
        optimizer, scheduler = method.configure_optimizer([parameter], stage, 10)
        seen[index] = []
        for _ in range(10):
            seen[index].append(optimizer.param_groups[0]["lr"])
            parameter.grad = torch.ones(3)
            optimizer.step()
            scheduler.step()
    first = [_closed_form(s, 10, tiny_config.lr, 0.01, 0.2) for s in range(10)]
    assert seen[1] == pytest.approx(first, rel=1e-9, abs=1e-15)  # warm-up and decay once
    assert seen[2] == seen[3] == pytest.approx([0.2 * tiny_config.lr] * 10)


def test_run_rewarms_every_stage_and_replays(tiny_tasks, tiny_config, monkeypatch):
    optimizers, steps_seen = [], []  # per training step: (tasks of the batch, lr)
    configure = CPTRewarm.configure_optimizer

    def keep(self, parameters, stage, steps):
        optimizer, scheduler = configure(self, parameters, stage, steps)
        optimizers.append(optimizer)  # the scheduler sets the learning rate on it
        return optimizer, scheduler

    collate = clbench.training.train.collate

    def spy(tokenizer, batch, max_length):
        lr = optimizers[-1].param_groups[0]["lr"]
        steps_seen.append(([e.task for e in batch], lr))
        return collate(tokenizer, batch, max_length)

    monkeypatch.setattr(CPTRewarm, "configure_optimizer", keep)
    monkeypatch.setattr(clbench.training.train, "collate", spy)
    tiny_config.method = "cpt-rewarm"
    tiny_config.steps_per_task = 4
    args = {"warmup_fraction": 0.5, "min_lr_ratio": 0.1, "replay_fraction": 0.5}
    tiny_config.method_args = args
    whole = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])

    # Warm-up over 2 steps from 0, then cosine: the same in every stage.
    lrs = [lr for _, lr in steps_seen]
    stage = [_closed_form(s, 4, tiny_config.lr, 0.5, 0.1) for s in range(4)]
    assert lrs == pytest.approx(stage * 3, rel=1e-9, abs=1e-15)
    assert stage[:3] == pytest.approx([0, tiny_config.lr / 2, tiny_config.lr])
    # Half of every later batch is replayed; the batch size stays 4.
    tasks = [t for t, _ in steps_seen]
    assert all(t == ["t-pos"] * 4 for t in tasks[:4])
    assert all(t[:2] == ["t-food"] * 2 and set(t[2:]) == {"t-pos"} for t in tasks[4:8])
    assert all(t[:2] == ["t-neg"] * 2 and set(t[2:]) <= {"t-pos", "t-food"} for t in tasks[8:])
    assert {"t-pos", "t-food"} == {x for t in tasks[8:] for x in t[2:]}
