"""A grid file: a base RunConfig and axes, expanded to cells, with every input checked before
any cell starts. The format is described in docs/sweeps.md."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clbench.config import RunConfig, build_dataclass
from clbench.errors import ClbenchError, unknown_name

BACKENDS = ("local", "slurm", "ray")
SLURM_CLUSTERS = ("slurm", "local", "debug")  # submitit's executors: SLURM, or stand-ins here
# The sweep sets these for every cell: the cell's folder is <sweep>/runs/<cell id>.
SWEEP_FIELDS = ("output", "run_id")
METHOD_ENTRY_KEYS = ("name", "method_args")
REFERENCE_PREFIX = "reference_"  # the ids of reference cells
REFERENCE_AXIS = "reference"  # their column in `--status`: the task


@dataclass
class Resources:
    """What one cell gets; `cpus` is also its number of torch threads."""

    cpus: int = 1
    gpus: int = 0
    processes: int = 1  # > 1: the cell runs under `accelerate launch`, one process per GPU
    accelerate_args: list[str] = field(default_factory=list)


@dataclass
class SlurmOptions:
    partition: str | None = None
    time: int | str = 60  # per cell: minutes, or "HH:MM:SS" / "D-HH:MM:SS"
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem_gb: int | None = None
    array_parallelism: int | None = None  # cells of the array running at once
    additional: dict[str, Any] = field(default_factory=dict)  # more sbatch options
    cluster: str = "slurm"  # "local" or "debug": submitit's stand-ins on this machine


@dataclass
class RayOptions:
    address: str | None = None  # a running cluster; without it a local one is started
    cpus: int | None = None  # CPUs of the local cluster (default: all of this machine's)


@dataclass
class ReportOptions:
    baseline: str | None = None
    metrics: str | None = None  # e.g. "aa,fgt,bwt" (default: as `clbench report`)
    average_orders: bool = False
    interval: str = "std"
    decimals: int = 1


@dataclass
class GridFile:
    """The top level of a grid file, as written."""

    base: str | dict[str, Any] = field(default_factory=dict)
    axes: dict[str, Any] | list[dict[str, Any]] = field(default_factory=dict)
    references: bool | dict[str, Any] = False
    output: str | None = None
    include: list[str] = field(default_factory=list)
    retries: int = 2
    backend: str = "local"
    workers: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its id names its folder; `axes` are the values that made it."""

    id: str
    config: RunConfig
    axes: dict[str, Any]
    stages: int  # tasks in its sequence
    needs: tuple[str, ...] = ()  # the reference cells whose scores it reads
    reference: dict[str, Any] | None = None  # a reference cell: the key it computes


@dataclass
class Grid:
    path: Path
    folder: Path  # the sweep folder, absolute
    cells: list[Cell]
    axes: list[str]
    include: tuple[str, ...]
    retries: int
    backend: str
    workers: int
    resources: Resources
    slurm: SlurmOptions
    ray: RayOptions
    report: ReportOptions
    references: Path | None = None  # the folder of the shared single-task references
    reference_training: dict[str, Any] | None = None  # how they train (its training.json)


def recorded(path: Path) -> str:
    """`path` as the cells' configs record it: relative to the current folder, in which every
    cell runs (`write_spec`), when it lies below it; so the run folders that a sweep writes, and
    a repository commits, name no machine's paths."""
    here = Path.cwd().resolve()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def references_folder(sweep: Path) -> Path:
    return sweep / "references"


