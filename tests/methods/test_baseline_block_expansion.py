"""block-expansion: identity blocks interleaved into the frozen model, only they train."""

import pytest
import torch

import clbench.training.runner
from clbench.errors import ClbenchError
from clbench.methods import create_method
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run


def test_expanded_model_computes_what_the_original_did():
    loaded = load_model("tiny-random")
    original = load_model("tiny-random").model
    model = create_method("block-expansion", {"num_new_blocks": 2}).wrap_model(loaded.model)
    layers = model.model.layers
    assert model.config.num_hidden_layers == len(layers) == 4
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2, 3]
    # Interleaved: each original block is followed by its zero-output copy.
    assert layers[0] is not layers[1]
    for old, new in zip(original.model.layers, [layers[1], layers[3]], strict=True):
        assert torch.equal(new.self_attn.q_proj.weight, old.self_attn.q_proj.weight)
        assert not new.self_attn.o_proj.weight.any() and not new.mlp.down_proj.weight.any()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("model.layers.1.", "model.layers.3.")) for n in trainable
    )

    ids = torch.tensor([[1, 40, 41, 42, 43], [0, 0, 50, 51, 52]])
    mask = (ids != 0).long()
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=ids, attention_mask=mask).logits,
            original(input_ids=ids, attention_mask=mask).logits,
        )
    # The KV cache holds the new layers too: greedy decoding with the cache is unchanged.
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(
        model.generate(input_ids=ids, attention_mask=mask, **kwargs),
        original.generate(input_ids=ids, attention_mask=mask, **kwargs),
    )


def test_one_new_block_goes_on_top():
    model = create_method("block-expansion", {"num_new_blocks": 1}).wrap_model(
        load_model("tiny-random").model
    )
    assert len(model.model.layers) == 3 and not model.model.layers[2].mlp.down_proj.weight.any()


def test_only_new_blocks_learn(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    tiny_config.method = "block-expansion"
    base = load_model("tiny-random").model.state_dict()
    after = {}
    real = clbench.training.runner.train_task

    def spy(model, stage, *args):
        result = real(model, stage, *args)
        after[stage.index] = {n: p.detach().clone() for n, p in model.state_dict().items()}
        return result

    monkeypatch.setattr(clbench.training.runner, "train_task", spy)
    whole = load_results(run(tiny_config, include=include))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])
    assert whole["model"]["trainable_parameters"] < whole["model"]["parameters"]

    final = after[3]
    for name, value in base.items():  # original layer 1 is layer 2 of the expanded model
        name = name.replace("model.layers.1.", "model.layers.2.")
        assert torch.equal(final[name], value), name
    for index in (1, 3):  # the new blocks learned, their output projections first
        assert final[f"model.layers.{index}.mlp.down_proj.weight"].any()
        assert final[f"model.layers.{index}.self_attn.o_proj.weight"].any()


def test_refuses_too_many_blocks():
    with pytest.raises(ClbenchError, match=r"num_new_blocks must be 1\.\.2"):
        create_method("block-expansion", {"num_new_blocks": 3}).wrap_model(
            load_model("tiny-random").model
        )
