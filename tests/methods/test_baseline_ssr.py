"""SSR: synthetic rehearsal examples written by the base model (or the latest one) and
answered by the latest model."""

import copy
import json

import numpy as np
import pytest
import torch

import clbench.methods.ssr
import clbench.training.train
from clbench.data.registry import load_task
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import generate
from clbench.methods import Stage, create_method
from clbench.methods.ssr import SSR, select
from clbench.results.io import load_results
from clbench.training.models import apply_lora, load_model
from clbench.training.runner import run

ARGS = {"num_demos": 3, "num_candidates": 8, "num_synthetic": 4, "max_new_tokens": 24}


def _stage(index, name, tiny_tasks, loaded, config):
    data = load_task(str(tiny_tasks / f"{name}.yaml")).load()
    return Stage(index, data, loaded.model, 0, loaded.tokenizer, config)


def test_synthetic_examples_are_written_and_answered_by_the_model(
    tiny_tasks, tiny_config, monkeypatch
):
    loaded = load_model("tiny-random")
    model, tokenizer = loaded.model, loaded.tokenizer
    ssr = create_method("ssr", {**ARGS, "synthesizer": "latest"})  # one model does both
    first = _stage(1, "t-pos", tiny_tasks, loaded, tiny_config)
    ssr.before_task(first)
    assert ssr.synthetic == []  # nothing earlier to rehearse
    ssr.after_task(first)
    assert len(ssr.demos) == 3 and all(d in first.data.train for d in ssr.demos)

    calls = []  # (decoded prompts, sampling?) of every generate call
    real = model.generate

    def spy(**kwargs):
        texts = tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True)
        calls.append((texts, kwargs.get("do_sample")))
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    model.train()
    second = _stage(2, "t-food", tiny_tasks, loaded, tiny_config)
    ssr.before_task(second)
    assert model.training  # mode restored

    # Inputs are sampled after demonstrations; each prompt holds two of the stored ones.
    sampled = [texts for texts, sample in calls if sample]
    contexts = [t for texts in sampled for t in texts]
    assert len(contexts) == 8
    demo_prompts = [d.prompt.strip() for d in ssr.demos]
    assert all(sum(p in context for p in demo_prompts) == 2 for context in contexts)

    synthetic = ssr.synthetic
    assert len(synthetic) == 4 and len({x.prompt for x in synthetic}) == 4
    assert {x.task for x in synthetic} == {"t-pos"}
    real_prompts = {e.prompt.strip() for e in first.data.train + first.data.test}
    assert not real_prompts & {x.prompt for x in synthetic}  # not stored data
    # Refinement: each target is the model's own greedy answer to the synthetic input.
    monkeypatch.setattr(model, "generate", real)
    model.eval()
    answers = generate(model, tokenizer, [x.prompt for x in synthetic], 32, 4, 256, "cpu", "x")
    assert [x.target for x in synthetic] == [a.split("\n")[0] for a in answers]
    assert all(x.target.strip() for x in synthetic)

    batch = ssr.training_batch(second.data.train[:4], second)
    assert batch[:4] == second.data.train[:4] and all(x in synthetic for x in batch[4:])
    assert len(batch) == 6  # replay_ratio 0.5

    restored = SSR(ssr.params)
    restored.load_state_dict(json.loads(json.dumps(ssr.state_dict())))
    assert (restored.demos, restored.synthetic) == (ssr.demos, ssr.synthetic)
    assert restored.answers == ssr.answers


def test_selection_keeps_one_representative_per_cluster():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # Uneven clusters: a random subset of 3 would usually take two from the big one.
    points = np.concatenate(
        [c + rng.normal(0, 0.1, (n, 2)) for c, n in zip(centers, [20, 3, 3], strict=True)]
    )
    picks = select(points, 3, seed=0)
    assert len(set(picks)) == 3
    assert sorted(np.linalg.norm(points[picks][:, None] - centers, axis=2).argmin(axis=1)) == [
        0,
        1,
        2,
    ]
    assert select(points[:2], 3, seed=0) == [0, 1]


