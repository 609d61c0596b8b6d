"""Methods: the hooks the runner calls around each stage, and the registry that finds them.

A method subclasses `Method`, declares its hyper-parameters as a `Params` dataclass, and
overrides the hooks it needs. It is found by a built-in name, by `package.module:Class`, or by
an entry point in the group `clbench.methods`; nothing is imported before it is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch

from clbench.config import build_dataclass
from clbench.errors import ClbenchError, unknown_name
from clbench.task import Example, TaskData

BUILTIN_METHODS = {
    "seq-ft": "baselines.seq_ft:SeqFT",
    "replay": "baselines.replay:Replay",
}


@dataclass
class Stage:
    """What a hook sees of the stage in progress."""

    index: int  # 1-based: stage k trains the k-th task of the sequence
    data: TaskData  # the task trained in this stage
    model: torch.nn.Module
    seed: int  # the run's seed; derive stage-local randomness from (seed, index)


class Method:
    """Base class: plain sequential fine-tuning. Subclasses override the hooks they need."""

    name: ClassVar[str] = ""
    uses_task_id: ClassVar[bool] = False  # needs the task identity at inference time
    extra_memory: ClassVar[str | None] = None  # what it keeps beyond the model, if anything

    @dataclass
    class Params:
        """Hyper-parameters, with types and defaults; set by --method-arg or a config file."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def before_task(self, stage: Stage) -> None:
        """Called before training on `stage.data`."""

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        """Change or extend a training batch before it is tokenized (replay mixes in memory)."""
        return batch

    def after_task(self, stage: Stage) -> None:
        """Called after training on `stage.data`, before every task is evaluated."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: JSON values, and tensors (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def describe(self) -> dict[str, Any]:
        """What results.json records about the method."""
        return {
            "name": self.name,
            "hyperparameters": dataclasses.asdict(self.params),
            "uses_task_id": self.uses_task_id,
            "extra_memory": self.extra_memory,
        }


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
        raise ClbenchError(f"method {name!r}: {target} is not a subclass of clbench.method.Method")
    params = build_dataclass(cls.Params, args or {}, f"method {name!r} hyper-parameters")
    method = cls(params)
    method.name = cls.name or name
    return method
