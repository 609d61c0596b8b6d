"""Anchored replay: a small reservoir of earlier examples mixed into every batch, plus an L2
pull toward the weights the model had when the current task began."""

import dataclasses
import random
from dataclasses import dataclass

import torch

from clbench.data.task import Example
from clbench.methods import Method, Stage, Step


class AnchoredReplay(Method):
    """Replay (Chaudhry et al., 2019) with an L2 anchor to the previous task's weights.

    No task identity at inference; extra memory: the buffer and one copy of the weights.
    """

    name = "anchored-replay"
    extra_memory = "buffer of training examples, plus one copy of the trainable weights"

    @dataclass
    class Params:
        buffer_size: int = 100
        replay_ratio: float = 0.5
        anchor: float = 0.01  # weight of the L2 penalty

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.buffer: list[Example] = []
        self.anchors: list[torch.Tensor] = []

    def before_task(self, stage: Stage) -> None:
        self.rng = random.Random(f"{stage.seed}:{stage.index}")
        weights = [p for p in stage.model.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in weights] if stage.index > 1 else []

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        count = min(round(len(batch) * self.params.replay_ratio), len(self.buffer))
        return batch + self.rng.sample(self.buffer, count)

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        weights = [p for p in stage.model.parameters() if p.requires_grad]
        drift = sum(((p - a) ** 2).sum() for p, a in zip(weights, self.anchors, strict=False))
        return loss + self.params.anchor * drift

    def after_task(self, stage: Stage) -> None:
        keep = self.params.buffer_size // stage.index  # an equal share for every task so far
        by_task = [
            [e for e in self.buffer if e.task == t]
            for t in dict.fromkeys(e.task for e in self.buffer)
        ]
        self.buffer = [e for group in by_task for e in group[:keep]]
        self.buffer += self.rng.sample(stage.data.train, min(keep, len(stage.data.train)))

    def state_dict(self) -> dict:
        return {"buffer": [dataclasses.asdict(e) for e in self.buffer]}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = [Example(**e) for e in state["buffer"]]
