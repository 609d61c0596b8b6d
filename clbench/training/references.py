"""Single-task references: S[j], the score on task j of the base model trained on task j alone.

A reference is a run of the same config (model, PEFT, budget, evaluation mode, protocol, seed)
with plain fine-tuning (`seq-ft`) on a one-task sequence, made by the runner itself. Each is
stored once in a reference folder as `<key hash>.json`, holding the key that made it and its
score, and is reused by every run whose key is the same:

    <folder>/<hash>.json              {"key": {...}, "score": 0.83, "run": "runs/<hash>"}
    <folder>/runs/<hash>/             the reference run (results.json and its config)
    <folder>/sequences/<task>.yaml    its one-task sequence

`ensure_references(config)` returns S for the config's sequence, computing what is missing;
`attached_references(config)` is what the runner records, following `config.references`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from clbench.config import BUDGET_FIELDS, RunConfig
from clbench.data import registry
from clbench.data.protocol import load_protocol
from clbench.errors import ClbenchError
from clbench.results.io import read_json, write_json

# The config fields that decide a reference's score, beside the task and the protocol.
KEY_FIELDS = ("model", "peft", "lora_r", "lora_alpha", "seed", *BUDGET_FIELDS)
# Named first when a stored reference differs from the one asked for.
MAIN_FIELDS = ("protocol", "model")
REFERENCE_METHOD = "seq-ft"


def reference_key(config: RunConfig, task: str, include: tuple[str, ...] = ()) -> dict[str, Any]:
    """What decides the reference of `task` under `config`: the task, the protocol (its name,
    version and hash) and the config fields of `KEY_FIELDS`."""
    protocol = None if config.protocol is None else load_protocol(config.protocol, include)
    return {
        "task": task,
        "protocol": None if protocol is None else protocol.record(),
        **{name: getattr(config, name) for name in KEY_FIELDS},
    }


def key_hash(key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_folder(config: RunConfig) -> Path:
    """Where `config`'s references are: OUTPUT/references for "compute", else the folder."""
    if config.references == "compute":
        return Path(config.output) / "references"
    return Path(config.references)


def ensure_references(
    config: RunConfig, include: tuple[str, ...] = (), compute: bool = True
) -> list[float]:
    """S[j] for every task j of `config`'s sequence, read from its reference folder; those
    missing are computed (and stored) when `compute`, else refused. A folder holding a task's
    reference made under another protocol or model is refused, naming the difference."""
    folder = reference_folder(config if config.references != "none" else _computing(config))
    sequence = registry.load_sequence(config.sequence, include)
    scores = []
    for task in sequence.tasks:
        key = reference_key(config, task, include)
        path = folder / f"{key_hash(key)}.json"
        if not path.is_file():
            if not compute:
                raise ClbenchError(_missing(folder, key))
            _compute(config, key, folder, include)
        scores.append(read_json(path)["score"])
    return scores


def attached_references(config: RunConfig, include: tuple[str, ...] = ()) -> list[float] | None:
    """The references the run records, following `config.references`: none, computed into
    OUTPUT/references, or read from a folder the user gives (never computed there)."""
    if config.references == "none":
        return None
    folder = reference_folder(config)
    if config.references != "compute" and not folder.is_dir():
        raise ClbenchError(f"field 'references': {folder} is not a folder")
    return ensure_references(config, include, compute=config.references == "compute")


def _computing(config: RunConfig) -> RunConfig:
    return dataclasses.replace(config, references="compute")


def _compute(
    config: RunConfig, key: dict[str, Any], folder: Path, include: tuple[str, ...]
) -> None:
    """Run the config on the one-task sequence of `key["task"]` and store its score."""
    from clbench.training.runner import run  # the runner imports this module

    task, digest = key["task"], key_hash(key)
    sequence = folder / "sequences" / f"{task}.yaml"
    sequence.parent.mkdir(parents=True, exist_ok=True)
    spec = {"name": f"single-{task}", "tasks": [task]}
    sequence.write_text(yaml.safe_dump(spec), encoding="utf-8")
    single = dataclasses.replace(
        config,
        sequence=str(sequence),
        method=REFERENCE_METHOD,
        method_args={},
        protocol=None,  # applied already; its sequences do not list the one-task sequence
        references="none",
        probes=None,
        output=str(folder / "runs"),
        run_id=digest,
    )
    run_dir = Path(single.output) / digest
    resume = (run_dir / "config.json").exists()
    if not (run_dir / "results.json").exists():
        run_dir = run(single, resume=resume, include=include)
    results = read_json(run_dir / "results.json")
    content = {"key": key, "score": results["matrix"][1][0], "run": f"runs/{digest}"}
    write_json(folder / f"{digest}.json", content)


def _missing(folder: Path, key: dict[str, Any]) -> str:
    """Why `folder` has no reference for `key`: what the stored ones of its task differ in."""
    task = key["task"]
    stored = [read_json(path)["key"] for path in sorted(folder.glob("*.json"))]
    same_task = [found for found in stored if found.get("task") == task]
    if not same_task:
        return f"reference folder {folder} has no reference for task {task!r}"
    differences = []
    for found in same_task:
        names = [*MAIN_FIELDS, *(k for k in sorted(key) if k not in MAIN_FIELDS)]
        differs = [
            f"{name} {_shown(found.get(name))} (this run: {_shown(key.get(name))})"
            for name in names
            if found.get(name) != key.get(name)
        ]
        differences.append(", ".join(differs))
    return (
        f"reference folder {folder} holds task {task!r}'s reference made under another setting: "
        f"{'; '.join(differences)}"
    )


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:  # a protocol: name, version and hash
        return f"{value['name']} v{value.get('version')} ({value.get('hash')})"
    return json.dumps(value)
