"""The next-token loss on target tokens only.

The decoder runs over every position of a batch, but the LM head (tens of thousands of words
wide) runs only where a target token is predicted: the model is asked for those logits with a
boolean `logits_to_keep` mask, so heads that scale or cap their logits keep doing so. Position
i predicts the token labelled at i + 1, as in the causal LM loss of `transformers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clbench.errors import ClbenchError

IGNORE = -100  # the label of a token that carries no loss (prompt, padding)


@dataclass
class TargetLogits:
    """The model's logits where a target token is predicted, in row-major order (row by row,
    left to right)."""

    logits: torch.Tensor  # (targets, vocab)
    targets: torch.Tensor  # (targets,): the token each row of `logits` predicts
    rows: torch.Tensor  # (targets,): the batch row each one belongs to
    keep: torch.Tensor  # (rows, prepended + length) bool: the `logits_to_keep` mask used

    def loss(self) -> torch.Tensor:
        """The mean cross-entropy over the batch's target tokens."""
        return F.cross_entropy(self.logits.float(), self.targets)

    def split(self, rows: int) -> tuple[TargetLogits, TargetLogits]:
        """The targets of the first `rows` rows, and those of the rest (renumbered from 0)."""
        cut = int((self.rows < rows).sum())  # row-major: the first rows' targets come first
        first = TargetLogits(
            self.logits[:cut], self.targets[:cut], self.rows[:cut], self.keep[:rows]
        )
        rest = TargetLogits(
            self.logits[cut:], self.targets[cut:], self.rows[cut:] - rows, self.keep[rows:]
        )
        return first, rest

    def row_logprobs(self, rows: int) -> torch.Tensor:
        """(rows,): the summed log-probability of each row's target tokens."""
        logprobs = torch.log_softmax(self.logits.float(), dim=-1)
        picked = logprobs.gather(-1, self.targets.unsqueeze(-1)).squeeze(-1)
        return torch.zeros(rows, device=picked.device).index_add(0, self.rows, picked)


def prepended_positions(model: torch.nn.Module) -> int:
    """Positions the model puts before the input: a PEFT prompt-tuning (or p-tuning) adapter
    prepends its virtual tokens. Prefix tuning keeps its own in the KV cache instead."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not config.is_prompt_learning:
        return 0
    from peft import PeftType

    if config.peft_type in (PeftType.PREFIX_TUNING, PeftType.CARTRIDGE):
        return 0
    return config.num_virtual_tokens


def target_logits(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], prepended: int = 0
) -> TargetLogits:
    """Run `model` (possibly a DDP wrapper) on right-padded `inputs` (input_ids,
    attention_mask, labels) and return its logits at the target positions only; `prepended`
    is `prepended_positions` of the unwrapped model."""
    labels = inputs["labels"]
    targets_at = labels[:, 1:] != IGNORE
    keep = torch.zeros(
        labels.shape[0], prepended + labels.shape[1], dtype=torch.bool, device=labels.device
    )
    keep[:, prepended:-1] = targets_at
    logits = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    count = int(targets_at.sum())
    if logits.dim() != 2 or logits.shape[0] != count:
        raise ClbenchError(
            f"model {type(model).__name__} returned logits of shape {tuple(logits.shape)} for a "
            f"boolean logits_to_keep mask of {count} positions; clbench trains causal LMs whose "
            "forward slices with transformers' slice_logits_to_keep"
        )
    return TargetLogits(logits, labels[:, 1:][targets_at], targets_at.nonzero()[:, 0], keep)
