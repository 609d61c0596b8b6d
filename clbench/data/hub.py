"""Task data from the Hugging Face Hub (or any `datasets.load_dataset` source), converted to the
local mirror's records (docs/data-layout.md), and written in the mirror layout
(`clbench download`, clbench.data.download).

The fields of a task's `source.hub` block are listed in docs/tasks-and-sequences.md.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clbench.data.hub_formats import FORMATS
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
    "where",
    "format",
    "constants",
    "holdout",
}


def check_spec(spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
        raise ClbenchError(f"{where}: 'source.hub' needs a 'path'")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ClbenchError(f"{where}: unknown 'source.hub' field(s) {', '.join(unknown)}")
    for key in ("fields", "where", "constants"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ClbenchError(f"{where}: 'source.hub.{key}' must be a mapping")
    if spec.get("format") is not None and spec["format"] not in FORMATS:
        raise ClbenchError(
            f"{where}: 'source.hub.format' is {spec['format']!r}; known: {', '.join(FORMATS)}"
        )
    splits = _splits(spec)
    holdout = spec.get("holdout")
    if splits["train"] == splits["test"]:
        share = isinstance(holdout, float) and 0 < holdout < 1
        count = isinstance(holdout, int) and not isinstance(holdout, bool) and holdout > 0
        if not (share or count):
            raise ClbenchError(
                f"{where}: train and test both read Hub split {splits['train']!r}, so "
                "'source.hub.holdout' must give the test share (0 < x < 1) or row count (> 0)"
            )
    elif holdout is not None:
        raise ClbenchError(f"{where}: 'source.hub.holdout' needs train and test on one split")


def _splits(spec: dict) -> dict[str, str]:
    return {"train": "train", "test": "test", **(spec.get("splits") or {})}


def load_hub(spec: dict[str, Any], task: str) -> dict[str, list[dict]]:
    """The task's train and test records, read with `datasets` and converted."""
    splits = _splits(spec)
    tables = {
        hub_split: _load_split(spec, hub_split, task)
        for hub_split in dict.fromkeys(splits.values())
    }
    if splits["train"] != splits["test"]:
        return {split: tables[hub_split] for split, hub_split in splits.items()}
    return _hold_out(tables[splits["train"]], spec["holdout"], task)


# The first connection failure of the process, so that the next loads fail at once instead of
# each retrying for half a minute (validating a leaderboard offline loads dozens of tasks).
_unreachable: list[ConnectionError] = []


def _load_split(spec: dict[str, Any], hub_split: str, task: str) -> list[dict]:
    from datasets import load_dataset

    if _unreachable:
        raise ClbenchError(
            f"task {task!r}: cannot load {spec['path']!r} split {hub_split!r}: the Hub was "
            f"unreachable earlier in this process ({_unreachable[0]}); offline, use a local "
            "mirror (--data-dir)"
        )
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
        if isinstance(err, ConnectionError):
            _unreachable.append(err)
        raise ClbenchError(
            f"task {task!r}: cannot load {spec['path']!r} split {hub_split!r} "
            f"({err.__class__.__name__}: {err}); offline, use a local mirror (--data-dir)"
        ) from err
    where = spec.get("where") or {}
    missing = sorted(set(where) - set(rows.column_names))
    if missing:
        raise ClbenchError(
            f"task {task!r}: 'source.hub.where' names column(s) {', '.join(missing)} that "
            f"{spec['path']!r} lacks ({', '.join(rows.column_names)})"
        )
    if where:
        rows = rows.filter(
            lambda *values: all(v == w for v, w in zip(values, where.values(), strict=True)),
            input_columns=list(where),
        )
    if len(rows) == 0:
        raise ClbenchError(f"task {task!r}: {spec['path']!r} split {hub_split!r} has no rows")
    return [_convert(row, rows.features, spec, task) for row in rows]


def _hold_out(records: list[dict], holdout: float | int, task: str) -> dict[str, list[dict]]:
    """A disjoint test split drawn from one Hub split, the same on every machine."""
    size = holdout if isinstance(holdout, int) else round(len(records) * holdout)
    if not 0 < size < len(records):
        raise ClbenchError(
            f"task {task!r}: 'source.hub.holdout' {holdout} leaves no train or no test rows "
            f"out of {len(records)}"
        )
    test = set(random.Random(0).sample(range(len(records)), size))
    return {
        "train": [r for i, r in enumerate(records) if i not in test],
        "test": [r for i, r in enumerate(records) if i in test],
    }


def _convert(row: dict, features: Any, spec: dict, task: str) -> dict:
    row = {name: _class_names(value, features.get(name)) for name, value in row.items()}
    if spec.get("format"):
        try:
            row = FORMATS[spec["format"]](row)
        except (KeyError, IndexError, TypeError, ClbenchError) as err:
            raise ClbenchError(
                f"task {task!r}: a row of {spec['path']!r} does not fit 'source.hub.format' "
                f"{spec['format']!r} ({err.__class__.__name__}: {err})"
            ) from err
    mapping = spec.get("fields") or {name: name for name in row}
    record = {}
    for name, column in mapping.items():
        if column in row:
            record[name] = _listed_names(row[column], spec.get("label_names"))
        else:
            try:
                record[name] = column.format_map(row)
            except (KeyError, AttributeError, ValueError) as err:
                raise ClbenchError(
                    f"task {task!r}: 'source.hub.fields.{name}' is {column!r}, neither a column "
                    f"of {spec['path']!r} ({', '.join(row)}) nor a template over them"
                ) from err
    return {**record, **(spec.get("constants") or {})}


def _class_names(value: Any, feature: Any) -> Any:
    """Class labels (or lists of them, as NER tags) become their names."""
    if isinstance(value, list):
        return [_class_names(v, getattr(feature, "feature", None)) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and hasattr(feature, "int2str"):
        return feature.int2str(value)
    return value


def _listed_names(value: Any, label_names: list[str] | None) -> Any:
    """Plain integer labels of a mapped column become `label_names`."""
    if isinstance(value, list):
        return [_listed_names(v, label_names) for v in value]
    if label_names and isinstance(value, int) and not isinstance(value, bool):
        return label_names[value]
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
