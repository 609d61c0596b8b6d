import dataclasses
import math
import random
from dataclasses import dataclass

import torch

from clbench.data.task import Example
from clbench.methods import Method, Stage
from clbench.methods.cpt_rewarm import CPTRewarm


class Joint(Method):
    """Joint (multi-task) training, the usual upper bound of continual learning (e.g. Caruana,
    1997, "Multitask Learning", Machine Learning), run cumulatively over the sequence.

    Stage k trains on the union of the training sets of tasks 1..k: every batch is replaced by
    a batch of the same size drawn uniformly, without replacement within the batch, from that
    union, with randomness seeded by (seed, stage index, process). The last row of the matrix is
    therefore multi-task training on every task. By default each stage continues from the
    previous one and keeps the run's step budget, so it matches the sequential methods in
    compute, not in passes over the union.

    With `from_scratch`, re-training on the union as the upper bound of Ibrahim et al. (2024,
    "Simple and Scalable Strategies to Continually Pre-train Large Language Models"): each
    stage starts again from the weights the run started with (the trainable ones: LoRA's under
    --peft lora) and trains on all the data seen so far, k x steps_per_task optimizer steps in
    stage k (with --epochs, the passes over the union). `warmup_fraction` gives it the
    re-warmed schedule of `cpt-rewarm` (warm-up, then cosine decay to min_lr_ratio x lr) over
    the stage's steps instead of the run's `lr_scheduler`.

    Not a continual learner: it keeps every earlier training example. No task identity at
    inference; extra memory: all earlier tasks' training data (and, with `from_scratch`, a copy
    of the initial trainable weights).
    """

    name = "joint"
    extra_memory = "all earlier tasks' training examples"
    draws_current_task = True  # its batches come from the pool, this task's data included

    @dataclass
    class Params:
        from_scratch: bool = False
        warmup_fraction: float | None = None  # None: the run's lr_scheduler and warmup_steps
        min_lr_ratio: float = 0.1

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.pool: list[Example] = []  # training examples of the tasks trained so far
        self.rng = random.Random(0)
        self.initial: dict[str, torch.Tensor] = {}  # trainable weights at the start (from_scratch)

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # Called before a resumed run's checkpoint is loaded: these are the run's first weights.
        if self.params.from_scratch:
            trainable = model.named_parameters()
            self.initial = {n: p.detach().clone() for n, p in trainable if p.requires_grad}
        return model

    def before_task(self, stage: Stage) -> None:
        self.pool += stage.data.train
        # Each process draws its own batches (the loader's sharding is replaced, not kept).
        rank = stage.accelerator.process_index if stage.accelerator else 0
        self.rng = random.Random(f"joint:{stage.seed}:{stage.index}:{rank}")
        if self.params.from_scratch:
            with torch.no_grad():
                for name, parameter in stage.model.named_parameters():
                    if name in self.initial:
                        parameter.copy_(self.initial[name])

    def stage_steps(self, stage: Stage, steps: int) -> int:
        if not self.params.from_scratch:
            return steps
        if stage.config.steps_per_task is not None:
            return steps * stage.index
        return math.ceil(steps * len(self.pool) / len(stage.data.train))  # passes over the union

    def configure_optimizer(
        self, parameters: list[torch.nn.Parameter], stage: Stage, steps: int
    ) -> tuple[torch.optim.Optimizer, object]:
        if self.params.warmup_fraction is None:
            return super().configure_optimizer(parameters, stage, steps)
        schedule = CPTRewarm.Params(
            warmup_fraction=self.params.warmup_fraction, min_lr_ratio=self.params.min_lr_ratio
        )
        return CPTRewarm(schedule).configure_optimizer(parameters, stage, steps)

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        return self.rng.sample(self.pool, len(batch))

    def state_dict(self) -> dict:
        return {"pool": [dataclasses.asdict(x) for x in self.pool]}

    def load_state_dict(self, state: dict) -> None:
        self.pool = [Example(**x) for x in state["pool"]]
