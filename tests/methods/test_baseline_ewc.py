"""EWC: the empirical Fisher, the quadratic penalty, the summed and online variants."""

import pytest
import torch

from clbench.data.registry import load_task
from clbench.methods import Stage, create_method
from clbench.training.models import apply_lora, load_model


def _stage(index, task_name, tiny_tasks, config, loaded):
    data = load_task(str(tiny_tasks / f"{task_name}.yaml")).load()
    return Stage(index, data, loaded.model, 0, loaded.tokenizer, config)


def _value(penalty_of, model):
    with torch.no_grad():
        return float(penalty_of(model))


def _displace(model, scale, seed=0):
    """Move every parameter by `scale` times a fixed random direction."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


def test_fisher_is_the_mean_squared_per_example_gradient(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    stage = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    ewc = create_method("ewc", {"fisher_examples": len(stage.data.train)})  # every example
    ewc.after_task(stage)
    named = dict(loaded.model.named_parameters())
    assert set(ewc.fisher) == set(named) == set(ewc.anchor)
    expected = {n: torch.zeros_like(p) for n, p in named.items()}
    for example in stage.data.train:
        loaded.model.zero_grad()
        stage.loss([example]).backward()
        for n, p in named.items():
            expected[n] += p.grad**2 / len(stage.data.train)
    for n in named:
        assert torch.allclose(ewc.fisher[n], expected[n], rtol=1e-4, atol=1e-12), n
        assert torch.equal(ewc.anchor[n], named[n].detach())
    assert all((f >= 0).all() for f in ewc.fisher.values())
    assert sum(float(f.sum()) for f in ewc.fisher.values()) > 0


def test_with_lora_only_the_adapter_is_regularised(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    loaded.model = apply_lora(loaded.model, 4, 8)
    stage = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    ewc = create_method("ewc", {"fisher_examples": 4})
    ewc.after_task(stage)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert set(ewc.fisher) == set(ewc.anchor) == trainable
    assert all("lora_" in n for n in trainable)
    assert sum(float(f.sum()) for f in ewc.fisher.values()) > 0
    with torch.no_grad():
        for n, p in loaded.model.named_parameters():
            if "lora_B" in n:
                p.add_(1e-2)
    assert _value(ewc.penalty, loaded.model) > 0


def test_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    stage = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    ewc = create_method("ewc", {"fisher_examples": 4, "ewc_lambda": 10.0})
    loss = torch.tensor(1.5)
    assert ewc.training_loss(loss, None, stage) is loss  # no earlier task: no penalty
    ewc.after_task(stage)
    assert _value(ewc.penalty, loaded.model) == 0.0
    _displace(loaded.model, 1e-3)
    small = _value(ewc.penalty, loaded.model)
    _displace(loaded.model, 1e-3)  # twice the displacement: four times the penalty
    assert small > 0
    assert _value(ewc.penalty, loaded.model) == pytest.approx(4 * small, rel=1e-3)
    # The penalty's gradient is lambda * F * (theta - theta*): important weights pull harder.
    model = loaded.model
    model.zero_grad()
    ewc.training_loss(torch.tensor(0.0), None, stage).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, 10.0 * ewc.fisher[n] * (p - ewc.anchor[n]), atol=1e-9), n


def test_summed_penalty_equals_the_per_task_sum_and_online_decays(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    model = loaded.model
    first = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    second = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    args = {"fisher_examples": 4, "ewc_lambda": 2.0}
    summed, online = create_method("ewc", args), create_method("ewc", {**args, "online": True})
    online.params.gamma = 0.5
    per_task = []  # (Fisher, anchor) of each task, as the paper keeps them
    for stage in (first, second):
        fisher = summed.estimate_fisher(stage)
        per_task.append((fisher, {n: p.detach().clone() for n, p in model.named_parameters()}))
        summed.after_task(stage)
        online.after_task(stage)
        _displace(model, 1e-2, seed=stage.index)  # each task ends at other weights

    def paper_penalty(model):
        return sum(
            (fisher[n] * (p - anchor[n]) ** 2).sum()
            for fisher, anchor in per_task
            for n, p in model.named_parameters()
        )

    def grads(penalty):
        model.zero_grad()
        penalty.backward()
        return [p.grad.clone() for p in model.parameters()]

    ours, paper = grads(summed.penalty(model)), grads(2.0 / 2 * paper_penalty(model))
    for a, b in zip(ours, paper, strict=True):  # equal up to float32 rounding
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    # The two differ by a constant only: the same change from one point to another.
    before_ours, before_paper = _value(summed.penalty, model), _value(paper_penalty, model)
    _displace(model, 1e-2, seed=9)
    change_ours = _value(summed.penalty, model) - before_ours
    assert change_ours == pytest.approx(_value(paper_penalty, model) - before_paper, rel=1e-3)
    assert change_ours != 0

    (f1, _), (f2, a2) = per_task
    for n in f1:
        assert torch.allclose(online.fisher[n], 0.5 * f1[n] + f2[n])
        assert torch.equal(online.anchor[n], a2[n])
