"""What every registered method must do, whatever its mechanism: a run interrupted after each
stage and resumed ends exactly as an uninterrupted one, results.json records what the method
declares, its docstring says it, and `--peft lora` either works or is refused clearly.

A method is tested here by being registered; its own file tests its mechanism."""

import copy
import dataclasses
import json
import re

import pytest
import torch
import yaml

import clbench.training.runner
from clbench.errors import ClbenchError
from clbench.methods import create_method, method_names
from clbench.results.io import load_results
from clbench.training.runner import run

METHODS = sorted(method_names())

# Hyper-parameters that keep a method's tiny run to a few seconds (defaults otherwise).
FAST_ARGS = {
    "agem": {"memory_per_task": 4, "sample_size": 4},
    "ewc": {"fisher_examples": 4},
    "lamol": {"max_gen_tokens": 16},
    "lora-seq": {"r": 4},
    "o-lora": {"r": 4},
    "prompt-tuning": {"num_virtual_tokens": 4},
    "ssr": {"num_demos": 3, "num_candidates": 8, "num_synthetic": 4, "max_new_tokens": 24},
}
# Methods that build their own parameter-efficient structure and so refuse `--peft lora`.
OWN_PEFT = {"block-expansion", "lora-seq", "o-lora", "prompt-tuning"}

PROBE_INPUT = torch.tensor([[1, 40, 41, 42, 43]])  # any fixed token ids


def _observe_the_run(monkeypatch) -> list[tuple[str, object]]:
    """What a resumed run must reproduce, in order: every tensor of the model after each
    stage's training, and at each evaluation the method's state and the model's logits on a
    fixed input (which show the adapter or prompt the method selected)."""
    seen, methods = [], []
    runner = clbench.training.runner
    real_create, real_train, real_eval = (
        runner.create_method,
        runner.train_task,
        runner.evaluate_task,
    )

    def create(*args):
        methods.append(real_create(*args))
        return methods[-1]

    def train(model, stage, *args):
        result = real_train(model, stage, *args)
        seen.append((f"weights after stage {stage.index}", copy.deepcopy(model.state_dict())))
        return result

    def evaluate(model, tokenizer, data, *args):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=PROBE_INPUT).logits
        model.train(was_training)
        state = copy.deepcopy(methods[-1].state_dict())
        seen.append((f"evaluation of {data.task.name}", {"logits": logits, "method": state}))
        return real_eval(model, tokenizer, data, *args)

    monkeypatch.setattr(runner, "create_method", create)
    monkeypatch.setattr(runner, "train_task", train)
    monkeypatch.setattr(runner, "evaluate_task", evaluate)
    return seen


def _assert_same(ours: object, theirs: object, where: str) -> None:
    """Equal to the bit: tensors, and the JSON values of a method's state (lists for tuples)."""
    if isinstance(ours, torch.Tensor):
        assert isinstance(theirs, torch.Tensor) and torch.equal(ours, theirs), where
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        assert sorted(ours) == sorted(theirs), where
        for key in ours:
            _assert_same(ours[key], theirs[key], f"{where}: {key}")
    elif isinstance(ours, (list, tuple)):
        assert isinstance(theirs, (list, tuple)), where
        assert len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _assert_same(a, b, f"{where}: [{index}]")
    else:
        assert ours == theirs, where


@pytest.mark.parametrize("name", METHODS)
def test_a_run_resumed_after_every_stage_ends_as_an_uninterrupted_one(
    name, tiny_tasks, tiny_config, tmp_path, monkeypatch
):
    include = (str(tiny_tasks),)
    tiny_config.method, tiny_config.method_args = name, FAST_ARGS.get(name, {})
    tiny_config.max_test_examples = 4
    seen = _observe_the_run(monkeypatch)
    whole = load_results(run(tiny_config, include=include))
    uninterrupted = list(seen)
    assert len(uninterrupted) == 3 + 4 * 3  # three stages trained, four rows evaluated

    # One stage per invocation: every stage boundary is a resume.
    seen.clear()
    tiny_config.output = str(tmp_path / "interrupted")
    run(tiny_config, include=include, stop_after=1)
    run(tiny_config, include=include, resume=True, stop_after=1)
    resumed = load_results(run(tiny_config, include=include, resume=True, stop_after=1))

    assert resumed["matrix"] == whole["matrix"]
    assert [label for label, _ in seen] == [label for label, _ in uninterrupted]
    for (label, ours), (_, theirs) in zip(seen, uninterrupted, strict=True):
        _assert_same(ours, theirs, label)
    losses = [s.get("final_loss") for s in whole["timings"]["stages"]]
    assert [s.get("final_loss") for s in resumed["timings"]["stages"]] == losses

    # results.json records what the method declares, and the hyper-parameters it ran with.
    method = create_method(name, tiny_config.method_args)
    cls = type(method)
    assert resumed["method"] == whole["method"] == json.loads(json.dumps(method.describe()))
    assert whole["method"]["uses_task_id"] is cls.uses_task_id
    assert whole["method"]["extra_memory"] == cls.extra_memory
    assert whole["method"]["hyperparameters"] == dataclasses.asdict(method.params)


@pytest.mark.parametrize("name", METHODS)
def test_docstring_states_task_identity_and_extra_memory(name):
    cls = type(create_method(name))
    doc = re.sub(r"\s+", " ", cls.__doc__ or "").lower()
    if cls.uses_task_id:
        assert "needs the task identity at inference" in doc
    else:
        assert "no task identity at inference" in doc
    if cls.extra_memory is None:
        assert "no extra memory" in doc or "extra memory: none" in doc
    else:
        assert "extra memory:" in doc and "extra memory: none" not in doc


@pytest.mark.parametrize("name", METHODS)
def test_peft_lora_runs_or_is_refused_before_anything_is_written(name, tiny_tasks, tiny_config):
    # Two tasks: the second is where a method first acts on what the first one learned.
    pair = {"name": "pair", "tasks": ["t-pos", "t-food"]}
    (tiny_tasks / "pair.yaml").write_text(yaml.safe_dump(pair), encoding="utf-8")
    tiny_config.sequence, tiny_config.steps_per_task, tiny_config.max_test_examples = "pair", 2, 4
    tiny_config.method, tiny_config.method_args = name, FAST_ARGS.get(name, {})
    tiny_config.peft, tiny_config.lora_r, tiny_config.lora_alpha = "lora", 4, 8
    include = (str(tiny_tasks),)
    if name in OWN_PEFT:
        with pytest.raises(ClbenchError, match=f"method '{name}' .*; run it without --peft lora"):
            run(tiny_config, include=include)
        assert not any(clbench.training.runner.run_dir_of(tiny_config).glob("*"))
        return
    results = load_results(run(tiny_config, include=include))
    assert results["model"]["peft"] == {"type": "lora", "r": 4, "alpha": 8}
    assert 0 < results["model"]["trainable_parameters"] < results["model"]["parameters"]
    assert len(results["matrix"]) == 3
