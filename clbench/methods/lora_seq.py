from dataclasses import dataclass

import torch

from clbench.methods import Method, refuse_peft
from clbench.training.models import apply_lora


class LoRASeq(Method):
    """Sequential LoRA: one LoRA adapter (Hu et al., 2022, "LoRA: Low-Rank Adaptation of Large
    Language Models", ICLR) on every linear layer, trained on each task in turn.

    The base weights stay frozen; only the adapter learns, through the whole sequence, with
    nothing else to prevent forgetting: the parameter-efficient counterpart of seq-ft. Same
    structure as `--peft lora` with `seq-ft`, with the rank, scale and dropout as
    hyper-parameters. No task identity at inference, no extra memory beyond the adapter.
    """

    name = "lora-seq"

    @dataclass
    class Params:
        r: int = 8
        alpha: int = 16
        dropout: float = 0.0

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        refuse_peft(model, "lora-seq", "adds its own LoRA adapter")
        return apply_lora(model, self.params.r, self.params.alpha, self.params.dropout)