def cell_id(
    config: RunConfig, training: dict[str, Any] | None = None, include: tuple[str, ...] = ()
) -> str:
    """Readable, then a hash of the fields that decide what the run computes, its protocol's
    budget filled in (those not at their default, `RunConfig.identity`): the same cell has the
    same folder in every sweep and in later versions that add fields, two different cells never
    share one, and a protocol whose budget changed makes new cells. `training`: the cell reads
    the sweep's references, trained so (their folder is not part of the hash)."""
    from clbench.data.protocol import apply_protocol
    from clbench.training.runner import default_run_id

    applied = apply_protocol(config, include)
    fields = {k: v for k, v in applied.identity().items() if k not in SWEEP_FIELDS}
    if training is not None:
        fields["references"] = {"sweep": training}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return f"{default_run_id(config)}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def load_grid(path: str | Path, overrides: dict[str, Any] | None = None) -> Grid:
    """Read, expand and check a grid file. `overrides` (the command line's flags) replace
    top-level keys, fields of the sections `base`, `resources`, `slurm` and `ray`, and add
    to `include`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ClbenchError(f"cannot read grid file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ClbenchError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ClbenchError(f"{path}: expected a mapping with 'base' and 'axes'")
    spec: GridFile = build_dataclass(GridFile, data, str(path))
    base = _base(spec.base, path)
    for key, value in (overrides or {}).items():
        if key == "base":
            base.update(value)
        elif key == "include":  # folders of the command line come on top of the grid's
            spec.include = [*spec.include, *value]
        elif key in ("resources", "slurm", "ray"):
            getattr(spec, key).update(value)
        else:
            setattr(spec, key, value)
    if spec.backend not in BACKENDS:
        raise unknown_name("backend", spec.backend, BACKENDS)
    for name in ("retries", "workers"):
        minimum = 0 if name == "retries" else 1
        if getattr(spec, name) < minimum:
            raise ClbenchError(f"{path}: field {name!r} must be >= {minimum}")
    include = tuple(str((path.parent / p).resolve()) for p in spec.include)
    folder = Path(spec.output or Path("runs", "sweeps", path.stem)).resolve()
    training = _reference_training(spec.references, base, include, path)
    blocks = spec.axes if isinstance(spec.axes, list) else [spec.axes]
    cells: dict[str, Cell] = {}
    for i, axes in enumerate(blocks):
        where = f"{path}: axes block {i + 1}" if isinstance(spec.axes, list) else path
        if not isinstance(axes, dict):
            raise ClbenchError(f"{where}: expected a mapping from fields to lists of values")
        _expand(base, axes, where, folder, training, include, cells)
    axis_names = list(dict.fromkeys(name for axes in blocks for name in axes))
    for cell in cells.values():  # an axis of another block: this cell's value of the field
        for name in axis_names:
            cell.axes.setdefault(name, getattr(cell.config, name))
    runs = list(cells.values())
    applied = _check_names(runs, include, path)
    references = references_folder(folder) if training is not None else None
    if references is not None:
        runs = _reference_cells(runs, applied, training, references, include)
    resources = build_dataclass(Resources, spec.resources, f"{path}: resources")
    _check_resources(resources, path)
    slurm = build_dataclass(SlurmOptions, spec.slurm, f"{path}: slurm")
    if slurm.cluster not in SLURM_CLUSTERS:
        raise unknown_name(f"slurm.cluster in {path}:", slurm.cluster, SLURM_CLUSTERS)
    slurm_minutes(slurm.time)
    return Grid(
        path=path,
        folder=folder,
        cells=runs,
        axes=([REFERENCE_AXIS] if references else []) + axis_names,
        include=include,
        retries=spec.retries,
        backend=spec.backend,
        workers=spec.workers,
        resources=resources,
        slurm=slurm,
        ray=build_dataclass(RayOptions, spec.ray, f"{path}: ray"),
        report=build_dataclass(ReportOptions, spec.report, f"{path}: report"),
        references=references,
        reference_training=training,
    )


def _reference_training(
    setting: bool | dict[str, Any], base: dict[str, Any], include: tuple[str, ...], path: Path
) -> dict[str, Any] | None:
    """How the grid's references train (None without `references`): the fields of the
    `references` mapping, else of `base`, else of base's protocol, else RunConfig's defaults."""
    from clbench.data.protocol import load_protocol
    from clbench.training.references import TRAINING_FIELDS

    if setting is False:
        return None
    given = {} if setting is True else setting
    if not isinstance(given, dict):
        raise ClbenchError(f"{path}: 'references' must be true, false or a mapping")
    unknown = sorted(set(given) - set(TRAINING_FIELDS))
    if unknown:
        raise unknown_name(f"field of 'references' in {path}:", unknown[0], TRAINING_FIELDS)
    protocol = base.get("protocol")
    fixed = load_protocol(protocol, include).config if isinstance(protocol, str) else {}
    defaults = RunConfig()
    training = {
        name: given.get(name, base.get(name, fixed.get(name, getattr(defaults, name))))
        for name in TRAINING_FIELDS
    }
    RunConfig.from_dict(training, origin=f"{path}: references").validate()
    return training


def _reference_cells(
    cells: list[Cell],
    applied: list[RunConfig],
    training: dict[str, Any],
    folder: Path,
    include: tuple[str, ...],
) -> list[Cell]:
    """One reference cell per distinct reference key of the grid's cells, first, and the cells
    with `references` set to their folder and the ids of the reference cells they need. A
    reference cell's fields outside its key come from the first cell that needs it."""
    from clbench.data import registry
    from clbench.training.references import (
        key_hash,
        reference_config,
        reference_key,
        with_training,
    )
    from clbench.training.runner import default_run_id

    references: dict[str, Cell] = {}
    ready = []
    for cell, config in zip(cells, applied, strict=True):
        trained = with_training(config, training)
        needs = []
        for task in registry.load_sequence(config.sequence, include).tasks:
            key = reference_key(trained, task, include)
            digest = key_hash(key)
            single = reference_config(trained, key, Path(recorded(folder)), cell.config.output)
            ident = f"{REFERENCE_PREFIX}{default_run_id(single)}_{digest[:12]}"
            if ident not in references:
                single.run_id = ident
                axes = {
                    REFERENCE_AXIS: task,
                    **{k: getattr(single, k) for k in cell.axes if k in key},
                }
                references[ident] = Cell(ident, single, axes, 1, reference=key)
            needs.append(ident)
        cell.config.references = recorded(folder)
        ready.append(Cell(cell.id, cell.config, cell.axes, cell.stages, needs=tuple(needs)))
    return [*references.values(), *ready]


