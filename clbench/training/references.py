"""Single-task references: S[j], the score on task j of the base model trained on task j alone.

A reference is a run of the same config (model, PEFT, budget, evaluation mode, protocol, seed)
with plain fine-tuning (`seq-ft`) on a one-task sequence, made by the runner itself. Each is
stored once in a reference folder as `<key hash>.json`, holding the key that made it and its
score, and is reused by every run whose key is the same:

    <folder>/<hash>.json              {"key": {...}, "score": 0.83, "run": "runs/<hash>"}
    <folder>/runs/<hash>/             the reference run (results.json and its config)
    <folder>/sequences/<task>.yaml    its one-task sequence
    <folder>/training.json            optional: {"peft", "lora_r", "lora_alpha"} of every
                                      reference of the folder, whatever the run's own PEFT

A folder's `training.json` lets runs of methods with different PEFT settings (a sweep's
`--peft lora` methods and those that build their own adapters) share one set of references.

`ensure_references(config)` returns S for the config's sequence, computing what is missing;
`attached_references(config)` is what the runner records, following `config.references`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from clbench.config import BUDGET_FIELDS, RunConfig
from clbench.data import registry
from clbench.data.protocol import load_protocol
from clbench.errors import ClbenchError
from clbench.results.io import read_json, write_json

# How a reference trains; a folder's TRAINING_FILE may fix them for all its references.
TRAINING_FIELDS = ("peft", "lora_r", "lora_alpha")
TRAINING_FILE = "training.json"
# The config fields that decide a reference's score, beside the task and the protocol.
KEY_FIELDS = ("model", *TRAINING_FIELDS, "seed", *BUDGET_FIELDS)
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
    trained = with_training(config, folder_training(folder))
    sequence = registry.load_sequence(config.sequence, include)
    scores = []
    for task in sequence.tasks:
        key = reference_key(trained, task, include)
        path = folder / f"{key_hash(key)}.json"
        if not path.is_file():
            if not compute:
                raise ClbenchError(_missing(folder, key))
            compute_reference(reference_config(trained, key, folder), key, folder, include)
        scores.append(read_json(path)["score"])
    return scores


def folder_training(folder: Path) -> dict[str, Any]:
    """The training a reference folder fixes for its references (empty if it fixes none)."""
    path = folder / TRAINING_FILE
    return read_json(path) if path.is_file() else {}


def with_training(config: RunConfig, training: dict[str, Any]) -> RunConfig:
    """`config` with the reference training `training` (fields of TRAINING_FIELDS)."""
    return dataclasses.replace(config, **{k: training[k] for k in TRAINING_FIELDS if k in training})


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


def reference_config(
    config: RunConfig,
    key: dict[str, Any],
    folder: Path,
    output: str | None = None,
    run_id: str | None = None,
) -> RunConfig:
    """The run that computes `key`'s reference: `config` (protocol applied, reference training
    set) as seq-ft on the one-task sequence of the key's task, in `output`/`run_id` (default:
    the folder's runs/<key hash>)."""
    return dataclasses.replace(
        config,
        sequence=str(folder / "sequences" / f"{key['task']}.yaml"),
        method=REFERENCE_METHOD,
        method_args={},
        protocol=None,  # applied already; its sequences do not list the one-task sequence
        references="none",
        probes=None,
        eval_every=0,  # a reference's score is its matrix cell; no curve within its stage
        output=output or str(folder / "runs"),
        run_id=run_id or key_hash(key),
    )


def compute_reference(
    single: RunConfig,
    key: dict[str, Any],
    folder: Path,
    include: tuple[str, ...] = (),
    row0_cache: Path | None = None,
) -> float:
    """Run `single` (from `reference_config`), or finish it, and store its score as `key`'s
    reference in `folder`."""
    from clbench.training.runner import run, run_dir_of  # the runner imports this module

    sequence = Path(single.sequence)
    sequence.parent.mkdir(parents=True, exist_ok=True)
    spec = {"name": f"single-{key['task']}", "tasks": [key["task"]]}
    sequence.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run_dir = run_dir_of(single)
    if not (run_dir / "results.json").exists():
        resume = (run_dir / "config.json").exists()
        run_dir = run(single, resume=resume, include=include, row0_cache=row0_cache)
    score = read_json(run_dir / "results.json")["matrix"][1][0]
    where = os.path.relpath(run_dir, folder)
    write_json(folder / f"{key_hash(key)}.json", {"key": key, "score": score, "run": where})
    return score


def _missing(folder: Path, key: dict[str, Any]) -> str:
    """Why `folder` has no reference for `key`: what the stored ones of its task differ in."""
    task = key["task"]
    paths = sorted(p for p in folder.glob("*.json") if p.name != TRAINING_FILE)
    stored = [read_json(path)["key"] for path in paths]
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
