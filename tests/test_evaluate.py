"""The evaluator against naive references: full-vocabulary scoring, one example at a time."""

import json

import pytest
import torch
from accelerate import Accelerator

from clbench.data.encoding import encode_prompt, encode_target
from clbench.data.task import Task
from clbench.evaluation.evaluate import evaluate_task, generate, rank_options
from clbench.training.models import load_model

PROMPTS = ["Review: The soup was great.\nAnswer:", "Is it food?", "A much longer prompt " * 5]


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny-random")
    with torch.no_grad():  # a less uniform model than the initialisation, so ranks differ
        for p in loaded.model.parameters():
            p.mul_(8)
    return loaded


def _naive_scores(model, tokenizer, prompt, options):
    """Sum log p(option | prompt) from a plain forward pass over the whole sequence."""
    scores = []
    for option in options:
        context, cont = encode_prompt(tokenizer, prompt, 10_000), encode_target(tokenizer, option)
        ids = torch.tensor([context + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        scores.append(sum(float(logprobs[len(context) - 1 + i, t]) for i, t in enumerate(cont)))
    return scores


@pytest.mark.parametrize("options", [[" yes", " no"], [" very good", " bad", " so-so indeed"]])
def test_ranking_matches_full_forward(tiny, options):
    model, tokenizer = tiny.model, tiny.tokenizer
    expected = []
    for prompt in PROMPTS:
        scores = _naive_scores(model, tokenizer, prompt, options)
        expected.append(max(range(len(options)), key=lambda i: (scores[i], -i)))
    for batch_size in (1, 2, 8):
        got = rank_options(
            model, tokenizer, PROMPTS, options, batch_size, 512, torch.device("cpu"), "t"
        )
        assert got == expected


def test_shared_prompt_scores_equal_full_forward_log_likelihoods(tiny):
    from clbench.evaluation.evaluate import _shared_prompt_scores

    model, tokenizer = tiny.model, tiny.tokenizer
    options = [" very good", "x", " bad", " so-so indeed"]  # "x" is one token: no follow-up
    contexts = [encode_prompt(tokenizer, p, 10_000) for p in PROMPTS]
    option_ids = [encode_target(tokenizer, o) for o in options]
    for batch_size in (1, 3):
        scores = _shared_prompt_scores(
            model,
            contexts,
            option_ids,
            tokenizer.pad_token_id,
            batch_size,
            torch.device("cpu"),
            "t",
        )
        for row, prompt in enumerate(PROMPTS):
            expected = _naive_scores(model, tokenizer, prompt, options)
            assert scores[row].tolist() == pytest.approx(expected, abs=1e-4)


def test_batched_generation_equals_one_at_a_time(tiny):
    model, tokenizer = tiny.model, tiny.tokenizer
    alone = [
        generate(model, tokenizer, [p], 6, 1, 512, torch.device("cpu"), "t")[0] for p in PROMPTS
    ]
    batched = generate(model, tokenizer, PROMPTS, 6, 3, 512, torch.device("cpu"), "t")
    assert batched == alone
    assert all(isinstance(text, str) for text in batched)


def test_generative_task_scores_exact_match(tiny, tmp_path):
    folder = tmp_path / "instruction_tuning" / "echo"
    folder.mkdir(parents=True)
    records = [
        {"instruction": "Repeat the word.", "input": w, "output": w, "task": "echo"}
        for w in ["cat", "dog", "sun", "sea", "sky"]
    ]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    task = Task.from_dict(
        {
            "name": "echo",
            "family": "instruction_tuning",
            "source": {"dataset": "echo"},
            "prompt": "{instruction}\n{input}\n",
            "target": "{output}",
            "max_new_tokens": 3,
            "metric": "exact_match",
        }
    )
    data = task.load(str(tmp_path))
    assert data.options is None and [e.target for e in data.test] == [
        "cat",
        "dog",
        "sun",
        "sea",
        "sky",
    ]
    predicted = generate(
        tiny.model,
        tiny.tokenizer,
        [e.prompt for e in data.test],
        3,
        2,
        512,
        torch.device("cpu"),
        "t",
    )
    cut = [p.split("\n")[0].strip() for p in predicted]  # generation stops at a newline
    expected = sum(p == e.target for p, e in zip(cut, data.test, strict=True)) / 5
    scores = evaluate_task(tiny.model, tiny.tokenizer, data, Accelerator(cpu=True), 2, 512)
    assert scores == {"exact_match": expected}
