"""The loss guard (docs/reliability.md): a loss that is not finite stops training at once, and
a stage whose loss ends far above where it started is flagged as diverged in results.json."""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator

from clbench.errors import ClbenchError
from clbench.methods import Stage

# A stage diverged if its last loss is above this many times its first.
DIVERGENCE_FACTOR = 2.0


class LossError(ClbenchError):
    """Training produced a NaN or infinite loss."""


def check_loss(value: float, stage: Stage, step: int, accelerator: Accelerator) -> None:
    """Raise a LossError if the loss of optimizer step `step` (from 1) is not finite on any
    process; every process checks, so none is left waiting for the others."""
    bad = not math.isfinite(value)
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(bad), device=accelerator.device)
        bad = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    if bad:
        raise LossError(
            f"task {stage.data.task.name!r}, stage {stage.index}, step {step}: the training loss "
            f"is {value}; the finished stages are saved and the run can be continued, but a "
            f"loss that is not finite usually means the learning rate is too high (--lr "
            f"{stage.config.lr:g}: try a lower one) or fp16 overflowed (try --mixed-precision no)"
        )


def diverged(stages: list[dict[str, Any]]) -> list[int]:
    """The stages (of state.json's or results.json's `timings.stages`) whose final loss is
    above DIVERGENCE_FACTOR times their first."""
    flagged = []
    for stage in stages:
        first, final = stage.get("first_loss"), stage.get("final_loss")
        if first is not None and final is not None and final > DIVERGENCE_FACTOR * first:
            flagged.append(stage["stage"])
    return flagged
