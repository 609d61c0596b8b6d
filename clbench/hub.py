"""Task data from the Hugging Face Hub (or any `datasets.load_dataset` source), converted to the
local mirror's records, and `clbench download`, which writes the mirror layout from it.

A task's `source.hub` block:

    hub:
      path: fancyzhx/ag_news            # anything datasets.load_dataset takes ("json" too)
      name: null                        # config name
      revision: main                    # pin a commit for reproducible data
      data_dir: null                    # optional, passed through (e.g. harmless-base)
      data_files: null                  # optional, passed through (local json files, say)
      splits: {train: train, test: test}
      fields: {text: "{title}\\n{description}", label: label}   # column, or a template
      label_names: [World, Sports, Business, Sci/Tech]          # integer labels -> names
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clbench.errors import ClbenchError

SPEC_KEYS = {
    "path",
    "name",
    "revision",
    "data_dir",
    "data_files",
    "splits",
    "fields",
    "label_names",
}


def check_spec(spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
        raise ClbenchError(f"{where}: 'source.hub' needs a 'path'")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ClbenchError(f"{where}: unknown 'source.hub' field(s) {', '.join(unknown)}")
    if not isinstance(spec.get("fields", {}), dict):
        raise ClbenchError(f"{where}: 'source.hub.fields' must map clbench fields to columns")


def load_hub(spec: dict[str, Any], task: str) -> dict[str, list[dict]]:
    """The task's train and test records, read with `datasets` and converted."""
    from datasets import load_dataset

    records = {}
    for split, hub_split in (spec.get("splits") or {"train": "train", "test": "test"}).items():
        try:
            rows = load_dataset(
                spec["path"],
                spec.get("name"),
                revision=spec.get("revision"),
                data_dir=spec.get("data_dir"),
                data_files=spec.get("data_files"),
                split=hub_split,
            )
        except Exception as err:  # datasets raises many types; all mean "cannot get it"
            raise ClbenchError(
                f"task {task!r}: cannot load {spec['path']!r} split {hub_split!r} "
                f"({err.__class__.__name__}: {err}); offline, use a local mirror (--data-dir)"
            ) from err
        records[split] = [_convert(row, rows.features, spec, task) for row in rows]
    return records


def _convert(row: dict, features: Any, spec: dict, task: str) -> dict:
    mapping = spec.get("fields") or {name: name for name in row}
    record = {}
    for name, column in mapping.items():
        if column in row:
            record[name] = _names(row[column], features.get(column), spec.get("label_names"))
        else:
            try:
                record[name] = column.format_map(row)
            except (KeyError, AttributeError, ValueError) as err:
                raise ClbenchError(
                    f"task {task!r}: 'source.hub.fields.{name}' is {column!r}, neither a column "
                    f"of {spec['path']!r} ({', '.join(row)}) nor a template over them"
                ) from err
    return record


def _names(value: Any, feature: Any, label_names: list[str] | None) -> Any:
    """Integer class labels (or lists of them, as NER tags) become their names."""
    if isinstance(value, list):
        inner = getattr(feature, "feature", None)
        return [_names(v, inner, label_names) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        if label_names:
            return label_names[value]
        if hasattr(feature, "int2str"):
            return feature.int2str(value)
    return value


def write_mirror(folder: Path, records: dict[str, list[dict]], labels: list[str] | None) -> None:
    """Write one dataset in the mirror layout, atomically: all files or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for split, rows in records.items():
            with (staging / f"{split}.jsonl").open("w", encoding="utf-8") as file:
                for row in rows:
                    file.write(json.dumps(row, ensure_ascii=False) + "\n")
        if labels:
            (staging / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def download(sequence: str, data_dir: str | Path, include: tuple[str, ...] = ()) -> list[str]:
    """Write every Hub-backed task of `sequence` to the mirror at `data_dir`; returns a log."""
    from clbench import registry

    log = []
    for name in registry.load_sequence(sequence, include).tasks:
        task = registry.load_task(name, include)
        spec = task.source.get("hub")
        if "generator" in task.source:
            log.append(f"{name}: generated by clbench, nothing to download")
        elif not spec:
            log.append(f"{name}: no Hub source known; its mirror folder must be made by hand")
        else:
            folder = Path(data_dir) / task.family / task.source["dataset"]
            labels = task.labels or spec.get("label_names")
            write_mirror(folder, load_hub(spec, name), labels)
            log.append(f"{name}: wrote {folder}")
    return log
