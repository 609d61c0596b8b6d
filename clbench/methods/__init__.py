"""Methods: the hooks the runner calls around each stage, and the registry that finds them.

A method subclasses `Method`, declares its hyper-parameters as a `Params` dataclass, and
overrides the hooks it needs. It is found by a built-in name, by `package.module:Class`, or by
an entry point in the group `clbench.methods`; nothing is imported before it is asked for.

The order of the hooks in a run (docs/writing-a-method.md shows them at work):

    wrap_model                       once, after a resumed method's state is loaded
    for each stage k:
        before_task                  may add adapters or parameters to stage.model
        stage_steps                  the stage's number of optimizer steps
        configure_optimizer
        for each optimizer step:
            training_batch           replay, pseudo-samples
            training_loss            regularisation, distillation
            after_backward           gradient projection, before optimizer.step
        after_task                   memories, importance weights, merging
        before_eval (for each task)  select a task's adapter (methods that use the task id)
        state_dict                   saved with the checkpoint of stage k
    step_state                       saved with a step checkpoint (--save-every, preemption)
"""

from __future__ import annotations

import dataclasses
import importlib
import random
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from clbench.config import build_dataclass
from clbench.data.encoding import collate
from clbench.data.task import Example, TaskData
from clbench.errors import ClbenchError, unknown_name
from clbench.training.checkpoints import random_state_from_json, random_state_to_json
from clbench.training.cost import Cost
from clbench.training.loss import prepended_positions, target_logits

if TYPE_CHECKING:
    from accelerate import Accelerator

    from clbench.config import RunConfig

BUILTIN_METHODS = {
    "seq-ft": "clbench.methods.seq_ft:SeqFT",
    "joint": "clbench.methods.joint:Joint",
    "replay": "clbench.methods.replay:Replay",
    "agem": "clbench.methods.agem:AGEM",
    "ewc": "clbench.methods.ewc:EWC",
    "l2": "clbench.methods.l2:L2",
    "lwf": "clbench.methods.lwf:LwF",
    "lora-seq": "clbench.methods.lora_seq:LoRASeq",
    "o-lora": "clbench.methods.o_lora:OLoRA",
    "prompt-tuning": "clbench.methods.prompt_tuning:PromptTuning",
    "lamol": "clbench.methods.lamol:LAMOL",
    "ssr": "clbench.methods.ssr:SSR",
    "cpt-rewarm": "clbench.methods.cpt_rewarm:CPTRewarm",
    "block-expansion": "clbench.methods.block_expansion:BlockExpansion",
}


@dataclass
class Stage:
    """What a hook sees of the stage in progress."""

    index: int  # 1-based: stage k trains the k-th task of the sequence
    data: TaskData  # the task trained in this stage
    model: torch.nn.Module  # the model itself (not a DDP wrapper): change it in place
    seed: int  # the run's seed; derive stage-local randomness from (seed, index)
    tokenizer: Any = None
    config: RunConfig | None = None
    accelerator: Accelerator | None = None
    # The stage's cost counters (clbench.training.cost): count extra passes and generated tokens.
    cost: Cost = field(default_factory=Cost)

    def loss(
        self,
        examples: list[Example],
        model: torch.nn.Module | None = None,
        backward: bool = False,
    ) -> torch.Tensor:
        """The mean next-token loss on the examples' targets, as training computes it; counted
        as an extra forward pass (`backward`: the caller takes a gradient through it)."""
        model = model if model is not None else self.model
        device = next(model.parameters()).device
        batch = collate(self.tokenizer, examples, self.config.max_length)
        self.cost.extra_forward(batch["attention_mask"], backward)
        inputs = {k: v.to(device) for k, v in batch.items()}
        return target_logits(model, inputs, prepended_positions(model)).loss()


@dataclass
class Step:
    """One training step, as `training_loss` sees it: the batch's examples trained with the
    next-token loss (alignment pairs trained with DPO are not among them), their tokenized
    `inputs`, and the model's logits at the positions that predict a target token only (the LM
    head runs nowhere else). With no such example, every tensor is None.

    `logits` has one row per target token of the batch, in row-major order: row by row, left
    to right. `logits[j]` is the prediction of token `targets[j]`, which is
    `inputs["labels"][r, i + 1]` for the j-th (r, i) with `labels[r, i + 1] != -100`.
    `logits_to_keep` marks those positions in the model's own sequence (which starts with the
    virtual tokens of prompt tuning, if any): pass it to a forward pass of the model, e.g. a
    teacher's, as `model(input_ids=..., attention_mask=..., logits_to_keep=step.logits_to_keep)`
    to get the logits of the same positions in the same order.
    """

    number: int  # optimizer steps already done in this stage
    examples: list[Example]
    inputs: dict[str, torch.Tensor] | None  # input_ids, attention_mask, labels: (rows, length)
    logits: torch.Tensor | None  # (target tokens, vocabulary)
    targets: torch.Tensor | None = None  # (target tokens,)
    logits_to_keep: torch.Tensor | None = None  # (rows, prepended + length), bool


