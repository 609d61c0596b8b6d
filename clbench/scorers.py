"""Per-task metrics: each turns a task's predictions and references into one score in [0, 1].

Ranked tasks give predictions as option indices; generative tasks give the generated strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Exact string match after stripping surrounding white space."""
    pairs = zip(predictions, references, strict=True)
    return sum(p.strip() == r.strip() for p, r in pairs) / len(references)


SCORERS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "exact_match": exact_match,
}
