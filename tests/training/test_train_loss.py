"""The training loss runs the LM head only at target positions: the same loss and gradients as
the full-logits loss of `transformers`, on plain, LoRA, prompt-tuned and block-expanded
models, and the `Step` that methods see."""

import pytest
import torch
from accelerate import Accelerator

from clbench.data.encoding import collate
from clbench.data.registry import load_task
from clbench.data.task import Example
from clbench.errors import ClbenchError
from clbench.methods import Method, Stage, create_method
from clbench.training import train
from clbench.training.loss import prepended_positions, target_logits
from clbench.training.models import apply_lora, load_model

# Rows of different lengths: the batch is right-padded, prompts and targets vary.
EXAMPLES = [
    Example("Is this review positive? Great food.\nAnswer:", " yes", "t"),
    Example("x", " a much longer target", "t"),
    Example("A mid-sized prompt\nAnswer:", " no", "t"),
]


def _model(kind: str):
    loaded = load_model("tiny-random")
    model = loaded.model
    if kind == "lora":
        model = apply_lora(model, 4, 8)
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: give the adapter an effect
                torch.nn.init.normal_(param, std=0.5, generator=torch.Generator().manual_seed(1))
    elif kind == "prompt-tuning":
        model = create_method("prompt-tuning", {"num_virtual_tokens": 5}).wrap_model(model)
    elif kind == "block-expansion":
        model = create_method("block-expansion", {"num_new_blocks": 1}).wrap_model(model)
        for param in model.parameters():
            if param.requires_grad:  # the new block starts as the identity: make it act
                torch.nn.init.normal_(param, std=0.2, generator=torch.Generator().manual_seed(2))
    return model, loaded.tokenizer


def _grads(model) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    return grads


@pytest.mark.parametrize("kind", ["plain", "lora", "prompt-tuning", "block-expansion"])
def test_loss_and_gradients_equal_the_full_logits_loss(kind):
    model, tokenizer = _model(kind)
    inputs = collate(tokenizer, EXAMPLES, 64)
    assert (inputs["attention_mask"] == 0).any()  # the batch has padding
    full = model(**inputs).loss  # transformers: the LM head at every position
    full.backward()
    full_grads = _grads(model)
    out = target_logits(model, inputs, prepended_positions(model))
    assert prepended_positions(model) == (5 if kind == "prompt-tuning" else 0)
    loss = out.loss()
    assert float(loss.detach()) == pytest.approx(float(full.detach()), abs=1e-4)
    loss.backward()
    for got, expected in zip(_grads(model), full_grads, strict=True):
        assert torch.allclose(got, expected, atol=1e-5)
    labels = inputs["labels"][:, 1:]
    assert out.logits.shape == (int((labels != -100).sum()), model.config.vocab_size)


def test_the_training_step_loss_is_the_full_logits_loss(tiny_tasks, tiny_config):
    model, tokenizer = _model("plain")
    data = load_task(str(tiny_tasks / "t-pos.yaml")).load()
    stage = Stage(1, data, model, 0, tokenizer, tiny_config, Accelerator(cpu=True))
    seen = []

    class Spy(Method):
        def training_loss(self, loss, step, stage):
            seen.append(step)
            return loss

    loss = train._loss(model, None, EXAMPLES, stage, Spy(), 3, train._Padding())
    inputs = collate(tokenizer, EXAMPLES, tiny_config.max_length)
    assert float(loss) == pytest.approx(float(model(**inputs).loss), abs=1e-4)
    assert float(stage.loss(EXAMPLES)) == pytest.approx(float(loss), abs=1e-6)

    # The step: the logits at the positions that predict a target token, row by row.
    (step,) = seen
    labels = step.inputs["labels"]
    used = labels[:, 1:] != -100
    assert step.number == 3 and step.examples == EXAMPLES
    assert torch.equal(step.targets, labels[:, 1:][used])
    full = model(**step.inputs).logits[:, :-1][used]
    assert torch.allclose(step.logits, full, atol=1e-5)
    ids, mask = step.inputs["input_ids"], step.inputs["attention_mask"]
    again = model(input_ids=ids, attention_mask=mask, logits_to_keep=step.logits_to_keep)
    assert torch.allclose(again.logits, step.logits, atol=1e-6)


def test_a_model_that_ignores_the_mask_is_refused():
    class WholeLogits(torch.nn.Module):
        def forward(self, input_ids, attention_mask, logits_to_keep, use_cache):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7)})()

    inputs = collate(load_model("tiny-random").tokenizer, EXAMPLES, 64)
    with pytest.raises(ClbenchError, match="WholeLogits returned logits of shape"):
        target_logits(WholeLogits(), inputs)


def test_padding_is_counted():
    padding = train._Padding()
    padding.add(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    padding.add(torch.tensor([[1, 0]]))
    assert padding.fraction() == pytest.approx(3 / 10)
    assert train._Padding().fraction() == 0.0
