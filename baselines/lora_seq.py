from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from clbench.errors import ClbenchError
from clbench.method import Method


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
        if isinstance(model, PeftModel):
            raise ClbenchError(
                "method 'lora-seq' adds its own LoRA adapter; run it without --peft lora"
            )
        config = LoraConfig(
            r=self.params.r,
            lora_alpha=self.params.alpha,
            lora_dropout=self.params.dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)  # freezes every base weight
