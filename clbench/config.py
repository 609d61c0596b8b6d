"""The one config model of a run: the CLI, a YAML file (`--config`) and Python all fill it."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.errors import ClbenchError, read_yaml

# The fields results.json records as a run's `budget`: the same for every task of the sequence.
BUDGET_FIELDS = (
    "steps_per_task",
    "epochs",
    "batch_size",
    "grad_accum",
    "lr",
    "lr_scheduler",
    "warmup_steps",
    "weight_decay",
    "max_length",
    "max_train_examples",
    "max_test_examples",
    "eval_mode",
)
# Fields that say how or where a run is carried out, not what it computes: the same run may be
# continued with other values, and they never count in its identity
# (docs/cli.md#flags-one-per-runconfig-field): the step-checkpoint interval, the run's folder,
# and the folder of the local mirror, whose files the data fingerprints identify.
OPERATIONAL_FIELDS = ("save_every", "output", "run_id", "data_dir")


@dataclass
class RunConfig:
    """Everything that decides what a run computes; the defaults run the embedded benchmark.

    Every field is a flag of `clbench run` (`lora_r` -> `--lora-r`), generated from its
    `help` metadata; see docs/cli.md.
    """

    sequence: str = field(
        default="default",
        metadata={"help": "the sequence of tasks: a registered name or a sequence YAML file"},
    )
    protocol: str | None = field(
        default=None,
        metadata={
            "help": "a benchmark protocol (a registered name or a protocol YAML file) whose "
            "budget fills this config; a setting that contradicts it is refused "
            "(docs/protocols.md)"
        },
    )
    method: str = field(
        default="seq-ft",
        metadata={"help": "the CL method: a registered name or module:Class"},
    )
    method_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "a hyper-parameter of the method", "flag": "--method-arg"},
    )
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "a built-in model name, a Hugging Face causal LM id or a local folder"},
    )
    peft: str | None = field(
        default=None,
        metadata={"help": "'lora' wraps the model in one LoRA adapter; none trains all weights"},
    )
    lora_r: int = field(default=8, metadata={"help": "the rank of the --peft lora adapter"})
    lora_alpha: int = field(
        default=16, metadata={"help": "the scaling alpha of the --peft lora adapter"}
    )
    seed: int = field(
        default=0, metadata={"help": "the random seed, set again at the start of every stage"}
    )
    # Training budget, the same for every task of the sequence.
    steps_per_task: int | None = field(
        default=40,
        metadata={"help": "optimizer steps on each task; none trains for --epochs passes instead"},
    )
    epochs: int = field(
        default=1, metadata={"help": "passes over each task's data when --steps-per-task is none"}
    )
    batch_size: int = field(default=8, metadata={"help": "training examples per batch"})
    grad_accum: int = field(
        default=1, metadata={"help": "batches whose gradients make one optimizer step"}
    )
    lr: float = field(
        default=1e-4,
        metadata={"help": "the learning rate: AdamW's, unless the method builds its own optimizer"},
    )
    lr_scheduler: str = field(
        default="constant",
        metadata={"help": "the learning-rate schedule: any name transformers.get_scheduler knows"},
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "warm-up steps of the schedule, at the start of each task"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "the weight decay of AdamW"})
    max_length: int = field(
        default=256,
        metadata={"help": "tokens of prompt + target; longer prompts are cut on the left"},
    )
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 on a GPU that has it), no, fp16 or bf16"},
    )
    # Data and evaluation.
    data_dir: str | None = field(
        default=None,
        metadata={"help": "the local data mirror; none reads $CLBENCH_DATA_DIR"},
    )
    max_train_examples: int | None = field(
        default=None,
        metadata={"help": "use at most N training examples of each task, a fixed-seed sample"},
    )
    max_test_examples: int | None = field(
        default=None,
        metadata={"help": "score at most N test examples of each task, a fixed-seed sample"},
    )
    eval_mode: str = field(
        default="rank",
        metadata={
            "help": "how closed-label-set tasks are scored: rank the labels by likelihood, or "
            "generate greedily and exact-match the label (generate, as O-LoRA and TRACE do)"
        },
    )
    references: str = field(
        default="none",
        metadata={
            "help": "single-task references for FWD: none, compute (stored in "
            "OUTPUT/references and reused), or a folder of references to read",
            "metavar": "none|compute|DIR",
        },
    )
    eval_batch_size: int = field(default=32, metadata={"help": "test examples per batch"})
    predictions: bool = field(
        default=True,
        metadata={
            "help": "keep every cell's predictions and gold answers as JSONL in the run folder"
        },
    )
    # General-ability probes (clbench.evaluation.probes): lm-eval or clbench task names, scored
    # after every stage; lm-eval's scores can depend on the batch size, so it is pinned.
    probes: list[str] | None = field(
        default=None,
        metadata={
            "help": "lm-eval tasks, or clbench tasks outside the sequence, scored after every "
            "stage",
            "separator": ",",
            "metavar": "TASK",
        },
    )
    probe_include: list[str] | None = field(
        default=None,
        metadata={
            "help": "a folder of your own lm-eval task YAML files, for --probes",
            "metavar": "DIR",
        },
    )
    probe_limit: int | None = field(
        default=None, metadata={"help": "score the first N documents of each probe"}
    )
    probe_batch_size: int | None = field(
        default=None,
        metadata={"help": "lm-eval's batch size for the probes; none uses --eval-batch-size"},
    )
    eval_every: int = field(
        default=0,
        metadata={
            "help": "score the language-modelling tasks of the sequence every N optimizer steps "
            "within a stage, for the loss-against-tokens curve; 0 scores them only after each "
            "stage",
            "metavar": "N",
        },
    )
    save_every: int = field(
        default=0,
        metadata={
            "help": "save a step checkpoint every N optimizer steps within a stage, to resume "
            "from; 0: only at a stage's last step and on preemption",
            "metavar": "N",
        },
    )
    # Where results go.
    output: str = field(default="runs", metadata={"help": "the folder that holds the run folders"})
    run_id: str | None = field(
        default=None,
        metadata={
            "help": "the run folder's name; none derives it from sequence, method, model, "
            "peft and seed"
        },
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that decide what the run computes and differ from their defaults: a
        field added to RunConfig later, at its default, leaves existing runs and sweep cells
        the same runs. Operational fields never count."""
        defaults = _DEFAULTS.to_dict()
        return {
            name: value
            for name, value in self.to_dict().items()
            if name not in OPERATIONAL_FIELDS and value != defaults[name]
        }

    def differs_from(self, saved: dict[str, Any]) -> list[str]:
        """The fields in which a saved config.json computes another run than this config; a
        field the file lacks counts at its default, as it was when the file was written."""
        defaults, current = _DEFAULTS.to_dict(), self.to_dict()
        return sorted(
            name
            for name in saved.keys() | current.keys()
            if name not in OPERATIONAL_FIELDS
            and saved.get(name, defaults.get(name)) != current.get(name, defaults.get(name))
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> RunConfig:
        """Build a config from plain data, naming `origin` and the field in every error."""
        config = build_dataclass(cls, data, origin)
        config.validate(origin)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        path = Path(path)
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ClbenchError(f"{path}: expected a mapping of config fields")
        return cls.from_dict({**data, **(overrides or {})}, origin=str(path))

    def validate(self, origin: str = "config") -> None:
        positive = [
            "lora_r",
            "lora_alpha",
            "epochs",
            "batch_size",
            "grad_accum",
            "max_length",
            "eval_batch_size",
            "steps_per_task",
            "max_train_examples",
            "max_test_examples",
            "probe_limit",
            "probe_batch_size",
        ]
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ClbenchError(f"{origin}: field {name!r} must be >= 1, got {value}")
        if self.lr <= 0:
            raise ClbenchError(f"{origin}: field 'lr' must be > 0, got {self.lr}")
        for name in ("warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ClbenchError(f"{origin}: field {name!r} must be >= 0")
        for name in ("probes", "probe_include"):
            items = getattr(self, name) or []
            if not all(isinstance(item, str) and item for item in items):
                raise ClbenchError(f"{origin}: field {name!r} must be a list of non-empty strings")
        if len(set(self.probes or [])) != len(self.probes or []):
            raise ClbenchError(f"{origin}: field 'probes' names a probe twice: {self.probes}")
        if self.peft not in (None, "lora"):
            raise ClbenchError(f"{origin}: field 'peft' must be null or 'lora', got {self.peft!r}")
        if self.eval_mode not in ("rank", "generate"):
            raise ClbenchError(
                f"{origin}: field 'eval_mode' must be rank or generate, got {self.eval_mode!r}"
            )
        if not self.references:
            raise ClbenchError(f"{origin}: field 'references' must be none, compute or a folder")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ClbenchError(
                f"{origin}: field 'mixed_precision' must be auto, no, fp16 or bf16, "
                f"got {self.mixed_precision!r}"
            )


def build_dataclass(cls: type, data: Any, origin: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, checking names and types of the fields."""
    if not isinstance(data, dict):
        raise ClbenchError(f"{origin}: expected a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        known = ", ".join(hints) or "(none)"
        raise ClbenchError(f"{origin}: unknown field(s) {', '.join(unknown)}; known: {known}")
    return cls(**{key: _check_type(origin, key, value, hints[key]) for key, value in data.items()})


def _check_type(origin: str, key: str, value: Any, hint: Any) -> Any:
    """Accept `value` if it fits the annotation (ints are accepted for floats)."""
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = typing.get_args(hint) if is_union else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        base = typing.get_origin(kind) or kind
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, bool):
            continue
        if base is list and not _items_fit(value, kind):
            continue
        if base is not type(None) and isinstance(value, base):
            return value
    expected = " or ".join(str(k) if typing.get_args(k) else k.__name__ for k in allowed)
    raise ClbenchError(f"{origin}: field {key!r} must be {expected}, got {value!r}")


def _items_fit(value: Any, hint: Any) -> bool:
    """Whether every item of a list fits `list[X]` where X is a plain type (a list of paths
    holding a list would otherwise fail later with a TypeError)."""
    (item,) = typing.get_args(hint) or (Any,)
    if not isinstance(value, list) or not isinstance(item, type):
        return True
    return all(isinstance(v, item) and not (item is int and isinstance(v, bool)) for v in value)


_DEFAULTS = RunConfig()
