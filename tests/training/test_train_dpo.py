"""DPO without a frozen copy: the reference log-probabilities are computed once at the stage's
start, equal those of the frozen copy the loss used before, and cover exactly the pairs the
stage trains on."""

import copy
import math

import pytest
import torch
from accelerate import Accelerator

from clbench.data.encoding import collate
from clbench.data.registry import load_task
from clbench.errors import ClbenchError
from clbench.methods import Method, Stage, create_method
from clbench.training import train
from clbench.training.models import load_model


def _full_logits_logprobs(model, inputs) -> torch.Tensor:
    """How DPO scored a sequence before: the LM head at every position."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    labels = inputs["labels"][:, 1:]
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (labels != -100)).sum(dim=-1)


def _stage(config, train_size=24):
    loaded = load_model("tiny-random")
    data = load_task("offline-align-helpful").load(max_train=train_size)
    return Stage(1, data, loaded.model, 0, loaded.tokenizer, config, Accelerator(cpu=True))


def _perturb(model) -> None:
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))


def test_the_dpo_loss_equals_the_frozen_copy_loss(tiny_config):
    tiny_config.eval_batch_size = 3  # the reference's batches differ from the training batch
    stage = _stage(tiny_config)
    pairs = stage.data.train[:5]
    reference = train.reference_logprobs(stage, pairs)
    frozen = copy.deepcopy(stage.model).eval()  # what the loss kept before
    _perturb(stage.model)  # a few steps later: the policy has moved

    sft = load_task("offline-align-harmless").load(max_train=2).train  # replayed: trained SFT
    batch = [*pairs, *sft]
    passes = []
    hook = stage.model.register_forward_hook(lambda *args: passes.append(1))
    loss = train._loss(stage.model, reference, batch, stage, Method(), 0, train._Padding())
    hook.remove()
    assert len(passes) == 1  # SFT rows, chosen and rejected responses: one forward pass

    both = collate(stage.tokenizer, train._with_rejected(pairs), tiny_config.max_length)
    policy = _full_logits_logprobs(stage.model, both)
    with torch.no_grad():
        ref = _full_logits_logprobs(frozen, both)
    dpo = train.dpo_loss(policy[:5], policy[5:], ref[:5], ref[5:], stage.data.task.beta)
    plain = stage.model(**collate(stage.tokenizer, sft, tiny_config.max_length)).loss
    expected = (5 * dpo + 2 * plain) / 7
    assert float(loss) == pytest.approx(float(expected), abs=1e-4)
    assert abs(float(dpo) - math.log(2)) > 1e-3  # the policy differs from the reference
    for i, pair in enumerate(pairs):
        got = reference[train._pair_key(pair)]
        assert torch.allclose(got, torch.stack([ref[i], ref[5 + i]]), atol=1e-4)


def test_a_dpo_stage_computes_the_reference_of_its_own_batches_once(tiny_config, monkeypatch):
    tiny_config.steps_per_task, tiny_config.batch_size = 3, 4
    stage = _stage(tiny_config)
    start = copy.deepcopy(stage.model)
    tables, trained = [], []
    reference_logprobs, loss = train.reference_logprobs, train._loss

    def spy_reference(stage, pairs):
        tables.append(reference_logprobs(stage, pairs))
        return tables[-1]

    def spy_loss(model, reference, batch, *args):
        trained.extend(batch)
        return loss(model, reference, batch, *args)

    monkeypatch.setattr(train, "reference_logprobs", spy_reference)
    monkeypatch.setattr(train, "_loss", spy_loss)
    method = Method()
    result = train.train_task(stage.model, stage, method, stage.accelerator, "dpo")
    (table,) = tables
    # The pairs of the 3 batches of 4 the stage trains on, not the whole training set.
    assert set(table) == {train._pair_key(e) for e in trained} and len(table) == 12
    assert 0 < result["padded_fraction"] < 1
    # The reference is the model as the stage began.
    some = [e for e in stage.data.train if train._pair_key(e) in table][:3]
    inputs = collate(stage.tokenizer, train._with_rejected(some), tiny_config.max_length)
    with torch.no_grad():
        expected = _full_logits_logprobs(start.eval(), inputs)
    got = torch.stack([table[train._pair_key(e)] for e in some])
    assert torch.allclose(got, expected.view(2, 3).T, atol=1e-4)


def test_the_first_step_starts_at_log_two(tiny_config):
    tiny_config.steps_per_task = 1
    stage = _stage(tiny_config)
    result = train.train_task(stage.model, stage, Method(), stage.accelerator, "dpo")
    assert result["final_loss"] == pytest.approx(math.log(2), abs=1e-4)


class _DrawsTrainingPairs(Method):
    """Replaces every batch by the last pairs of the training set."""

    def training_batch(self, batch, stage):
        return stage.data.train[-len(batch) :]


def test_pairs_a_method_draws_need_draws_current_task(tiny_config):
    tiny_config.steps_per_task, tiny_config.batch_size = 2, 2
    stage = _stage(tiny_config, train_size=40)
    with pytest.raises(ClbenchError, match="draws_current_task = True"):
        train.train_task(stage.model, stage, _DrawsTrainingPairs(), stage.accelerator, "dpo")

    class Declared(_DrawsTrainingPairs):
        draws_current_task = True  # the reference of every training pair

    result = train.train_task(stage.model, stage, Declared(), stage.accelerator, "dpo")
    assert result["steps"] == 2
    assert create_method("joint").draws_current_task
