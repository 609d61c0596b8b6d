"""LwF: the distillation term against a hand computation, its zero at the teacher, LoRA."""

import copy
import dataclasses

import pytest
import torch

from clbench.data.encoding import collate
from clbench.data.registry import load_task
from clbench.methods import Stage, Step, create_method
from clbench.training.loss import prepended_positions, target_logits
from clbench.training.models import apply_lora, load_model


def _stage(index, task_name, tiny_tasks, config, loaded):
    data = load_task(str(tiny_tasks / f"{task_name}.yaml")).load()
    return Stage(index, data, loaded.model, 0, loaded.tokenizer, config)


def _step(stage):
    examples = stage.data.train[:4]
    inputs = collate(stage.tokenizer, examples, stage.config.max_length)
    out = target_logits(stage.model, inputs, prepended_positions(stage.model))
    return Step(0, examples, inputs, out.logits, out.targets, out.keep)


def test_distillation_is_zero_at_the_teacher_and_matches_the_formula(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    lwf = create_method("lwf", {"alpha": 0.5, "temperature": 2.0})
    first = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    lwf.before_task(first)
    loss = torch.tensor(0.9)
    assert lwf.training_loss(loss, _step(first), first) is loss  # no teacher for task 1

    stage = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    lwf.before_task(stage)
    with torch.no_grad():
        step = _step(stage)
    teacher_logits = step.logits
    assert float(lwf.distillation(stage.model, step)) == pytest.approx(0, abs=1e-6)

    # The logits are those of the positions that predict a labelled token, row by row.
    labels = step.inputs["labels"]
    used = labels[:, 1:] != -100
    full = stage.model(**step.inputs).logits[:, :-1][used]
    assert torch.allclose(teacher_logits, full, atol=1e-5)
    assert torch.equal(step.targets, labels[:, 1:][used])

    noise = torch.randn(step.logits.shape, generator=torch.Generator().manual_seed(0))
    student = teacher_logits + noise
    got = float(lwf.distillation(stage.model, dataclasses.replace(step, logits=student)))
    p_old = torch.softmax(teacher_logits / 2.0, dim=-1)
    log_new = torch.log_softmax(student / 2.0, dim=-1)
    kl = (p_old * (p_old.log() - log_new)).sum(dim=-1).mean()
    assert got > 0 and got == pytest.approx(float(0.5 * 2.0**2 * kl), rel=1e-4)


def test_the_teacher_is_the_model_as_the_task_began(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    lwf = create_method("lwf")
    stage = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    lwf.before_task(stage)
    frozen = copy.deepcopy(loaded.model)  # what the paper keeps: the previous model
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.mul_(1.5)
    step = _step(stage)
    term = lwf.training_loss(torch.tensor(0.0), step, stage)
    with torch.no_grad():
        old = frozen(**step.inputs).logits
        used = step.inputs["labels"][:, 1:] != -100
        at_frozen = dataclasses.replace(step, logits=old[:, :-1][used])
        assert float(lwf.distillation(frozen, at_frozen)) == pytest.approx(0, abs=1e-6)
        p_old = torch.softmax(old[:, :-1][used] / 2.0, dim=-1)
        log_new = torch.log_softmax(step.logits / 2.0, dim=-1)
        kl = (p_old * (p_old.log() - log_new)).sum(dim=-1).mean()
    assert float(term.detach()) == pytest.approx(2.0**2 * float(kl), rel=1e-4)
    assert float(kl) > 1e-3
    term.backward()  # the term trains the current model
    assert any(float(p.grad.abs().sum()) > 0 for p in loaded.model.parameters())


def test_with_lora_the_teacher_is_the_adapter(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    loaded.model = apply_lora(loaded.model, 4, 8)
    lwf = create_method("lwf")
    stage = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    lwf.before_task(stage)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert set(lwf.teacher) == trainable and all("lora_" in n for n in trainable)
    zero = torch.tensor(0.0)
    with torch.no_grad():
        assert float(lwf.training_loss(zero, _step(stage), stage)) == pytest.approx(0, abs=1e-6)
        for n, p in loaded.model.named_parameters():
            if "lora_B" in n:  # B starts at zero: give the adapter an effect
                p.add_(0.5)
        assert float(lwf.training_loss(zero, _step(stage), stage)) > 1e-3
