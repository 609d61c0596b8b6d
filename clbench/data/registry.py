"""Finding tasks and sequences by name in the YAML folders: the built-in `tasks/` and the user's.

A YAML file with a `tasks` list is a sequence; any other is a task, except in a `protocols/`
folder (clbench.data.protocol). Names come from the files'
`name` fields, and two files may not claim the same name. A file whose name starts with `_` is
neither: it is a base that task files `include:`, and need not be a whole task.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

from clbench.data.sequence import Sequence
from clbench.data.task import Task, read_task_file
from clbench.errors import ClbenchError, read_yaml, unknown_name


def builtin_task_dir() -> Path:
    """`tasks/` of a source checkout, or its copy inside an installed wheel."""
    checkout = Path(__file__).resolve().parents[2] / "tasks"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("clbench") / "builtin_tasks"))


def search_path(include: list[str] | tuple[str, ...] = ()) -> tuple[Path, ...]:
    """The built-in folder, then $CLBENCH_INCLUDE_PATH (os.pathsep-separated), then `include`."""
    extra = [p for p in os.environ.get("CLBENCH_INCLUDE_PATH", "").split(os.pathsep) if p]
    folders = [builtin_task_dir(), *(Path(p).expanduser() for p in [*extra, *include])]
    for folder in folders:
        if not folder.is_dir():
            raise ClbenchError(f"include path {folder} is not a folder")
    return tuple(folders)


@cache
def _index(folders: tuple[Path, ...]) -> tuple[dict[str, Path], dict[str, Path]]:
    tasks: dict[str, Path] = {}
    sequences: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*.yaml")):
            # `protocols/` holds budgets (clbench.data.protocol), not tasks or sequences
            if path.name.startswith("_") or "protocols" in path.relative_to(folder).parts:
                continue
            spec = read_yaml(path)
            if isinstance(spec, dict) and "include" in spec and "tasks" not in spec:
                spec = read_task_file(path)[0]
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ClbenchError(f"{path}: missing required field 'name'")
            table = sequences if "tasks" in spec else tasks
            if spec["name"] in table:
                raise ClbenchError(f"{path} and {table[spec['name']]} both define {spec['name']!r}")
            table[spec["name"]] = path
    return tasks, sequences


def task_names(include: tuple[str, ...] = ()) -> dict[str, Path]:
    return _index(search_path(include))[0]


def sequence_names(include: tuple[str, ...] = ()) -> dict[str, Path]:
    return _index(search_path(include))[1]


def load_task(name: str, include: tuple[str, ...] = ()) -> Task:
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Task.from_yaml(Path(name))
    known = task_names(include)
    if name not in known:
        raise unknown_name("task", name, known)
    return Task.from_yaml(known[name])


def load_sequence(name: str, include: tuple[str, ...] = ()) -> Sequence:
    """A sequence by registered name, or by the path of its YAML file."""
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file():
            raise ClbenchError(f"sequence file {name} does not exist")
        return Sequence.from_yaml(Path(name))
    known = sequence_names(include)
    if name not in known:
        raise unknown_name("sequence", name, known)
    return Sequence.from_yaml(known[name])
