"""prompt-tuning: a soft prompt per task, selected by the task id at evaluation."""

import pytest
import torch

import clbench.training.runner
from clbench.data.encoding import encode_prompt, encode_target
from clbench.data.registry import load_task
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import option_scores
from clbench.methods import Stage, create_method
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run


def _prompts(model):
    return {n: p.detach().clone() for n, p in model.prompt_encoder.named_parameters()}


def test_each_task_keeps_its_prompt_and_evaluation_selects_it(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    tiny_config.method = "prompt-tuning"
    tiny_config.method_args = {"num_virtual_tokens": 4}
    base = load_model("tiny-random").model.state_dict()
    before, after, base_after, selected = {}, {}, {}, []
    real_train, real_eval = (
        clbench.training.runner.train_task,
        clbench.training.runner.evaluate_task,
    )

    def train_spy(model, stage, *args):
        before[stage.index] = _prompts(model)
        result = real_train(model, stage, *args)
        after[stage.index] = _prompts(model)
        base_after[stage.index] = model.base_model.state_dict()
        return result

    def eval_spy(model, tokenizer, data, *args):
        selected.append((data.task.name, model.active_adapter))
        return real_eval(model, tokenizer, data, *args)

    monkeypatch.setattr(clbench.training.runner, "train_task", train_spy)
    monkeypatch.setattr(clbench.training.runner, "evaluate_task", eval_spy)
    whole = load_results(run(tiny_config, include=include))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])
    assert whole["model"]["trainable_parameters"] == 4 * 32  # only the last task's prompt

    final = after[3]
    assert sorted(final) == [f"task{k}.embedding.weight" for k in (1, 2, 3)]
    for k in (1, 2, 3):
        key = f"task{k}.embedding.weight"
        assert not torch.equal(after[k][key], before[k][key])  # trained in its own stage
        assert torch.equal(final[key], after[k][key])  # and never after
    for name, value in base.items():  # the model itself never changes
        assert torch.equal(base_after[3][name], value), name

    # The task's own prompt; a task not trained yet gets the latest prompt.
    assert selected == [
        ("t-pos", "task1"), ("t-food", "task1"), ("t-neg", "task1"),  # before training
        ("t-pos", "task1"), ("t-food", "task1"), ("t-neg", "task1"),
        ("t-pos", "task1"), ("t-food", "task2"), ("t-neg", "task2"),
        ("t-pos", "task1"), ("t-food", "task2"), ("t-neg", "task3"),
    ]  # fmt: skip


def test_before_eval_switches_the_prompt_and_the_output(tiny_tasks):
    loaded = load_model("tiny-random")
    method = create_method("prompt-tuning", {"num_virtual_tokens": 3})
    model = method.wrap_model(loaded.model)
    pos, food = (load_task(str(tiny_tasks / f"{n}.yaml")).load() for n in ("t-pos", "t-food"))
    for index, data in enumerate([pos, food], start=1):
        method.before_task(Stage(index, data, model, 0, loaded.tokenizer))
    ids = torch.tensor([[40, 41, 42]])
    logits = {}
    for data in (pos, food):
        method.before_eval(model, data)
        logits[data.task.name] = model(input_ids=ids).logits
    assert model.active_adapter == "task2"
    method.before_eval(model, pos)
    assert model.active_adapter == "task1"
    assert torch.equal(model(input_ids=ids).logits, logits["t-pos"])
    assert not torch.allclose(logits["t-pos"], logits["t-food"])


def test_text_init_copies_the_text_embeddings(tiny_tasks):
    loaded = load_model("tiny-random")
    args = {"num_virtual_tokens": 5, "init": "text", "init_text": "ab"}
    method = create_method("prompt-tuning", args)
    model = method.wrap_model(loaded.model)
    data = load_task(str(tiny_tasks / "t-pos.yaml")).load()
    method.before_task(Stage(1, data, model, 0, loaded.tokenizer))
    ids = loaded.tokenizer("ababa", add_special_tokens=False)["input_ids"]  # repeated to 5
    embeddings = model.get_input_embeddings().weight[ids]
    assert torch.equal(model.prompt_encoder["task1"].embedding.weight, embeddings)


def _score(model, context, option):
    """log p(option | context) from one unpadded forward pass over both."""
    logits = model(input_ids=torch.tensor([context + option])).logits[0]
    positions = range(-len(option) - 1, -1)  # position -(m+1)+i predicts option token i
    return torch.log_softmax(logits, dim=-1)[positions, option].sum()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["y", "n"], id="one-token options"),
        pytest.param([" yes", " no"], id="multi-token options"),
    ],
)
def test_evaluation_scores_options_as_a_full_forward_pass_does(options):
    loaded = load_model("tiny-random")
    model = create_method("prompt-tuning", {"num_virtual_tokens": 4}).wrap_model(loaded.model)
    tokenizer = loaded.tokenizer
    texts = ["Great food\nAnswer:", "No\nAnswer:", "A much longer review\nAnswer:"]
    contexts = [encode_prompt(tokenizer, text, 64) for text in texts]
    option_ids = [encode_target(tokenizer, option) for option in options]
    with torch.inference_mode():
        expected = torch.tensor([[_score(model, c, o) for o in option_ids] for c in contexts])
        args = (tokenizer.pad_token_id, 4, torch.device("cpu"), "t")
        got = option_scores(model, contexts, option_ids, *args)
    # Left padding moves the text away from the soft prompt (peft ignores position_ids).
    assert torch.allclose(got, expected, atol=1e-2)


def test_refuses_an_unknown_init():
    with pytest.raises(ClbenchError, match="init must be"):
        create_method("prompt-tuning", {"init": "vocab"})