def _base(base: str | dict[str, Any], path: Path) -> dict[str, Any]:
    """The base fields: given in the grid, or a RunConfig YAML file relative to it."""
    if isinstance(base, str):
        config_file = path.parent / base
        base = RunConfig.from_yaml(config_file).to_dict()
        # Only what the file sets: defaults would otherwise look like base fields.
        written = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        base = {k: v for k, v in base.items() if k in written}
    base = dict(base)
    sweep_set = sorted(set(base) & set(SWEEP_FIELDS))
    if sweep_set:
        raise ClbenchError(
            f"{path}: base sets {', '.join(sweep_set)}, which the sweep sets for every cell; "
            "name the sweep folder with the grid's top-level 'output'"
        )
    return base


def _expand(
    base: dict[str, Any],
    axes: dict[str, Any],
    path: Path | str,
    folder: Path,
    training: dict[str, Any] | None,
    include: tuple[str, ...],
    cells: dict[str, Cell],
) -> None:
    """Add the cells of one block of axes to `cells` (by id), refusing one seen before."""
    known = [name for name in RunConfig.__dataclass_fields__ if name not in SWEEP_FIELDS]
    for name, values in axes.items():
        if name in (*SWEEP_FIELDS, "method_args"):
            hint = ": give each method its own method_args" if name == "method_args" else ""
            raise ClbenchError(f"{path}: {name!r} cannot be an axis{hint}")
        if name not in known:
            raise unknown_name(f"axis in {path}:", name, known)
        if not isinstance(values, list) or not values:
            raise ClbenchError(f"{path}: axis {name!r} must be a non-empty list of values")
    if "method" in axes and "method_args" in base:
        raise ClbenchError(
            f"{path}: base sets method_args but the grid has a method axis; give each method "
            "its own method_args in its entry"
        )
    methods = [
        _method_entry(value, i, axes, path) for i, value in enumerate(axes.get("method", []))
    ]
    for picks in itertools.product(*(range(len(values)) for values in axes.values())):
        fields, labels = dict(base), {}
        for (name, values), pick in zip(axes.items(), picks, strict=True):
            if name == "method":
                labels[name], entry = methods[pick]
                fields.update(entry)
            else:
                fields[name] = labels[name] = values[pick]
        where = ", ".join(f"{k}={v}" for k, v in labels.items()) or "the only cell"
        config = RunConfig.from_dict(fields, origin=f"{path}: cell ({where})")
        if training is not None and config.references != "none":
            raise ClbenchError(
                f"{path}: cell ({where}) sets references, which the grid's 'references' sets "
                "for every cell"
            )
        try:  # the protocol's budget is part of the id
            ident = cell_id(config, training, include)
        except ClbenchError as err:
            raise ClbenchError(f"{path}: cell ({where}): {err}") from err
        config.output, config.run_id = recorded(folder / "runs"), ident
        if ident in cells:
            other = cells[ident]
            same = other.config == config
            raise ClbenchError(
                f"{path}: cells ({where}) and "
                f"({', '.join(f'{k}={v}' for k, v in other.axes.items())}) "
                + ("are the same run; list each value once" if same else "")
                + ("" if same else f"would write the same folder {ident} with different configs")
            )
        cells[ident] = Cell(ident, config, labels, 0)


