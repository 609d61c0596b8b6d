"""LAMOL: pseudo-examples of earlier tasks come from the model's own samples after the task's
generation marker, parsed at the template boundary; every trained example is also trained as
a marked generation sample; only task templates are kept."""

import pytest
import torch
from transformers import LlamaForCausalLM

import clbench.methods
import clbench.training.train
from clbench.data.registry import load_task
from clbench.data.task import Example
from clbench.methods import Stage, Step, create_method
from clbench.methods.lamol import parse
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run

TEMPLATE = {"name": "t-pos", "prompt": "{text}\nAnswer:", "target": " {label}"}


def _stage(index, name, tiny_tasks, tiny_config, loaded=None):
    data = load_task(str(tiny_tasks / f"{name}.yaml")).load()
    model, tokenizer = (loaded.model, loaded.tokenizer) if loaded else (None, None)
    return Stage(index, data, model, 0, tokenizer, tiny_config)


def _fake_generate(tokenizer, texts, calls):
    """A stand-in for `generate` that continues row i with texts[i], then EOS."""

    def generate(input_ids, attention_mask, **kwargs):
        calls.append((tokenizer.decode(input_ids[0]), len(input_ids), kwargs))
        rows = [
            [*row.tolist(), *tokenizer(text)["input_ids"], tokenizer.eos_token_id]
            for row, text in zip(input_ids, texts, strict=False)
        ]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])

    return generate


def test_parse_splits_at_the_last_boundary_and_drops_invalid_samples():
    ranked = {**TEMPLATE, "options": [" yes", " no"]}
    assert parse("Review: ok\nAnswer: no", ranked) == Example(
        "Review: ok\nAnswer:", " no", "t-pos", 1
    )
    assert parse("A\nAnswer: no\nAnswer: yes", ranked).prompt == "A\nAnswer: no\nAnswer:"
    assert parse("Review: no boundary yes", ranked) is None
    assert parse("Review: ok\nAnswer: maybe", ranked) is None  # not a label option
    generated = {
        "name": "mt",
        "prompt": "Translate: {src}\nFrench:",
        "target": " {tgt}",
        "options": None,
    }
    assert parse("Translate: cat\nFrench: chat", generated) == Example(
        "Translate: cat\nFrench:", " chat", "mt"
    )
    assert parse("Translate: cat\nFrench: ", generated) is None  # empty target
    assert parse("Something else\nFrench: chat", generated) is None  # not the prompt's start


