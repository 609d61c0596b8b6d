import math
import random
from dataclasses import dataclass

import torch

from clbench.data.task import Example
from clbench.methods import Stage
from clbench.methods.replay import Replay


class CPTRewarm(Replay):
    """Continual pre-training with learning-rate re-warming, re-decaying and replay (Ibrahim,
    Therien, Gupta, Richter, Anthony, Lesort, Belilovsky and Rish, 2024, "Simple and Scalable
    Strategies to Continually Pre-train Large Language Models", TMLR).

    Every stage gets the same schedule anew: a linear warm-up from 0 to the run's lr over
    ceil(warmup_fraction x steps) optimizer steps, then a cosine decay towards
    min_lr_ratio x lr at the end of the stage (the paper's eta_min = 0.1 eta_max). The run's
    `lr_scheduler` and `warmup_steps` are not used. Replay is compute-equivalent, as in the
    paper: a fraction `replay_fraction` of every batch is replaced by examples of earlier tasks,
    so the batch size and the compute stay those of the run; a fractional count is rounded up or
    down at random, so the fraction holds on average for small batches too. The earlier
    examples come from the reservoir of `replay` (`buffer_size` examples; the paper replays from
    the whole earlier dataset, the buffer bounds the memory).

    With `rewarm` false, only the first stage gets that schedule and every later stage keeps
    the rate it ended with, min_lr_ratio x lr: the paper's baseline without re-warming (a
    model pretrained with a decayed rate that keeps training at its last rate).

    With `replay_fraction` 0 it is re-warming and re-decaying alone. On language-modelling
    stages the stored and replayed examples are packed token blocks; docs/continual-pretraining.md
    runs the paper's strategies with it.

    No task identity at inference; extra memory: the replay buffer of stored examples.
    """

    name = "cpt-rewarm"
    extra_memory = "reservoir buffer of stored training examples (buffer_size)"

    @dataclass
    class Params:
        warmup_fraction: float = 0.01
        min_lr_ratio: float = 0.1
        replay_fraction: float = 0.25  # the paper's choice for a strong distribution shift
        buffer_size: int = 200
        rewarm: bool = True  # false: stages after the first stay at min_lr_ratio x lr

    def before_task(self, stage: Stage) -> None:
        self.rng = random.Random(f"cpt-rewarm:{stage.seed}:{stage.index}")

    def lr_factor(self, step: int, steps: int) -> float:
        """The learning rate after `step` optimizer steps of a stage, as a fraction of lr."""
        warmup = math.ceil(self.params.warmup_fraction * steps)
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        low = self.params.min_lr_ratio
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))

    def configure_optimizer(
        self, parameters: list[torch.nn.Parameter], stage: Stage, steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        config = stage.config
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        rewarmed = self.params.rewarm or stage.index == 1
        low = self.params.min_lr_ratio
        factor = (lambda s: self.lr_factor(s, steps)) if rewarmed else (lambda s: low)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        if not self.buffer:
            return batch
        share = self.params.replay_fraction * len(batch)
        count = math.floor(share) + (self.rng.random() < share - math.floor(share))
        count = min(count, len(self.buffer))
        return batch[: len(batch) - count] + self.rng.sample(self.buffer, count)
