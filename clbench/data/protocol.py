"""Protocols: named, versioned training and evaluation budgets, one YAML file each.

    name: cpu-small
    version: 1
    status: provisional                 # or final
    sequences: [standard-cl-order1, standard-cl-order2]
    seeds: [0, 1, 2]
    config: {model: smollm2-135m, steps_per_task: 30, lr: 1.0e-3, ...}   # RunConfig fields

Protocol files live in a `protocols/` folder of the task search path (`tasks/protocols/` for
the built-in ones). `apply_protocol` fills a RunConfig from its protocol; a setting that
contradicts the protocol is refused. docs/protocols.md describes the format and the shipped
protocols.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.config import RunConfig, build_dataclass
from clbench.data.registry import search_path
from clbench.errors import ClbenchError, read_yaml, unknown_name

FOLDER = "protocols"  # the sub-folder of each search-path folder that holds protocol files
STATUSES = ("provisional", "final")
# The fields of a protocol file that decide what its runs compute: its hash covers them only,
# so editing the description or the published numbers does not change it.
HASHED = ("name", "version", "sequences", "seeds", "config")
# RunConfig fields a protocol may not fix: they say what is run, where, or how it is checked.
NOT_FIXED = ("protocol", "sequence", "seed", "method", "method_args", "output", "run_id")


@dataclass
class Protocol:
    name: str
    version: int
    status: str
    sequences: list[str]
    seeds: list[int]
    config: dict[str, Any]
    description: str = ""
    citation: str = ""
    published: dict[str, Any] | None = None  # reported results to check against, free form
    # Why the test sets are below the 200 examples a protocol's power asks for: the measured
    # evaluation cost that forbids more (clbench.results.power). None: no exemption.
    small_test_sets: str | None = None
    origin: str = field(default="<python>", compare=False)

    @property
    def hash(self) -> str:
        """A short sha256 of the fields that decide what the protocol's runs compute."""
        content = {name: getattr(self, name) for name in HASHED}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        """The `protocol` block of results.json."""
        return {"name": self.name, "version": self.version, "hash": self.hash}

    @classmethod
    def from_yaml(cls, path: Path) -> Protocol:
        spec = read_yaml(path)
        if not isinstance(spec, dict):
            raise ClbenchError(f"{path}: a protocol file must be a mapping of fields")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in spec and _required(f)]
        if missing:
            raise ClbenchError(f"{path}: missing required field {missing[0]!r}")
        if "origin" in spec:
            raise ClbenchError(f"{path}: unknown field 'origin'")
        protocol = build_dataclass(cls, spec, str(path))
        protocol.origin = str(path)
        protocol._validate()
        return protocol

    def _validate(self) -> None:
        where = self.origin
        if self.version < 1:
            raise ClbenchError(f"{where}: field 'version' must be >= 1, got {self.version}")
        if self.status not in STATUSES:
            raise ClbenchError(
                f"{where}: field 'status' must be {' or '.join(STATUSES)}, got {self.status!r}"
            )
        for name in ("sequences", "seeds"):
            kind = str if name == "sequences" else int
            values = getattr(self, name)
            if not values or not all(type(v) is kind for v in values):
                raise ClbenchError(
                    f"{where}: field {name!r} must be a non-empty list of {kind.__name__}s"
                )
        fixed = sorted(set(self.config) & set(NOT_FIXED))
        if fixed:
            raise ClbenchError(
                f"{where}: field 'config.{fixed[0]}' cannot be fixed by a protocol "
                f"(it belongs to the run: {', '.join(NOT_FIXED)})"
            )
        # The budget must make a valid run config on its own.
        RunConfig.from_dict(self.config, origin=f"{where}: field 'config'")


def _required(spec: dataclasses.Field) -> bool:
    no_default = spec.default is dataclasses.MISSING
    return no_default and spec.default_factory is dataclasses.MISSING


def protocol_names(include: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every protocol of the search path by name; two files may not claim one name."""
    found: dict[str, Path] = {}
    for folder in search_path(include):
        for path in sorted((folder / FOLDER).rglob("*.yaml")):
            spec = read_yaml(path)
            name = spec.get("name") if isinstance(spec, dict) else None
            if not isinstance(name, str):
                raise ClbenchError(f"{path}: missing required field 'name'")
            if name in found:
                raise ClbenchError(f"{path} and {found[name]} both define protocol {name!r}")
            found[name] = path
    return found


def load_protocol(name: str, include: tuple[str, ...] = ()) -> Protocol:
    """A protocol by registered name, or by the path of its YAML file."""
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file():
            raise ClbenchError(f"protocol file {name} does not exist")
        return Protocol.from_yaml(Path(name))
    known = protocol_names(include)
    if name not in known:
        raise unknown_name("protocol", name, known)
    return Protocol.from_yaml(known[name])


def apply_protocol(config: RunConfig, include: tuple[str, ...] = ()) -> RunConfig:
    """`config` with its protocol's budget filled in (itself without a protocol).

    A field still at its RunConfig default takes the protocol's value; a field set to another
    value than the protocol's is refused, as are a sequence or seed the protocol does not list.
    """
    if config.protocol is None:
        return config
    protocol = load_protocol(config.protocol, include)
    defaults = RunConfig()
    changes: dict[str, Any] = {}
    conflicts = []
    for key, value in protocol.config.items():
        current = getattr(config, key)
        if current == value:
            continue
        if current == getattr(defaults, key):
            changes[key] = value
        else:
            conflicts.append(f"{key} = {current!r} (the protocol has {value!r})")
    if config.sequence == defaults.sequence:
        changes["sequence"] = protocol.sequences[0]
    elif config.sequence not in protocol.sequences:
        conflicts.append(f"sequence = {config.sequence!r} (the protocol runs {protocol.sequences})")
    if config.seed not in protocol.seeds:
        conflicts.append(f"seed = {config.seed} (the protocol's seeds are {protocol.seeds})")
    if conflicts:
        raise ClbenchError(
            f"the config contradicts protocol {protocol.name!r} ({protocol.origin}): "
            f"{'; '.join(conflicts)}. Drop these settings, or run without --protocol"
        )
    return dataclasses.replace(config, **changes)


def budget_differences(protocol: Protocol, settings: dict[str, Any]) -> list[str]:
    """`field: recorded (protocol: value)` for every field the protocol fixes that `settings`
    (a run's config and budget) has otherwise or lacks."""
    missing = object()
    found = {key: settings.get(key, missing) for key in protocol.config}
    return [
        f"{key}: {'missing' if found[key] is missing else repr(found[key])} "
        f"(protocol {protocol.name}: {value!r})"
        for key, value in protocol.config.items()
        if found[key] != value
    ]


def protocol_record(config: RunConfig, include: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The `protocol` block of the results of `config`: None without a protocol."""
    return None if config.protocol is None else load_protocol(config.protocol, include).record()
