import dataclasses
import random
from dataclasses import dataclass

from clbench.data.task import Example
from clbench.methods import Method, Stage


class Replay(Method):
    """Experience replay with a reservoir buffer (Chaudhry et al., 2019, "On Tiny Episodic
    Memories in Continual Learning"; reservoir sampling: Vitter, 1985).

    After each task, its training examples stream through a reservoir of `buffer_size`
    examples, so every example seen so far is kept with equal probability. While training a
    later task, each batch gets `replay_ratio` x its size extra examples drawn from the buffer.
    No task identity at inference; extra memory: the buffer of stored examples.
    """

    name = "replay"
    extra_memory = "reservoir buffer of stored training examples (buffer_size)"

    @dataclass
    class Params:
        buffer_size: int = 200
        replay_ratio: float = 0.5

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.buffer: list[Example] = []
        self.seen = 0  # examples that have streamed through the reservoir
        self.rng = random.Random(0)

    def before_task(self, stage: Stage) -> None:
        self.rng = random.Random(f"replay:{stage.seed}:{stage.index}")

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        count = min(round(len(batch) * self.params.replay_ratio), len(self.buffer))
        return batch + self.rng.sample(self.buffer, count)

    def after_task(self, stage: Stage) -> None:
        for example in stage.data.train:
            self.seen += 1
            if len(self.buffer) < self.params.buffer_size:
                self.buffer.append(example)
            else:
                slot = self.rng.randrange(self.seen)
                if slot < self.params.buffer_size:
                    self.buffer[slot] = example

    def state_dict(self) -> dict:
        return {"seen": self.seen, "buffer": [dataclasses.asdict(x) for x in self.buffer]}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]
        self.buffer = [Example(**x) for x in state["buffer"]]
