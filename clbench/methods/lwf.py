from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from clbench.methods import Method, Stage, Step


class LwF(Method):
    """Learning without Forgetting (Li & Hoiem, 2017, "Learning without Forgetting", IEEE
    TPAMI), adapted to causal language models.

    Before each task after the first, the model is frozen as the teacher. While training the
    new task, the loss gets alpha * T^2 * KL(softmax(z_old / T) || softmax(z_new / T)) on the
    new task's own inputs, averaged over the positions that carry the next-token loss (the
    target tokens), where z_new are the current logits and z_old the teacher's. The paper's
    defaults are alpha (its lambda_o) = 1 and T = 2.

    Adaptations: a causal LM shares one output vocabulary across tasks, so there is no new
    task head and no warm-up of it; the teacher's outputs are computed on the fly (in eval mode)
    rather than recorded once before training, which gives the same targets without data
    augmentation. The T^2 factor (Hinton et al., 2015) keeps the gradient scale independent of T.
    The teacher is kept as a copy of the trainable parameters only, run through the current
    module with `torch.func.functional_call`: with LoRA the frozen base is shared, not copied.
    It is copied when a task begins, which on --resume is the checkpoint's weights (a resumed
    run restarts at a task boundary), so the previous model survives --resume without being
    saved twice.

    No task identity at inference; extra memory: a frozen copy of the previous model's
    trainable parameters.
    """

    name = "lwf"
    extra_memory = "frozen copy of the previous model's trainable parameters (the teacher)"

    @dataclass
    class Params:
        alpha: float = 1.0
        temperature: float = 2.0

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.teacher: dict[str, torch.Tensor] = {}

    def before_task(self, stage: Stage) -> None:
        named = stage.model.named_parameters()
        first = stage.index == 1  # nothing learned yet to preserve
        self.teacher = {} if first else {n: p.detach().clone() for n, p in named if p.requires_grad}

    def distillation(self, model: torch.nn.Module, step: Step) -> torch.Tensor:
        """alpha * T^2 * KL(teacher || model) at temperature T, mean over the target positions
        (`step.logits` are the model's logits there; the teacher is asked for the same ones)."""
        training = model.training
        model.eval()
        with torch.no_grad():
            inputs = {k: step.inputs[k] for k in ("input_ids", "attention_mask")}
            old = functional_call(
                model,
                self.teacher,
                kwargs={**inputs, "logits_to_keep": step.logits_to_keep, "use_cache": False},
            ).logits
        model.train(training)
        t = self.params.temperature
        new_logp = F.log_softmax(step.logits.float() / t, dim=-1)
        old_logp = F.log_softmax(old.float() / t, dim=-1)
        kl = F.kl_div(new_logp, old_logp, log_target=True, reduction="batchmean")
        return self.params.alpha * t**2 * kl

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        if not self.teacher or step.logits is None:
            return loss
        stage.cost.extra_forward(step.inputs["attention_mask"])  # the teacher's pass
        return loss + self.distillation(stage.model, step)
