"""The evaluator against naive references: full-vocabulary scoring, one example at a time, and
transformers' own greedy `generate`; stop strings, end-of-sequence and characters cut short."""

import codecs
import json
import re

import pytest
import torch
from accelerate import Accelerator

from clbench.data.encoding import encode_prompt, encode_target, pad_left
from clbench.data.task import Task
from clbench.evaluation.evaluate import (
    TokenCounts,
    _cut,
    _stop_reached,
    counting,
    evaluate_task,
    generate,
    rank_options,
)
from clbench.training.models import load_model

PROMPTS = ["Review: The soup was great.\nAnswer:", "Is it food?", "A much longer prompt " * 5]
CPU = torch.device("cpu")
GENERATION_PROMPTS = [*PROMPTS, "x"]  # "x": one token, the shortest prompt


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


def hf_generate(model, tokenizer, prompts: list[str], new: int, max_length: int) -> list[list[int]]:
    """The new token ids of transformers' greedy `generate`, one prompt at a time."""
    outputs = []
    for prompt in prompts:
        batch = pad_left([encode_prompt(tokenizer, prompt, max_length - new)], 0)
        batch.pop("position_ids")
        ids = model.generate(
            **batch,
            max_new_tokens=new,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )[0, batch["input_ids"].shape[1] :].tolist()
        outputs.append([i for i in ids if i != tokenizer.eos_token_id])
    return outputs


def without_cut_end(tokenizer, ids: list[int]) -> str:
    """The decoded text less its last U+FFFD (up to 3): the random model often emits bytes that
    are no UTF-8, and only a character cut short at the end is left out."""
    return re.sub("\ufffd{1,3}$", "", tokenizer.decode(ids))


def byte_text(tokenizer, ids: list[int]) -> str:
    """The tiny tokenizer's ids (one byte each) decoded as UTF-8, holding back a character cut
    short at the end, as an incremental decoder does; invalid bytes become U+FFFD."""
    to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    data = bytes(to_byte[t] for t in tokenizer.convert_ids_to_tokens(ids))
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character map, which the ByteLevel pre-tokenizer uses."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in visible:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def test_greedy_decoding_equals_transformers_generate(tiny):
    model, tokenizer = tiny.model, tiny.tokenizer
    expected = [
        without_cut_end(tokenizer, ids)
        for ids in hf_generate(model, tokenizer, GENERATION_PROMPTS, 12, 512)
    ]
    for batch_size in (1, 2, 4):
        assert (
            generate(model, tokenizer, GENERATION_PROMPTS, 12, batch_size, 512, CPU, "t")
            == expected
        )


def test_rows_stop_at_their_stop_string_with_the_same_cut_text(tiny):
    model, tokenizer = tiny.model, tiny.tokenizer
    reference = [
        without_cut_end(tokenizer, ids)
        for ids in hf_generate(model, tokenizer, GENERATION_PROMPTS, 16, 512)
    ]
    # Two-character stop strings that continuations hold early on (the random model also emits
    # rows of invalid bytes only, which then run to the end).
    windows = [next(_clean_pairs(text), None) for text in reference]
    stops = sorted({w for w in windows if w})
    assert len(stops) >= 2
    counts = {stop: TokenCounts() for stop in (True, False)}
    with counting(counts[True]):
        texts = generate(model, tokenizer, GENERATION_PROMPTS, 16, 4, 512, CPU, "t", stop=stops)
    with counting(counts[False]):
        whole = generate(model, tokenizer, GENERATION_PROMPTS, 16, 4, 512, CPU, "t")
    assert [_cut(t, stops) for t in texts] == [_cut(t, stops) for t in reference]
    for text, full, window in zip(texts, whole, windows, strict=True):
        assert text == full if window is None else full.startswith(text) and text != full
    assert counts[True].real < counts[False].real  # finished rows left the batch


def _clean_pairs(text: str):
    """Two-character windows from the fourth character on, without U+FFFD."""
    for i in range(3, len(text) - 1):
        if "\ufffd" not in text[i : i + 2]:
            yield text[i : i + 2]


def test_a_later_stop_string_that_starts_earlier_is_waited_for():
    # _cut("xabc", ["abc", "b"]) is "x": after "xab" the text may still become "xabc".
    assert not _stop_reached("xab", ["abc", "b"])
    assert _stop_reached("xabc", ["abc", "b"])
    assert _stop_reached("xabcd", ["b", "abc"])
    assert _stop_reached("a\n", ["\n"]) and not _stop_reached("a", ["\n"])
    assert not _stop_reached("anything", [])


class ForcedTokens:
    """A forward hook on the LM head: the k-th call predicts the k-th of `tokens`."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens, self.calls = tokens, 0

    def __call__(self, module, inputs, logits):
        forced = torch.full_like(logits, -1e4)
        forced[..., self.tokens[self.calls]] = 0
        self.calls += 1
        return forced


@pytest.mark.parametrize(
    ("new", "expected"), [(1, "a"), (2, "a"), (3, "aé"), (5, "aé"), (6, "aé€")]
)
def test_a_character_cut_short_is_left_out(tiny, new, expected):
    model, tokenizer = tiny.model, tiny.tokenizer
    tokens = encode_target(tokenizer, "aé€")  # 1 + 2 + 3 byte tokens
    assert len(tokens) == 6
    hook = model.lm_head.register_forward_hook(ForcedTokens(tokens))
    try:
        (text,) = generate(model, tokenizer, ["Say it:"], new, 1, 64, CPU, "t")
    finally:
        hook.remove()
    assert text == expected == byte_text(tokenizer, tokens[:new])
    assert "\ufffd" not in text


def test_decoding_ends_at_end_of_sequence(tiny):
    model, tokenizer = tiny.model, tiny.tokenizer
    tokens = [*encode_target(tokenizer, "ok"), tokenizer.eos_token_id]
    forced = ForcedTokens(tokens + [tokens[0]] * 10)
    hook = model.lm_head.register_forward_hook(forced)
    try:
        (text,) = generate(model, tokenizer, ["Say it:"], 10, 1, 64, CPU, "t")
    finally:
        hook.remove()
    assert text == "ok"
    assert forced.calls == 3  # no step after the end-of-sequence token
