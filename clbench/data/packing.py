"""Language-modelling text as token blocks: packed for training, windowed for evaluation.

Training concatenates the documents of a task, each closed by the tokenizer's EOS, in an order
drawn from the run's seed, and cuts the stream into blocks of exactly `max_length` tokens; the
tail shorter than a block is dropped, so no position is padding. Evaluation scores each held-out
document on its own: EOS (the separator training saw before every document) and its tokens, cut
into windows of `max_length` that overlap by one token, so every token and the closing EOS are
predicted exactly once.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

from clbench.data.encoding import encode_target
from clbench.data.task import Example, TaskData
from clbench.errors import ClbenchError

if TYPE_CHECKING:
    from clbench.methods import Method


def pack(tokenizer: Any, texts: list[str], max_length: int, seed: int | str) -> list[list[int]]:
    """Blocks of `max_length` ids from the shuffled, EOS-separated documents."""
    order = list(range(len(texts)))
    random.Random(f"pack:{seed}").shuffle(order)
    stream: list[int] = []
    for i in order:
        stream += [*encode_target(tokenizer, texts[i]), tokenizer.eos_token_id]
    usable = len(stream) - len(stream) % max_length
    return [stream[start : start + max_length] for start in range(0, usable, max_length)]


def packed_tasks(
    tasks: list[TaskData], method: Method, tokenizer: Any, max_length: int, seed: int
) -> list[TaskData]:
    """The run's tasks with the training documents of language-modelling tasks packed, after
    checking that the method can train on blocks next to the other tasks' examples."""
    blocks = [data.task.name for data in tasks if data.task.evaluation == "loss"]
    if blocks and method.needs_prompts:
        raise ClbenchError(
            f"method {method.name!r} makes its training examples from prompts and targets, "
            f"which language-modelling task(s) {', '.join(blocks)} do not have (they train on "
            "packed token blocks); run it on a sequence without language-modelling tasks"
        )
    return [packed_task(data, tokenizer, max_length, seed) for data in tasks]


def packed_task(data: TaskData, tokenizer: Any, max_length: int, seed: int) -> TaskData:
    """`data` with its training documents replaced by packed blocks (a language-modelling task;
    any other task is returned as it is)."""
    task = data.task
    if task.evaluation != "loss":
        return data
    blocks = pack(tokenizer, [e.target for e in data.train], max_length, f"{seed}:{task.name}")
    if not blocks:
        tokens = sum(len(encode_target(tokenizer, e.target)) + 1 for e in data.train)
        raise ClbenchError(
            f"task {task.name!r} ({task.origin}): its {len(data.train)} training document(s) "
            f"hold {tokens} tokens, fewer than one block of --max-length {max_length}, so "
            "packing leaves nothing to train on; add text or lower --max-length"
        )
    train = [Example("", "", task.name, ids=tuple(block)) for block in blocks]
    return dataclasses.replace(data, train=train)


def windows(tokenizer: Any, text: str, max_length: int) -> list[list[int]]:
    """The windows that score `text`: each predicts all its ids but the first."""
    ids = [tokenizer.eos_token_id, *encode_target(tokenizer, text), tokenizer.eos_token_id]
    step = max(1, max_length - 1)
    return [ids[start : start + max_length] for start in range(0, len(ids) - 1, step)]
