import dataclasses
import random
from dataclasses import dataclass

import torch

from clbench.data.task import Example
from clbench.methods import Method, Stage


class AGEM(Method):
    """Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach and Elhoseiny, 2019,
    "Efficient Lifelong Learning with A-GEM", ICLR).

    After each task, `memory_per_task` of its training examples, drawn uniformly at random,
    join the episodic memory. While training a later task, after every backward pass a
    reference gradient g_ref is computed on `sample_size` examples drawn from the whole memory;
    if the batch gradient g conflicts with it (g . g_ref < 0), g is projected to
    g - (g . g_ref / g_ref . g_ref) g_ref, so the step does not increase the memory loss to
    first order. g and g_ref are the flattened gradients of all trainable parameters, so it
    works with LoRA as well.

    Under several processes each process draws its own memory sample, and the reference
    gradient is averaged across processes (as the batch gradient is) before the projection, so
    every process projects the same way. No task identity at inference; extra memory: the
    stored examples (memory_per_task per earlier task).
    """

    name = "agem"
    extra_memory = "episodic memory of stored training examples (memory_per_task per task)"

    @dataclass
    class Params:
        memory_per_task: int = 64
        sample_size: int = 16  # memory examples in each reference gradient (per process)

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.memory: list[Example] = []
        self.rng = random.Random(0)

    def before_task(self, stage: Stage) -> None:
        process = stage.accelerator.process_index if stage.accelerator is not None else 0
        self.rng = random.Random(f"agem:{stage.seed}:{stage.index}:{process}")

    def reference_gradient(self, stage: Stage, params: list[torch.nn.Parameter]) -> torch.Tensor:
        """The flattened gradient of the loss on a memory sample, averaged across processes."""
        sample = self.rng.sample(self.memory, min(self.params.sample_size, len(self.memory)))
        # autograd.grad returns the gradients without accumulating them into .grad, so the
        # batch gradient stays as it is.
        grads = torch.autograd.grad(stage.loss(sample, backward=True), params, allow_unused=True)
        flat = _flatten(grads, params)
        return stage.accelerator.reduce(flat, "mean") if stage.accelerator is not None else flat

    def after_backward(self, stage: Stage) -> None:
        if not self.memory:
            return
        params = [p for p in stage.model.parameters() if p.requires_grad]
        reference = self.reference_gradient(stage, params)
        grad = _flatten([p.grad for p in params], params)
        dot = torch.dot(grad, reference)
        if dot >= 0:  # no conflict: the step does not hurt the memory
            return
        # Linear in g: a loss-scaled gradient (fp16) is projected to the scaled projection.
        grad -= dot / torch.dot(reference, reference) * reference
        offset = 0
        for p in params:
            p.grad = grad[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()

    def after_task(self, stage: Stage) -> None:
        rng = random.Random(f"agem-memory:{stage.seed}:{stage.index}")  # same on every process
        train = stage.data.train
        self.memory += rng.sample(train, min(self.params.memory_per_task, len(train)))

    def state_dict(self) -> dict:
        return {"memory": [dataclasses.asdict(x) for x in self.memory]}

    def load_state_dict(self, state: dict) -> None:
        self.memory = [Example(**x) for x in state["memory"]]


def _flatten(grads, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """One float32 vector of the gradients; a missing gradient counts as zeros."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
            for g, p in zip(grads, params, strict=True)
        ]
    )
