"""Reading the local mirror (layout in docs/data-layout.md), and what every task's data shares:
its splits, its fixed-seed subsample and its fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from clbench.errors import ClbenchError, at

SPLITS = ("train", "test")  # every task has them, read from the mirror, the Hub or a generator


def data_root(data_dir: str | None) -> Path | None:
    """The mirror root: `--data-dir`, else $CLBENCH_DATA_DIR, else None."""
    root = data_dir or os.environ.get("CLBENCH_DATA_DIR")
    return Path(root).expanduser() if root else None


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of one split and the line number of each (blank lines are skipped)."""
    if not path.is_file():
        raise ClbenchError(f"missing data file {path}")
    records, numbers = [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ClbenchError(f"{at(path, number)}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise ClbenchError(f"{at(path, number)}: expected a JSON object")
            records.append(record)
            numbers.append(number)
    return records, numbers


def read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ClbenchError(f"cannot read labels from {path}: {err}") from err
    if isinstance(labels, dict):  # an id -> name mapping, as in FewRel
        labels = list(labels.values())
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ClbenchError(f"{path}: expected a non-empty JSON list of label strings")
    return labels


def mirror_folder(root: Path | None, family: str, dataset: str, task: str) -> Path:
    if root is None:
        raise ClbenchError(
            f"task {task!r} reads dataset {dataset!r} from the local mirror, but no mirror is set: "
            "pass --data-dir or set CLBENCH_DATA_DIR"
        )
    folder = root / family / dataset
    if not folder.is_dir():
        raise ClbenchError(f"task {task!r}: dataset folder {folder} does not exist")
    return folder


def subsample(records: list[dict], limit: int | None) -> list[dict]:
    """The same `limit` records on every run: a fixed-seed sample, kept in file order."""
    if limit is None or len(records) <= limit:
        return records
    keep = sorted(random.Random(0).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def fingerprint(records: list[dict]) -> str:
    """A hash of the exact records used, independent of key order in the files."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()
