import dataclasses
import random

from clbench.data.task import Example
from clbench.methods import Method, Stage


class Joint(Method):
    """Joint (multi-task) training, the usual upper bound of continual learning (e.g. Caruana,
    1997, "Multitask Learning", Machine Learning), run cumulatively over the sequence.

    Stage k trains on the union of the training sets of tasks 1..k: every batch is replaced by
    a batch of the same size drawn uniformly, without replacement within the batch, from that
    union, with randomness seeded by (seed, stage index, process). The last row of the matrix is
    therefore multi-task training on every task. Each stage keeps the run's step budget, so it
    matches the sequential methods in compute, not in passes over the union.

    Not a continual learner: it keeps every earlier training example. No task identity at
    inference; extra memory: all earlier tasks' training data.
    """

    name = "joint"
    extra_memory = "all earlier tasks' training examples"
    draws_current_task = True  # its batches come from the pool, this task's data included

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.pool: list[Example] = []  # training examples of the tasks trained so far
        self.rng = random.Random(0)

    def before_task(self, stage: Stage) -> None:
        self.pool += stage.data.train
        # Each process draws its own batches (the loader's sharding is replaced, not kept).
        rank = stage.accelerator.process_index if stage.accelerator else 0
        self.rng = random.Random(f"joint:{stage.seed}:{stage.index}:{rank}")

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        return self.rng.sample(self.pool, len(batch))

    def state_dict(self) -> dict:
        return {"pool": [dataclasses.asdict(x) for x in self.pool]}

    def load_state_dict(self, state: dict) -> None:
        self.pool = [Example(**x) for x in state["pool"]]
