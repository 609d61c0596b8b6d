from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from clbench.methods import Method, Stage, Step, refuse_peft


def adapter_name(task: int) -> str:
    return f"task{task}"


class OLoRA(Method):
    """O-LoRA (Wang et al., 2023, "Orthogonal Subspace Learning for Language Model Continual
    Learning", Findings of EMNLP).

    Each task gets a new LoRA adapter on every linear layer; the adapters of earlier tasks
    (A and B) are frozen. The loss adds `lambda_orth` x sum over layers and earlier tasks of
    |A_t A_i^T| summed over entries, which pushes the new task's update into a subspace
    orthogonal to the earlier ones, and `lambda_l2` x the L2 norms of the new A and B. At
    inference every adapter is active and their updates add up, which equals the paper's
    merge of the earlier adapters (concatenated along the rank). They are kept as separate
    peft adapters, never merged into the base weights, so each stage's checkpoint holds every
    adapter and `--resume` rebuilds them from the saved count. No task identity at inference;
    extra memory: the frozen adapters of the earlier tasks.

    As in the authors' code, the L2 term is the sum of the (unsquared) Frobenius norms of the
    new A and B, and `lambda_orth` = 0.5, `lambda_l2` = 0 are their defaults. Simplification:
    LoRA sits on every linear layer (the project's convention, as `--peft lora`), not only on
    the attention query and value projections.
    """

    name = "o-lora"
    extra_memory = "a frozen LoRA adapter per earlier task"

    @dataclass
    class Params:
        r: int = 8
        alpha: int = 16
        lambda_orth: float = 0.5
        lambda_l2: float = 0.0

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.adapters = 1  # adapters on the model: one per task begun, the first from the start

    def _config(self) -> LoraConfig:
        return LoraConfig(
            r=self.params.r,
            lora_alpha=self.params.alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        refuse_peft(model, "o-lora", "adds its own LoRA adapters")
        model = get_peft_model(model, self._config(), adapter_name=adapter_name(1))
        for task in range(2, self.adapters + 1):  # on --resume: the saved stages' adapters
            model.add_adapter(adapter_name(task), self._config())
        self._activate(model)
        return model

    def before_task(self, stage: Stage) -> None:
        if stage.index > self.adapters:  # the first task trains the adapter made in wrap_model
            self.adapters = stage.index
            stage.model.add_adapter(adapter_name(stage.index), self._config())
        self._activate(stage.model)

    def _activate(self, model: PeftModel) -> None:
        """Every adapter takes part in the forward pass; only the newest one learns."""
        names = [adapter_name(task) for task in range(1, self.adapters + 1)]
        model.base_model.set_adapter(names)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad = f".{names[-1]}." in name

    def _layers(self, model: torch.nn.Module) -> list[LoraLayer]:
        return [m for m in model.modules() if isinstance(m, LoraLayer) and m.lora_A]

    def orthogonality_loss(self, model: torch.nn.Module) -> torch.Tensor:
        """Sum over layers and earlier adapters of |A_new A_old^T|, entry by entry."""
        new, total = adapter_name(self.adapters), torch.zeros(())
        for layer in self._layers(model):
            a_new = layer.lora_A[new].weight  # (r, d_in)
            for task in range(1, self.adapters):
                a_old = layer.lora_A[adapter_name(task)].weight
                total = total + (a_new @ a_old.T).abs().sum()
        return total

    def l2_loss(self, model: torch.nn.Module) -> torch.Tensor:
        new = adapter_name(self.adapters)
        return sum(
            (layer.lora_A[new].weight.norm() + layer.lora_B[new].weight.norm())
            for layer in self._layers(model)
        )

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        loss = loss + self.params.lambda_orth * self.orthogonality_loss(stage.model)
        if self.params.lambda_l2:
            loss = loss + self.params.lambda_l2 * self.l2_loss(stage.model)
        return loss

    def state_dict(self) -> dict:
        return {"adapters": self.adapters}

    def load_state_dict(self, state: dict) -> None:
        self.adapters = state["adapters"]
