"""The one config model of a run: the CLI, a YAML file (`--config`) and Python all fill it."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clbench.errors import ClbenchError


@dataclass
class RunConfig:
    """Everything that decides what a run computes; the defaults run the embedded benchmark."""

    sequence: str = "default"
    method: str = "seq-ft"
    method_args: dict[str, Any] = field(default_factory=dict)
    model: str = "smollm2-135m"
    peft: str | None = None  # None (full fine-tuning) or "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    seed: int = 0
    # Training budget, the same for every task of the sequence.
    steps_per_task: int | None = 40  # optimizer steps; None means `epochs` passes over the data
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    lr_scheduler: str = "constant"  # any name transformers.get_scheduler knows
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_length: int = 256  # tokens of prompt + target; longer prompts are cut on the left
    mixed_precision: str = "auto"  # "auto" (bf16 on a GPU that has it), "no", "fp16", "bf16"
    # Data and evaluation.
    data_dir: str | None = None  # local mirror root; default $CLBENCH_DATA_DIR
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    eval_batch_size: int = 32
    # General-ability probes (clbench.evaluation.probes): lm-eval or clbench task names, scored
    # after every stage; lm-eval's scores can depend on the batch size, so it is pinned.
    probes: list[str] | None = None
    probe_include: list[str] | None = None  # folders of the user's own lm-eval tasks
    probe_limit: int | None = None  # the first N documents of each probe
    probe_batch_size: int | None = None  # default: eval_batch_size
    # Where results go.
    output: str = "runs"
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> RunConfig:
        """Build a config from plain data, naming `origin` and the field in every error."""
        config = build_dataclass(cls, data, origin)
        config.validate(origin)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ClbenchError(f"cannot read config file {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise ClbenchError(f"{path}: not valid YAML: {err}") from err
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
        if self.warmup_steps < 0:
            raise ClbenchError(f"{origin}: field 'warmup_steps' must be >= 0")
        for name in ("probes", "probe_include"):
            items = getattr(self, name) or []
            if not all(isinstance(item, str) and item for item in items):
                raise ClbenchError(f"{origin}: field {name!r} must be a list of non-empty strings")
        if len(set(self.probes or [])) != len(self.probes or []):
            raise ClbenchError(f"{origin}: field 'probes' names a probe twice: {self.probes}")
        if self.peft not in (None, "lora"):
            raise ClbenchError(f"{origin}: field 'peft' must be null or 'lora', got {self.peft!r}")
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
        if base is not type(None) and isinstance(value, base):
            return value
    expected = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ClbenchError(f"{origin}: field {key!r} must be {expected}, got {value!r}")