class Method:
    """Base class: plain sequential fine-tuning. Subclasses override the hooks they need."""

    name: ClassVar[str] = ""
    uses_task_id: ClassVar[bool] = False  # needs the task identity at inference time
    extra_memory: ClassVar[str | None] = None  # what it keeps beyond the model, if anything
    # `training_batch` may return examples of the task being trained that the loader did not
    # give (as joint does): a DPO stage then computes the reference of every training pair.
    draws_current_task: ClassVar[bool] = False
    # It makes training examples from the prompts and targets of earlier ones (LAMOL, SSR), so
    # it cannot train on the packed token blocks of a language-modelling task.
    needs_prompts: ClassVar[bool] = False
    # Its `wrap_model` or the first stage's `before_eval` changes the model's outputs before
    # any training (a soft prompt does; a zero-initialised LoRA adapter or an identity block
    # does not); if not, row 0 is the base model's and a sweep may share it between cells.
    changes_model_before_training: ClassVar[bool] = False

    @dataclass
    class Params:
        """Hyper-parameters, with types and defaults; set by --method-arg or a config file."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Change the model's structure once per run (adapters, added blocks) and return it.
        On --resume it runs after `load_state_dict` and before the checkpoint's weights are
        loaded, so it must rebuild every structure that the saved stages had added."""
        return model

    def before_task(self, stage: Stage) -> None:
        """Called before training on `stage.data`."""

    def stage_steps(self, stage: Stage, steps: int) -> int:
        """The optimizer steps of this stage, given the run's budget for it (`steps`: from
        `steps_per_task` or `epochs`); by default the budget itself."""
        return steps

    def configure_optimizer(
        self, parameters: list[torch.nn.Parameter], stage: Stage, steps: int
    ) -> tuple[torch.optim.Optimizer, Any]:
        """The stage's optimizer and learning-rate schedule over its `steps` optimizer steps:
        by default AdamW and the run's schedule, both new in every stage."""
        from transformers import get_scheduler

        config = stage.config
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=steps,
        )
        return optimizer, scheduler

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        """Change or extend a training batch before it is tokenized (replay mixes in memory)."""
        return batch

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        """The loss to minimise, given the task loss of this step (add penalties here)."""
        return loss

    def after_backward(self, stage: Stage) -> None:
        """Called once per optimizer step, after the gradients are complete (and averaged across
        processes), before the optimizer uses them."""

    def after_task(self, stage: Stage) -> None:
        """Called after training on `stage.data`, before every task is evaluated."""

    def before_eval(self, model: torch.nn.Module, data: TaskData) -> None:
        """Called before evaluating the task of `data`; only methods with `uses_task_id` may
        use its identity (e.g. to select that task's adapter)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: JSON values, and tensors (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def step_state(self) -> dict[str, Any]:
        """What the hooks of a stage's optimizer steps have changed since `before_task`, as
        JSON values, saved with a step checkpoint: by default the state of each `random.Random`
        attribute. A method whose step hooks change more (a buffer) overrides both."""
        return {
            name: random_state_to_json(value.getstate())
            for name, value in vars(self).items()
            if isinstance(value, random.Random)
        }

    def load_step_state(self, state: dict[str, Any]) -> None:
        """Restore what `step_state` returned; called after `before_task` on a resume."""
        for name, value in state.items():
            getattr(self, name).setstate(random_state_from_json(value))

    def describe(self) -> dict[str, Any]:
        """What results.json records about the method."""
        return {
            "name": self.name,
            "hyperparameters": dataclasses.asdict(self.params),
            "uses_task_id": self.uses_task_id,
            "extra_memory": self.extra_memory,
        }


def refuse_peft(model: torch.nn.Module, method: str, builds: str) -> None:
    """A method that builds its own parameter-efficient structure (`builds`) cannot also run on
    a model that `--peft lora` has wrapped already."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise ClbenchError(f"method {method!r} {builds}; run it without --peft lora")


def method_names() -> dict[str, str]:
    """Built-in names and installed entry points, each with its `module:Class`."""
    found = {ep.name: ep.value for ep in entry_points(group="clbench.methods")}
    return {**found, **BUILTIN_METHODS}


def create_method(name: str, args: dict[str, Any] | None = None) -> Method:
    """Instantiate a method by name or `module:Class`, with hyper-parameters from `args`."""
    names = method_names()
    target = names.get(name, name)
    if ":" not in target:
        raise unknown_name("method", name, names)
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ClbenchError(f"cannot load method {name!r} from {target!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ClbenchError(f"method {name!r}: {target} is not a subclass of clbench.methods.Method")
    params = build_dataclass(cls.Params, args or {}, f"method {name!r} hyper-parameters")
    method = cls(params)
    method.name = cls.name or name
    return method
