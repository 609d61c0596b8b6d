"""A Sequence: the ordered tasks of a continual-learning run, defined by one YAML file.

name: default
description: ...
tasks: [num-even, num-greater, num-mult5]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clbench.errors import ClbenchError, read_yaml


@dataclass
class Sequence:
    name: str
    tasks: list[str]
    description: str = ""
    citation: str = ""
    origin: str = field(default="<python>", compare=False)

    @classmethod
    def from_yaml(cls, path: Path) -> Sequence:
        spec = read_yaml(path)
        if not isinstance(spec, dict):
            raise ClbenchError(f"{path}: a sequence file must be a mapping of fields")
        unknown = sorted(set(spec) - {"name", "tasks", "description", "citation"})
        if unknown:
            raise ClbenchError(f"{path}: unknown sequence field(s) {', '.join(unknown)}")
        for name in ("name", "tasks"):
            if name not in spec:
                raise ClbenchError(f"{path}: missing required field {name!r}")
        tasks = spec["tasks"]
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise ClbenchError(f"{path}: field 'tasks' must be a non-empty list of task names")
        if len(set(tasks)) != len(tasks):
            raise ClbenchError(f"{path}: field 'tasks' names a task twice")
        return cls(origin=str(path), **spec)
