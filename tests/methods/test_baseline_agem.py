"""A-GEM: the memory fills after each task, and a conflicting gradient is projected so that it
no longer conflicts with the memory gradient."""

import torch
from accelerate import Accelerator

from clbench.data.registry import load_task
from clbench.methods import Stage, create_method
from clbench.methods.agem import AGEM
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run


def _stage(index, name, tiny_tasks, tiny_config, model=None, tokenizer=None, accelerator=None):
    data = load_task(str(tiny_tasks / f"{name}.yaml")).load()
    return Stage(index, data, model, 0, tokenizer, tiny_config, accelerator)


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_memory_fills_with_each_task(tiny_tasks, tiny_config):
    agem = create_method("agem", {"memory_per_task": 5})
    for index, name in enumerate(["t-pos", "t-food"], start=1):
        stage = _stage(index, name, tiny_tasks, tiny_config)
        agem.before_task(stage)
        agem.after_task(stage)
        assert len(agem.memory) == 5 * index
        assert all(e in stage.data.train for e in agem.memory[-5:])
    assert len(set(agem.memory)) == 10


def test_conflicting_gradient_is_projected_onto_the_memory_constraint(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    model, tokenizer = loaded.model, loaded.tokenizer
    agem = create_method("agem", {"memory_per_task": 4, "sample_size": 4})
    first = _stage(1, "t-pos", tiny_tasks, tiny_config, model, tokenizer)
    agem.before_task(first)
    agem.after_task(first)
    accelerator = Accelerator(mixed_precision="no")  # one process: the mean is the identity
    second = _stage(2, "t-food", tiny_tasks, tiny_config, model, tokenizer, accelerator)
    agem.before_task(second)
    params = [p for p in model.parameters() if p.requires_grad]
    reference = _flat(torch.autograd.grad(second.loss(agem.memory), params))

    # The batch gradient: the memory's own gradient reversed, plus some unrelated direction.
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    raw = -reference + 0.1 * reference.norm() * noise / noise.norm()
    offset = 0
    for p in params:
        p.grad = raw[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    assert torch.dot(raw, reference) < 0  # a conflict

    agem.after_backward(second)
    projected = _flat([p.grad for p in params])
    expected = raw - torch.dot(raw, reference) / torch.dot(reference, reference) * reference
    assert torch.allclose(projected, expected, atol=1e-6 * raw.norm())
    scale = projected.norm() * reference.norm()
    assert torch.dot(projected, reference) >= -1e-5 * scale  # no conflict left
    assert (projected - raw).norm() > 0.5 * raw.norm()  # and it did change

    # A gradient that agrees with the memory is left as it is.
    offset = 0
    for p in params:
        p.grad = -raw[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    agem.after_backward(second)
    assert torch.equal(_flat([p.grad for p in params]), -raw)


def test_run_uses_the_memory_after_the_first_task(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    calls = []
    real = AGEM.reference_gradient
    monkeypatch.setattr(
        AGEM,
        "reference_gradient",
        lambda self, stage, params: (
            calls.append((stage.index, len(self.memory))) or real(self, stage, params)
        ),
    )
    tiny_config.method = "agem"
    tiny_config.method_args = {"memory_per_task": 6, "sample_size": 4}
    whole = load_results(run(tiny_config, include=include))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])
    # A reference gradient at every step after task 1, from a memory of 6 examples per task.
    assert calls == [(2, 6)] * 3 + [(3, 12)] * 3