def _method_entry(
    value: Any, index: int, axes: dict[str, Any], path: Path | str
) -> tuple[str, dict[str, Any]]:
    """A method of the method axis: its name, or {name, method_args, other RunConfig fields}.
    Returns its label in tables and the fields it sets."""
    where = f"{path}: axis 'method', entry {index + 1}"
    if isinstance(value, str):
        return value, {"method": value, "method_args": {}}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ClbenchError(f"{where}: expected a method name or a mapping with 'name'")
    fields = {k: v for k, v in value.items() if k not in METHOD_ENTRY_KEYS}
    clash = sorted((set(fields) & set(axes)) | (set(fields) & set(SWEEP_FIELDS)))
    if clash:
        raise ClbenchError(
            f"{where}: sets {', '.join(clash)}, which the grid also sets as an axis or the "
            "sweep sets for every cell"
        )
    args = value.get("method_args") or {}
    if not isinstance(args, dict):
        raise ClbenchError(f"{where}: 'method_args' must be a mapping")
    shown = ", ".join(f"{k}={v}" for k, v in {**args, **fields}.items())
    label = f"{value['name']} ({shown})" if shown else value["name"]
    return label, {**fields, "method": value["name"], "method_args": args}


def _check_names(cells: list[Cell], include: tuple[str, ...], path: Path) -> list[RunConfig]:
    """Every method (with its arguments), sequence, task and protocol exists and every cell
    follows its protocol; counts each cell's stages (in place). Returns the cells' configs with
    their protocols applied, as the runner will run them."""
    from clbench.data import registry
    from clbench.data.protocol import apply_protocol
    from clbench.methods import create_method

    methods: set[str] = set()
    stages: dict[str, int] = {}
    applied = []
    for i, cell in enumerate(cells):
        config = cell.config
        key = json.dumps([config.method, config.method_args], sort_keys=True)
        try:
            if key not in methods:
                create_method(config.method, config.method_args)
                methods.add(key)
            if config.sequence not in stages:
                sequence = registry.load_sequence(config.sequence, include)
                for task in sequence.tasks:
                    registry.load_task(task, include)
                stages[config.sequence] = len(sequence.tasks)
            applied.append(apply_protocol(config, include))
        except ClbenchError as err:
            raise ClbenchError(f"{path}: cell {cell.axes or '(base)'}: {err}") from err
        cells[i] = Cell(cell.id, config, cell.axes, stages[config.sequence])
    return applied


def _check_resources(resources: Resources, path: Path) -> None:
    for name in ("cpus", "processes"):
        if getattr(resources, name) < 1:
            raise ClbenchError(f"{path}: field 'resources.{name}' must be >= 1")
    if resources.gpus < 0:
        raise ClbenchError(f"{path}: field 'resources.gpus' must be >= 0")
    if resources.processes > 1 and resources.gpus < resources.processes:
        raise ClbenchError(
            f"{path}: resources.processes is {resources.processes} but resources.gpus is "
            f"{resources.gpus}; `accelerate launch` runs one process per GPU"
        )


def slurm_minutes(time: int | str) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in whole minutes."""
    if isinstance(time, int):
        minutes = time
    else:
        days, _, clock = time.rpartition("-")
        try:
            parts = [int(p) for p in clock.split(":")]
            day_count = int(days) if days else 0
        except ValueError:
            raise ClbenchError(f"slurm time {time!r}: expected minutes or D-HH:MM:SS") from None
        if days:  # D-HH, D-HH:MM, D-HH:MM:SS
            parts += [0] * (3 - len(parts))
        elif len(parts) < 3:  # MM or MM:SS
            parts = [0, *parts, 0][:3]
        if len(parts) != 3:
            raise ClbenchError(f"slurm time {time!r}: expected minutes or D-HH:MM:SS")
        hours, mins, secs = parts
        minutes = day_count * 1440 + hours * 60 + mins + (1 if secs else 0)
    if minutes < 1:
        raise ClbenchError(f"slurm time {time!r}: must be at least one minute")
    return minutes
