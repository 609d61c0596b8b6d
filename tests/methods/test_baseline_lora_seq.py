"""lora-seq: one LoRA adapter trained through the sequence, the base model frozen."""

import torch

import clbench.training.runner
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run


def test_only_the_adapter_learns(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    tiny_config.method = "lora-seq"
    tiny_config.method_args = {"r": 4, "alpha": 8}
    base = {n: p.detach().clone() for n, p in load_model("tiny-random").model.named_parameters()}
    after = {}  # stage -> every tensor of the model after training it
    real = clbench.training.runner.train_task

    def spy(model, stage, *args):
        result = real(model, stage, *args)
        after[stage.index] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return result

    monkeypatch.setattr(clbench.training.runner, "train_task", spy)
    whole = load_results(run(tiny_config, include=include))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])
    assert whole["method"]["hyperparameters"] == {"r": 4, "alpha": 8, "dropout": 0.0}
    assert 0 < whole["model"]["trainable_parameters"] < whole["model"]["parameters"]

    final = after[3]
    lora = {n: p for n, p in final.items() if "lora_" in n}
    frozen = {n: p for n, p in final.items() if "lora_" not in n}
    assert lora and len(frozen) == len(base)
    for name, value in frozen.items():  # peft names: base_model.model.<original>[.base_layer]
        original = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, base[original]), name
    assert all(p.shape[0] == 4 for n, p in lora.items() if "lora_A" in n)  # rank r
    # One adapter keeps learning through the sequence: it changes in every stage.
    for stage in (2, 3):
        assert any(not torch.equal(p, after[stage - 1][n]) for n, p in after[stage].items())
