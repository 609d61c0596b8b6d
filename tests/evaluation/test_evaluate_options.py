"""Option scoring: the one-pass and shared-cache strategies against a plain forward pass over
each (prompt, option), also when prompts are cut to fit `max_length`; the rule between them;
the padded-token count."""

import pytest
import torch
from accelerate import Accelerator

from clbench.data.encoding import encode_prompt, encode_target
from clbench.data.task import Task
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import (
    ONE_PASS_MIN_LONGER_OPTIONS,
    TokenCounts,
    choose_strategy,
    counting,
    evaluate_task,
    option_scores,
    rank_options,
)
from clbench.training.models import apply_lora, load_model

PROMPTS = ["Review: The soup was great.\nAnswer:", "Is it food?", "A much longer prompt " * 5, "x"]
# Mixed lengths: one-token options ("x", "y") among multi-token ones of different lengths.
OPTIONS = [" very good", "x", " bad", " so-so indeed", "y", " ok"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    """The tiny model with weights far from uniform attention: a mask that let one option see
    another would change its score by much more than the tolerance."""
    loaded = load_model("tiny-random")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in loaded.model.parameters():
            weight.normal_(std=0.3, generator=generator)
    loaded.model.eval()
    return loaded


def naive_scores(model, context: list[int], option_ids: list[list[int]]) -> list[float]:
    """Sum log p(option | context), one plain forward pass over context + option each."""
    scores = []
    for ids in option_ids:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context + ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores.append(sum(float(logprobs[len(context) - 1 + i, t]) for i, t in enumerate(ids)))
    return scores


def scores_of(model, contexts, option_ids, batch_size, strategy):
    with torch.inference_mode():
        return option_scores(model, contexts, option_ids, 0, batch_size, CPU, "t", strategy)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("strategy", ["one-pass", "shared-cache"])
def test_strategies_equal_full_forward_log_likelihoods(tiny, attention, strategy):
    model, tokenizer = tiny.model, tiny.tokenizer
    model.set_attn_implementation(attention)
    try:
        contexts = [encode_prompt(tokenizer, p, 10_000) for p in PROMPTS]
        option_ids = [encode_target(tokenizer, o) for o in OPTIONS]
        expected = torch.tensor([naive_scores(model, c, option_ids) for c in contexts])
        for batch_size in (1, 3, 8):
            got = scores_of(model, contexts, option_ids, batch_size, strategy)
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    finally:
        model.set_attn_implementation("sdpa")


def test_prompts_cut_on_the_left_when_prompt_and_options_exceed_max_length(tiny):
    """Each row of the one-pass scorer holds the prompt and every option: far more than
    `max_length`; the prompt is still cut only to leave room for the longest option."""
    model, tokenizer = tiny.model, tiny.tokenizer
    max_length = 24
    prompts = [p + " and then some more words" for p in PROMPTS]
    option_ids = [encode_target(tokenizer, o) for o in OPTIONS]
    longest = max(len(ids) for ids in option_ids)
    full = [encode_prompt(tokenizer, p, 10_000) for p in prompts]
    assert all(len(ids) + sum(len(o) for o in option_ids) > max_length for ids in full)
    cut = [ids[-(max_length - longest) :] for ids in full]  # the left is dropped
    assert any(len(c) < len(f) for c, f in zip(cut, full, strict=True))
    expected = torch.tensor([naive_scores(model, c, option_ids) for c in cut])
    contexts = [encode_prompt(tokenizer, p, max_length - longest) for p in prompts]
    assert contexts == cut
    for strategy in ("one-pass", "shared-cache"):
        got = scores_of(model, contexts, option_ids, 2, strategy)
        assert torch.allclose(got, expected, atol=1e-4), (strategy, (got - expected).abs().max())
    assert choose_strategy(model, option_ids) == "one-pass"
    ranked = rank_options(model, tokenizer, prompts, OPTIONS, 2, max_length, CPU, "t")
    assert ranked == [max(range(len(OPTIONS)), key=lambda i: (row[i], -i)) for row in expected]


@pytest.mark.parametrize("max_length", [3, 1])
def test_options_that_fill_max_length_are_refused_not_scored_on_the_whole_prompt(tiny, max_length):
    """With no room left for the prompt, `ids[-0:]` used to keep all of it, past max_length."""
    options = [" so-so indeed", " bad"]
    longest = max(len(encode_target(tiny.tokenizer, o)) for o in options)
    assert longest >= max_length
    with pytest.raises(ClbenchError, match="no room for the prompt"):
        rank_options(tiny.model, tiny.tokenizer, PROMPTS, options, 2, max_length, CPU, "t")


def test_one_pass_scores_a_lora_model(tiny):
    loaded = load_model("tiny-random")
    torch.manual_seed(0)
    model = apply_lora(loaded.model, r=4, alpha=8).eval()
    with torch.no_grad():  # LoRA's B starts at zero; give the adapter an effect
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    contexts = [encode_prompt(tiny.tokenizer, p, 10_000) for p in PROMPTS]
    option_ids = [encode_target(tiny.tokenizer, o) for o in OPTIONS]
    expected = torch.tensor([naive_scores(model, c, option_ids) for c in contexts])
    got = scores_of(model, contexts, option_ids, 4, "one-pass")
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_auto_runs_one_pass_from_the_named_number_of_longer_options(tiny):
    model = tiny.model
    single, double = [1], [1, 2]
    enough = [double] * ONE_PASS_MIN_LONGER_OPTIONS + [single]
    fewer = [double] * (ONE_PASS_MIN_LONGER_OPTIONS - 1) + [single] * 3
    assert choose_strategy(model, enough) == "one-pass"
    assert choose_strategy(model, fewer) == "shared-cache"
    assert choose_strategy(model, enough, "shared-cache") == "shared-cache"
    assert choose_strategy(model, fewer, "one-pass") == "one-pass"


def test_one_pass_needs_an_attention_that_takes_a_mask(tiny, monkeypatch):
    monkeypatch.setattr(tiny.model.config, "_attn_implementation", "flash_attention_2")
    assert choose_strategy(tiny.model, [[1, 2], [3, 4]]) == "shared-cache"
    with pytest.raises(ClbenchError, match=r"sdpa or eager attention.*'flash_attention_2'"):
        choose_strategy(tiny.model, [[1, 2], [3, 4]], "one-pass")


def test_one_pass_is_not_used_with_a_sliding_window(tiny, monkeypatch):
    monkeypatch.setattr(tiny.model.config, "sliding_window", 16, raising=False)
    assert choose_strategy(tiny.model, [[1, 2], [3, 4]]) == "shared-cache"
    with pytest.raises(ClbenchError, match=r"no sliding window.*sliding window 16"):
        choose_strategy(tiny.model, [[1, 2], [3, 4]], "one-pass")


def test_an_unknown_strategy_is_refused(tiny):
    with pytest.raises(ClbenchError, match="unknown option-scoring strategy 'fast'"):
        scores_of(tiny.model, [[5, 6]], [[1, 2], [3]], 1, "fast")


@pytest.mark.parametrize("strategy", ["one-pass", "shared-cache"])
def test_padded_positions_are_counted(tiny, strategy):
    contexts = [[5] * 3, [6] * 5, [7] * 4]  # sorted 5, 4 | 3: one padding, then none
    option_ids = [[10], [11, 12, 13], [14, 15]]
    counts = TokenCounts()
    with counting(counts):
        scores_of(tiny.model, contexts, option_ids, 2, strategy)
    if strategy == "one-pass":  # each row holds the tail [11, 12, 14] after its context
        assert (counts.real, counts.padding) == (12 + 3 * 3, 1)
    else:  # contexts, then per context the 2 longer options padded to width 2 (1 padding)
        assert (counts.real, counts.padding) == (12 + 3 * 3, 1 + 3 * 1)
    assert counts.padded_fraction == counts.padding / (counts.real + counts.padding)
    assert TokenCounts().padded_fraction == 0.0


def test_evaluate_task_adds_its_positions_to_counts(tiny):
    task = Task.from_dict(
        {
            "name": "t-pos",
            "family": "text_classification",
            "source": {
                "generator": "review_question",
                "args": {"question": "positive", "train_size": 4, "test_size": 6},
            },
            "prompt": "{text}\nAnswer:",
            "target": " {label}",
            "labels": ["yes", "no"],
        }
    )
    data = task.load(None, max_test=6)
    counts = TokenCounts()
    accelerator = Accelerator(cpu=True)
    plain = evaluate_task(tiny.model, tiny.tokenizer, data, accelerator, 4, 256)
    counted = evaluate_task(tiny.model, tiny.tokenizer, data, accelerator, 4, 256, counts)
    assert counted == plain
    # " yes" and " no" are 4 and 3 byte tokens: one pass, with a tail of 3 + 2 tokens a row.
    lengths = [len(encode_prompt(tiny.tokenizer, e.prompt, 256 - 4)) for e in data.test]
    assert counts.real == sum(lengths) + len(lengths) * (3 + 2)
    assert 0 <= counts.padded_fraction < 1
