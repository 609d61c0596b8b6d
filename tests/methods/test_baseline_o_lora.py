"""o-lora: a new LoRA adapter per task, earlier adapters frozen, orthogonality penalty."""

import pytest
import torch

import clbench.training.runner
from clbench.methods import Stage, Step, create_method
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run


def _lora_a(model, adapter):
    return [m.lora_A[adapter].weight for m in model.modules() if hasattr(m, "lora_A") and m.lora_A]


def test_orthogonality_loss_is_zero_only_for_orthogonal_subspaces():
    method = create_method("o-lora", {"r": 4, "lambda_l2": 0.1})
    model = method.wrap_model(load_model("tiny-random").model)
    method.before_task(Stage(index=2, data=None, model=model, seed=0))
    assert method.adapters == 2
    old, new = _lora_a(model, "task1"), _lora_a(model, "task2")
    assert len(old) == len(new) == 2 * 7  # q k v o gate up down, in 2 layers
    assert not old[0].requires_grad and new[0].requires_grad
    with torch.no_grad():
        for a_old, a_new in zip(old, new, strict=True):
            basis = torch.eye(a_old.shape[1])
            a_old.copy_(3 * basis[:4])  # rows 0-3 of the input space
            a_new.copy_(basis[4:8])  # rows 4-7: orthogonal
    assert float(method.orthogonality_loss(model)) == 0.0
    with torch.no_grad():
        for a_old, a_new in zip(old, new, strict=True):
            a_new.copy_(-torch.eye(a_old.shape[1])[:4])  # the same subspace as task1's
    # |A_new A_old^T| = 3 I (in absolute value): 4 x 3 per layer.
    assert float(method.orthogonality_loss(model)) == pytest.approx(14 * 12)
    assert float(method.l2_loss(model)) == pytest.approx(14 * 2)  # |A_new| = 2, B_new = 0
    step = Step(0, [], None, None)
    stage = Stage(index=2, data=None, model=model, seed=0)
    total = method.training_loss(torch.tensor(1.0), step, stage)
    assert float(total) == pytest.approx(1.0 + 0.5 * 14 * 12 + 0.1 * 14 * 2)  # lambda_orth 0.5
    total.backward()  # the penalty's gradient reaches only the new adapter
    assert all(a.grad is None for a in old) and all(a.grad is not None for a in new)


def test_earlier_adapters_stay_frozen_and_all_are_used(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    tiny_config.method = "o-lora"
    tiny_config.method_args = {"r": 4}
    base = dict(load_model("tiny-random").model.named_parameters())
    after, active = {}, []  # stage -> trained tensors; the adapters active at each evaluation
    real_train, real_eval = (
        clbench.training.runner.train_task,
        clbench.training.runner.evaluate_task,
    )

    def train_spy(model, stage, *args):
        result = real_train(model, stage, *args)
        after[stage.index] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return result

    def eval_spy(model, *args):
        active.append(list(model.base_model.active_adapters))
        return real_eval(model, *args)

    monkeypatch.setattr(clbench.training.runner, "train_task", train_spy)
    monkeypatch.setattr(clbench.training.runner, "evaluate_task", eval_spy)
    whole = load_results(run(tiny_config, include=include))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])

    final = after[3]
    assert sum("lora_A.task3." in n for n in final) == 14
    for name, value in final.items():
        if ".task1." in name:  # trained in stage 1, untouched by stages 2 and 3
            assert torch.equal(value, after[1][name]), name
        elif ".task2." in name:
            assert torch.equal(value, after[2][name]), name
        elif "lora_" not in name:  # the base model never changes
            original = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(value, base[original]), name
    for task in ("task1", "task2", "task3"):  # each adapter learned in its own stage
        assert any(not torch.all(p == 0) for n, p in final.items() if f"lora_B.{task}." in n)
    # No task id: every evaluation after stage k runs with adapters 1..k together.
    assert active == [["task1"]] * 6 + [["task1", "task2"]] * 3 + [["task1", "task2", "task3"]] * 3


def test_active_adapters_add_their_updates():
    """All adapters active = the base output plus every adapter's own update (the merge)."""
    method = create_method("o-lora", {"r": 4})
    model = method.wrap_model(load_model("tiny-random").model)
    method.before_task(Stage(index=2, data=None, model=model, seed=0))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 32)
    with torch.no_grad():
        for task in ("task1", "task2"):
            torch.nn.init.normal_(layer.lora_B[task].weight)
        both = layer(x)
        deltas = []
        for task in ("task1", "task2"):
            layer.set_adapter([task])
            deltas.append(layer(x) - layer.base_layer(x))
        assert torch.allclose(both, layer.base_layer(x) + deltas[0] + deltas[1], atol=1e-5)
        assert all(d.abs().max() > 0.1 for d in deltas)
