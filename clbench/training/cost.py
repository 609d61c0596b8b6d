"""What a run costs: the `cost` block of results.json (docs/results-schema.md#cost).

The runner keeps one `Cost` per stage. `train_task` counts the tokens trained on and the
optimizer steps; a method reaches it as `stage.cost` and counts its own work where it does it:
`stage.cost.extra_forward(mask)` for a pass beyond plain training (a teacher, a reference, a
Fisher estimate), with `backward=True` when a gradient is taken through it, and
`stage.cost.generated(n)` for tokens it samples. `Stage.loss` counts its forward pass itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

COUNTERS = (
    "train_tokens",
    "optimizer_steps",
    "generated_tokens",
    "extra_forward_passes",
    "extra_forward_tokens",
    "extra_backward_passes",
    "extra_backward_tokens",
)
SECONDS = ("train_seconds", "eval_seconds", "method_seconds")


def tokens_of(tokens: int | torch.Tensor) -> int:
    """A count of tokens, or the real (non-pad) tokens of an attention mask."""
    return tokens if isinstance(tokens, int) else int(tokens.count_nonzero())


@dataclass
class Cost:
    """Counters of one stage or, added up, of a run; tokens are non-pad tokens."""

    train_tokens: int = 0  # prompt and target tokens of every training batch
    optimizer_steps: int = 0
    generated_tokens: int = 0  # sampled by the method itself (pseudo-samples)
    extra_forward_passes: int = 0  # forward passes beyond plain training
    extra_forward_tokens: int = 0
    extra_backward_passes: int = 0  # those of them that a gradient went through
    extra_backward_tokens: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    method_seconds: float = 0.0  # inside the method's hooks

    def trained(self, tokens: int | torch.Tensor) -> None:
        self.train_tokens += tokens_of(tokens)

    def extra_forward(self, tokens: int | torch.Tensor, backward: bool = False) -> None:
        """One forward pass beyond plain training over `tokens` (a count or an attention
        mask); `backward`: a gradient is taken through it too."""
        count = tokens_of(tokens)
        self.extra_forward_passes += 1
        self.extra_forward_tokens += count
        if backward:
            self.extra_backward_passes += 1
            self.extra_backward_tokens += count

    def generated(self, tokens: int | torch.Tensor) -> None:
        self.generated_tokens += tokens_of(tokens)

    @contextlib.contextmanager
    def method_time(self) -> Iterator[None]:
        """Adds the time spent inside the block to `method_seconds`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.method_seconds += time.perf_counter() - started

    def add(self, other: Cost) -> None:
        for name in (*COUNTERS, *SECONDS):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def reduced(self, accelerator: Accelerator | None) -> Cost:
        """The counters summed over processes (every process does its share of the work);
        the seconds are this process's, wall time being shared."""
        if accelerator is None or accelerator.num_processes == 1:
            return dataclasses.replace(self)
        values = torch.tensor([getattr(self, n) for n in COUNTERS], device=accelerator.device)
        summed = accelerator.reduce(values, "sum").tolist()
        return dataclasses.replace(self, **dict(zip(COUNTERS, map(int, summed), strict=True)))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, content: dict[str, Any] | None) -> Cost:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (content or {}).items() if k in names})


def stored_bytes(value: Any) -> int:
    """Bytes of the state a method keeps: its tensors and modules (parameters and buffers)
    at their size in memory, anything else (stored examples, names) as compact JSON."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, torch.nn.Module):
        tensors = [*value.parameters(), *value.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)
    if isinstance(value, dict):
        return sum(len(str(k)) + stored_bytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(stored_bytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return stored_bytes(dataclasses.asdict(value))
    try:
        return len(json.dumps(value, separators=(",", ":")).encode())
    except TypeError:  # not data (a random generator): not state worth counting
        return 0


def method_state_bytes(method: Any) -> int:
    """`stored_bytes` of every attribute of the method but its hyper-parameters."""
    return sum(stored_bytes(v) for k, v in vars(method).items() if k != "params")


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def record_stage(
    state: dict[str, Any],
    stage: Cost,
    method: Any,
    model: torch.nn.Module,
    base_bytes: int,
    accelerator: Accelerator | None,
) -> None:
    """Add a finished stage's cost to the run's, kept in `state` (state.json) so that a
    resumed run goes on counting; the stored state is the largest after any stage."""
    found = state.get("cost") or {}
    total = Cost.from_json(found)
    total.add(stage.reduced(accelerator))
    added = parameter_bytes(model) - base_bytes  # adapters, prompts, blocks
    state["cost"] = {
        **total.to_json(),
        "method_state_bytes": max(found.get("method_state_bytes", 0), method_state_bytes(method)),
        "method_parameter_bytes": max(found.get("method_parameter_bytes", 0), added),
    }


def cost_block(state: dict[str, Any]) -> dict[str, Any]:
    """results.json's `cost`: the counters, seconds and stored state, and the peak memory."""
    peak = state.get("peak_memory") or {}
    memory = peak.get("cuda_max_allocated_mb") or peak.get("cpu_max_rss_mb")
    return {**state["cost"], "peak_memory_mb": memory}
