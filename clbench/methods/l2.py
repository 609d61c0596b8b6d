from dataclasses import dataclass

import torch

from clbench.methods import Method, Stage, Step


class L2(Method):
    """L2 regularisation toward the previous task's solution: the "L2" baseline of
    Kirkpatrick et al., 2017, "Overcoming catastrophic forgetting in neural networks", PNAS
    (EWC with every parameter equally important).

    While training task k > 1, the loss gets lambda/2 * ||theta - theta_{k-1}||^2, where
    theta_{k-1} are the trainable parameters at the end of task k-1. They are copied when task k
    begins, which on --resume is the checkpoint's weights, so nothing needs saving. Only
    parameters with requires_grad are pulled, so it works with LoRA as well.

    No task identity at inference; extra memory: one copy of the trainable parameters.
    """

    name = "l2"
    extra_memory = "one copy of the trainable parameters (the previous task's weights)"

    @dataclass
    class Params:
        l2_lambda: float = 0.01

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.anchor: dict[str, torch.Tensor] = {}

    def before_task(self, stage: Stage) -> None:
        named = stage.model.named_parameters()
        first = stage.index == 1  # the first task has no previous solution to stay near
        self.anchor = {} if first else {n: p.detach().clone() for n, p in named if p.requires_grad}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """lambda/2 * ||theta - anchor||^2 over the anchored parameters."""
        terms = [
            ((p - self.anchor[n]) ** 2).sum()
            for n, p in model.named_parameters()
            if n in self.anchor
        ]
        return self.params.l2_lambda / 2 * sum(terms)

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        return loss + self.penalty(stage.model) if self.anchor else loss
