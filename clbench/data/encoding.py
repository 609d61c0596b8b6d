"""Turning examples into token ids, the same way for training and for evaluation.

The prompt is encoded with the tokenizer's special tokens (a BOS where the model expects one)
and the target without them, then the two id lists are joined. Training and scoring therefore
see exactly the same ids for the same (prompt, target) pair.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from clbench.errors import ClbenchError

if TYPE_CHECKING:
    from clbench.data.task import Example


def encode_prompt(tokenizer: Any, prompt: str, max_tokens: int) -> list[int]:
    """Prompt ids, cut on the left to at most `max_tokens` (the end of a prompt matters most)."""
    if max_tokens < 1:  # `ids[-0:]` would keep the whole prompt
        raise ClbenchError(
            f"max_length leaves no room for the prompt ({max_tokens} tokens): the answer, its "
            "longest option or max_new_tokens takes it all; raise --max-length"
        )
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return ids[-max_tokens:]


def encode_target(tokenizer: Any, target: str) -> list[int]:
    return tokenizer(target, add_special_tokens=False)["input_ids"]


def pad_left(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """A left-padded batch with position ids that start at 0 on every row's first real token."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def collate(tokenizer: Any, batch: list[Example], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ids with the loss on target tokens (and a closing EOS) only; a packed
    block (`example.ids`) is a target throughout."""
    rows = []
    for example in batch:
        if example.ids is not None:
            rows.append((list(example.ids), list(example.ids)))
            continue
        target = [*encode_target(tokenizer, example.target), tokenizer.eos_token_id]
        target = target[: max_length - 1]
        prompt = encode_prompt(tokenizer, example.prompt, max_length - len(target))
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(row_labels)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int | str, bucket: int = 50
) -> list[list[int]]:
    """Batches of indices into `lengths` that need little padding, in an order that is a
    function of `seed` alone: shuffle, cut into buckets of `bucket` batches, sort each bucket
    by length, cut it into batches, and shuffle the batches. Within a bucket, examples of
    similar length share a batch; which examples meet in a bucket stays random."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size, batches = bucket * batch_size, []
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