def test_run_rehearses_synthetic_examples(tiny_tasks, tiny_config, monkeypatch):
    include = (str(tiny_tasks),)
    batches = []
    real = clbench.training.train.collate
    monkeypatch.setattr(
        clbench.training.train,
        "collate",
        lambda tok, batch, n: batches.append(batch) or real(tok, batch, n),
    )
    tiny_config.method, tiny_config.method_args = "ssr", ARGS
    whole = load_results(run(tiny_config, include=include))
    matrix = whole["matrix"]
    assert len(matrix) == 4 and all(len(row) == 3 for row in matrix)
    assert all(isinstance(cell, float) for row in matrix for cell in row)

    tasks = {n: load_task(str(tiny_tasks / f"{n}.yaml")).load() for n in ["t-pos", "t-food"]}
    real_prompts = {e.prompt for d in tasks.values() for e in d.train + d.test}
    steps = tiny_config.steps_per_task
    assert all({e.task for e in b} == {"t-pos"} for b in batches[:steps])
    for b in batches[steps : 2 * steps]:
        rehearsed = [e for e in b if e.task == "t-pos"]
        assert len(rehearsed) == 2 and not {e.prompt for e in rehearsed} & real_prompts
    later = batches[2 * steps : 3 * steps]
    assert all(len(b) == 6 for b in later)  # 4 of t-neg and 2 rehearsed
    assert {e.task for b in later for e in b} == {"t-pos", "t-food", "t-neg"}


def _sampling(monkeypatch) -> list[tuple[torch.nn.Module, bool, list[str]]]:
    """(model, sampled?, texts) of every generation SSR makes."""
    calls, real = [], clbench.methods.ssr._generate

    def spy(model, *args, **kwargs):
        texts = real(model, *args, **kwargs)
        calls.append((model, bool(kwargs.get("do_sample")), texts))
        return texts

    monkeypatch.setattr(clbench.methods.ssr, "_generate", spy)
    return calls


def _inputs(ssr, model, loaded, tiny_tasks, config, monkeypatch):
    """The model that sampled SSR's second-stage inputs on `model`, the inputs, and the models
    that answered them."""
    calls = _sampling(monkeypatch)
    second = _stage(2, "t-food", tiny_tasks, loaded, config)
    second.model = model
    ssr.before_task(second)
    (sampled,) = [(m, texts) for m, sample, texts in calls if sample]
    return sampled, [m for m, sample, _ in calls if not sample]


def _latest(ssr):
    """An SSR with the same demonstrations whose latest model writes the inputs."""
    latest = create_method("ssr", {**ARGS, "synthesizer": "latest"})
    latest.load_state_dict(ssr.state_dict())
    return latest


def _train(model: torch.nn.Module) -> None:
    """A stand-in for training: every weight moves."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)


def test_the_base_model_writes_the_inputs_and_the_latest_answers(
    tiny_tasks, tiny_config, monkeypatch
):
    loaded = load_model("tiny-random")
    before = copy.deepcopy(loaded.model)  # the base model, untouched
    ssr = create_method("ssr", ARGS)
    assert ssr.params.synthesizer == "base"
    ssr.wrap_model(loaded.model)
    ssr.after_task(_stage(1, "t-pos", tiny_tasks, loaded, tiny_config))
    _train(loaded.model)

    args = (loaded, tiny_tasks, tiny_config, monkeypatch)
    (writer, base_texts), refined = _inputs(ssr, loaded.model, *args)
    assert writer is ssr.base and refined and set(refined) == {loaded.model}
    (_, untouched), _ = _inputs(_latest(ssr), before, *args)
    assert base_texts == untouched  # written by the weights from before training
    (writer, latest_texts), _ = _inputs(_latest(ssr), loaded.model, *args)
    assert writer is loaded.model and latest_texts != base_texts  # the option switches it


def test_with_lora_the_base_is_the_model_with_its_adapters_disabled(
    tiny_tasks, tiny_config, monkeypatch
):
    loaded = load_model("tiny-random")
    before = copy.deepcopy(loaded.model)
    loaded.model = apply_lora(loaded.model, 8, 16)
    ssr = create_method("ssr", ARGS)
    ssr.wrap_model(loaded.model)
    assert ssr.base is None  # no copy kept
    ssr.after_task(_stage(1, "t-pos", tiny_tasks, loaded, tiny_config))
    with torch.no_grad():  # trained adapters: B is no longer zero
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    args = (loaded, tiny_tasks, tiny_config, monkeypatch)
    (writer, base_texts), _ = _inputs(ssr, loaded.model, *args)
    assert writer is loaded.model
    (_, untouched), _ = _inputs(_latest(ssr), before, *args)
    assert base_texts == untouched
    (_, latest_texts), _ = _inputs(_latest(ssr), loaded.model, *args)
    assert latest_texts != base_texts


def test_the_synthesizer_is_described_and_checked():
    base = create_method("ssr").describe()["extra_memory"]
    latest = create_method("ssr", {"synthesizer": "latest"}).describe()["extra_memory"]
    assert "frozen copy of the base model" in base and "copy" not in latest
    with pytest.raises(ClbenchError, match="synthesizer must be 'base' or 'latest', got 'old'"):
        create_method("ssr", {"synthesizer": "old"})
