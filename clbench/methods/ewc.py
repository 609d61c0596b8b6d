import random
from dataclasses import dataclass

import torch

from clbench.methods import Method, Stage, Step


class EWC(Method):
    """Elastic Weight Consolidation (Kirkpatrick et al., 2017, "Overcoming catastrophic
    forgetting in neural networks", PNAS); online variant: Schwarz et al., 2018, "Progress &
    Compress: A scalable framework for continual learning", ICML.

    After each task, a diagonal Fisher F of the trainable parameters is estimated from the
    squared gradients of the per-example loss on `fisher_examples` of that task's training
    examples (the empirical Fisher, one backward pass per example), and the parameters theta*
    are kept as the anchor. Later tasks add lambda/2 * sum F (theta - theta*)^2 to the loss.

    Without `online`, the penalty is the original sum over earlier tasks t of
    lambda/2 * sum F_t (theta - theta*_t)^2. A sum of diagonal quadratics is one diagonal
    quadratic, so it is kept merged: F = sum F_t, anchor = sum F_t theta*_t / F; the penalty
    differs from the per-task sum by a constant, so its gradients are the same, and the memory
    stays at two copies of the trainable parameters whatever the number of tasks. With
    `online`, F = gamma * F + F_t and the anchor is the latest task's parameters.
    Only parameters with requires_grad are regularised, so it works with LoRA as well.

    Simplification: the empirical Fisher (gradients of the gold targets' loss, each example's
    loss being its mean over target tokens) stands in for the true Fisher, which samples the
    outputs from the model. No task identity at inference; extra memory: the Fisher and the
    anchor, one value each per trainable parameter.
    """

    name = "ewc"
    extra_memory = "diagonal Fisher and anchor weights (two copies of the trainable parameters)"

    @dataclass
    class Params:
        ewc_lambda: float = 1000.0
        fisher_examples: int = 64
        online: bool = False
        gamma: float = 1.0  # decay of the earlier Fisher in online EWC

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def before_task(self, stage: Stage) -> None:
        device = next(stage.model.parameters()).device  # a resumed state arrives on the CPU
        self.fisher = {k: v.to(device) for k, v in self.fisher.items()}
        self.anchor = {k: v.to(device) for k, v in self.anchor.items()}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """lambda/2 * sum F (theta - anchor)^2 over the regularised parameters."""
        terms = [
            (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
            for n, p in model.named_parameters()
            if n in self.fisher
        ]
        return self.params.ewc_lambda / 2 * sum(terms)

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        return loss + self.penalty(stage.model) if self.fisher else loss

    def estimate_fisher(self, stage: Stage) -> dict[str, torch.Tensor]:
        """Mean squared per-example gradient of the task loss, on a seeded sample of examples."""
        model = stage.model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        rng = random.Random(f"ewc:{stage.seed}:{stage.index}")
        examples = stage.data.train
        examples = rng.sample(examples, min(self.params.fisher_examples, len(examples)))
        fisher = {n: torch.zeros_like(p) for n, p in named}
        training = model.training
        model.eval()  # no dropout in the estimate
        for example in examples:
            grads = torch.autograd.grad(
                stage.loss([example], backward=True), [p for _, p in named], allow_unused=True
            )
            for (n, _), g in zip(named, grads, strict=True):
                if g is not None:
                    fisher[n] += g.detach() ** 2 / len(examples)
        model.train(training)
        return fisher

    def after_task(self, stage: Stage) -> None:
        fisher = self.estimate_fisher(stage)
        theta = {n: p.detach().clone() for n, p in stage.model.named_parameters() if n in fisher}
        if not self.fisher:
            self.fisher, self.anchor = fisher, theta
        elif self.params.online:
            self.fisher = {n: self.params.gamma * self.fisher[n] + fisher[n] for n in fisher}
            self.anchor = theta
        else:
            total = {n: self.fisher[n] + fisher[n] for n in fisher}
            self.anchor = {
                n: torch.where(
                    total[n] > 0,
                    (self.fisher[n] * self.anchor[n] + fisher[n] * theta[n]) / total[n],
                    theta[n],
                )
                for n in fisher
            }
            self.fisher = total

    def state_dict(self) -> dict:
        return {
            **{f"fisher.{n}": f for n, f in self.fisher.items()},
            **{f"anchor.{n}": a for n, a in self.anchor.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.fisher = {k[len("fisher.") :]: v for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[len("anchor.") :]: v for k, v in state.items() if k.startswith("anchor.")}
