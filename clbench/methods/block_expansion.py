import copy
from dataclasses import dataclass

import torch

from clbench.errors import ClbenchError
from clbench.methods import Method, refuse_peft


class BlockExpansion(Method):
    """LLaMA Pro block expansion (Wu et al., 2024, "LLaMA Pro: Progressive LLaMA with Block
    Expansion", ACL).

    The L decoder blocks are split into `num_new_blocks` groups of consecutive blocks (as equal
    as L allows); a copy of each group's top block is inserted right after it, with its output
    projections (attention `o_proj`, MLP `down_proj`) zeroed so that the copy maps its input to
    itself and the expanded model computes exactly what the original did. Every original weight
    is frozen; only the new blocks are trained, through the whole sequence. No task identity at
    inference; extra memory: the new blocks (`num_new_blocks` x one decoder block).

    The paper expands once and then post-trains on a new domain; here that post-training is the
    whole task sequence. LLaMA-style decoders only (`model.model.layers`, `o_proj`,
    `down_proj`).
    """

    name = "block-expansion"
    extra_memory = "num_new_blocks added decoder blocks"

    @dataclass
    class Params:
        num_new_blocks: int = 2  # the paper adds 8 blocks to LLaMA2-7B's 32

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        refuse_peft(model, "block-expansion", "trains its own added blocks")
        layers = getattr(getattr(model, "model", None), "layers", None)
        if not isinstance(layers, torch.nn.ModuleList):
            raise ClbenchError("block-expansion needs a LLaMA-style model (model.model.layers)")
        count, new = len(layers), self.params.num_new_blocks
        if not 1 <= new <= count:
            raise ClbenchError(f"block-expansion: num_new_blocks must be 1..{count}, got {new}")
        config = model.config
        types = list(getattr(config, "layer_types", None) or [])
        model.requires_grad_(False)
        expanded, expanded_types = [], []
        for group in range(new):
            start, end = group * count // new, (group + 1) * count // new
            expanded += layers[start:end]
            expanded_types += types[start:end]
            block = _identity_copy(layers[end - 1])
            block.requires_grad_(True)
            expanded.append(block)
            expanded_types += types[end - 1 : end]
        model.model.layers = torch.nn.ModuleList(expanded)
        for index, block in enumerate(expanded):  # the KV cache is indexed by layer_idx
            for module in block.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = index
        config.num_hidden_layers = len(expanded)
        if types:
            config.layer_types = expanded_types
        return model


def _identity_copy(block: torch.nn.Module) -> torch.nn.Module:
    """A copy of the block whose residual branches add zero: the block is the identity."""
    block = copy.deepcopy(block)
    try:
        outputs = [block.self_attn.o_proj, block.mlp.down_proj]
    except AttributeError as err:
        raise ClbenchError(
            f"block-expansion needs LLaMA-style blocks (o_proj, down_proj): {err}"
        ) from err
    with torch.no_grad():
        for linear in outputs:
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
    return block
