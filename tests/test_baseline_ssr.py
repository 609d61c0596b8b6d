"""SSR: synthetic rehearsal examples written and answered by the model itself."""

import json

import numpy as np

import clbench.training.train
from clbench.data.registry import load_task
from clbench.evaluation.evaluate import generate
from clbench.methods import Stage, create_method
from clbench.methods.ssr import SSR, select
from clbench.results.io import load_results
from clbench.training.models import load_model
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
    ssr = create_method("ssr", ARGS)
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