def test_pseudo_examples_are_parsed_model_samples(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    lamol = create_method("lamol")
    first = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    lamol.before_task(first)
    assert lamol.pseudo == []  # nothing earlier to generate
    lamol.after_task(first)

    texts = [
        "Review: A made-up review.\nAnswer: yes",
        "gibberish without the boundary",
        "Review: Another one.\nAnswer: no",
        "Review: A bad label.\nAnswer: perhaps",
    ]
    calls = []
    loaded.model.generate = _fake_generate(loaded.tokenizer, texts, calls)
    second = _stage(2, "t-food", tiny_tasks, tiny_config, loaded)
    lamol.before_task(second)
    # ceil(0.2 x 16) = 4 samples, prompted by the earlier task's marker, sampled with top-k.
    assert [(prompt, rows) for prompt, rows, _ in calls] == [("[GEN:t-pos] ", 4)]
    assert calls[0][2]["do_sample"] and calls[0][2]["top_k"] == 20
    assert lamol.pseudo == [
        Example("Review: A made-up review.\nAnswer:", " yes", "t-pos", 0),
        Example("Review: Another one.\nAnswer:", " no", "t-pos", 1),
    ]
    real_prompts = {e.prompt for e in first.data.train}
    assert not real_prompts & {e.prompt for e in lamol.pseudo}

    # The memory holds the task's templates, no example.
    assert lamol.state_dict() == {"tasks": [{**TEMPLATE, "options": [" yes", " no"]}]}

    # Each batch of 4 gets 4 x (2 pseudo / 16 real) = 0.5 pseudo-examples on average.
    added = [len(lamol.training_batch(second.data.train[:4], second)) - 4 for _ in range(200)]
    assert set(added) == {0, 1} and 0.4 < sum(added) / 200 < 0.6


def test_training_loss_adds_the_marked_generation_loss(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    lamol = create_method("lamol", {"gen_lambda": 0.5})
    stage = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    batch = [*stage.data.train[:3], Example("Review: x\nAnswer:", " no", "t-old", 1)]
    total = lamol.training_loss(torch.tensor(1.0), Step(0, batch, None, None), stage)
    assert total.requires_grad  # the generation loss is trained
    marked = [Example("[GEN:t-pos] ", e.prompt + e.target, "t-pos") for e in batch[:3]]
    marked.append(Example("[GEN:t-old] ", "Review: x\nAnswer: no", "t-old"))
    expected = 1 + 0.5 * stage.loss(marked).item()
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_sampling_runs_the_model(tiny_tasks, tiny_config):
    loaded = load_model("tiny-random")
    lamol = create_method("lamol", {"max_gen_tokens": 8})
    stage = _stage(1, "t-pos", tiny_tasks, tiny_config, loaded)
    torch.manual_seed(0)
    texts = lamol.sample(stage, "t-pos", 5)  # more rows than eval_batch_size (4)
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)
    assert len(set(texts)) > 1  # sampled, not greedy
    assert loaded.model.training  # training mode is restored


def test_run_trains_on_pseudo_examples(tiny_tasks, tiny_config, monkeypatch):
    tokenizer = load_model("tiny-random").tokenizer
    calls, batches, generation = [], [], []
    answers = [f"Review: made-up {i}.\nAnswer: {['yes', 'no'][i % 2]}" for i in range(8)]
    fake = _fake_generate(tokenizer, answers, calls)
    monkeypatch.setattr(LlamaForCausalLM, "generate", lambda self, **kw: fake(**kw))
    train_collate, method_collate = clbench.training.train.collate, clbench.methods.collate

    def spy(into, collate):
        return lambda tok, batch, n: into.append(list(batch)) or collate(tok, batch, n)

    monkeypatch.setattr(clbench.training.train, "collate", spy(batches, train_collate))
    monkeypatch.setattr(clbench.methods, "collate", spy(generation, method_collate))
    include = (str(tiny_tasks),)
    tiny_config.method = "lamol"
    whole = load_results(run(tiny_config, include=include))
    assert len(whole["matrix"]) == 4 and all(len(row) == 3 for row in whole["matrix"])

    # Stage 2 samples t-pos; stage 3 samples both earlier tasks, 2 each of ceil(0.2 x 16).
    assert [(prompt, rows) for prompt, rows, _ in calls] == [
        ("[GEN:t-pos] ", 4),
        ("[GEN:t-pos] ", 2),
        ("[GEN:t-food] ", 2),
    ]
    # 4 pseudo-examples per 16 real: exactly one in each batch of 4 after the first stage.
    assert all({e.task for e in b} == {"t-pos"} for b in batches[:3])
    later = [[e for e in b if "made-up" in e.prompt] for b in batches[3:]]
    assert all(len(pseudo) == 1 for pseudo in later)
    assert {e.task for pseudo in later[:3] for e in pseudo} == {"t-pos"}
    assert {e.task for pseudo in later[3:] for e in pseudo} <= {"t-pos", "t-food"}
    # Every trained example, pseudo ones included, is also trained after its task's marker.
    assert len(generation) == len(batches)
    for trained, marked in zip(batches, generation, strict=True):
        expected = [(f"[GEN:{e.task}] ", e.prompt + e.target, e.task) for e in trained]
        assert [(m.prompt, m.target, m.task) for m in marked] == expected
