"""Row 0 shared between the cells of a sweep (docs/sweeps.md#row-0-shared-between-cells).

Row 0 scores the model before any training on every task. For a method that does not change
the model before training (`Method.changes_model_before_training`), it depends only on the
model, the test examples and how they are scored, so cells that share these share row 0:

    <sweep>/row0/<key>/row0.json       the scores of every task, and the run that made them
    <sweep>/row0/<key>/predictions/    its logged predictions (runs with `predictions`)
    <sweep>/row0/<key>.lock            held while a cell looks the entry up or makes it

The first cell to need an entry evaluates row 0 under the lock and stores it; a cell that
comes while it works waits for the lock, then reads the entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clbench import __version__
from clbench.config import RunConfig
from clbench.data.task import TaskData
from clbench.evaluation import predictions
from clbench.evaluation.evaluate import evaluation_of
from clbench.results.io import read_json, write_json
from clbench.sweep.cells import hold_lock

Scores = list[dict[str, float]]
WAIT_SECONDS = float("inf")  # another cell evaluating row 0 always finishes or dies


def row0_key(config: RunConfig, tasks: list[TaskData], model_info: dict[str, Any]) -> str:
    """A hash of everything row 0 depends on: the model (its source and revision, PEFT and
    precision), each task's exact test examples and scoring, and the evaluation settings."""
    content = {
        "clbench": __version__,
        "model": {k: model_info.get(k) for k in ("name", "source", "revision")},
        "peft": [config.peft, config.lora_r, config.lora_alpha] if config.peft else None,
        "mixed_precision": config.mixed_precision,
        "eval": [config.eval_batch_size, config.max_length, config.eval_mode],
        "predictions": config.predictions,
        "tasks": [
            {
                "task": repr(d.task),
                "evaluation": evaluation_of(d.task, config.eval_mode),
                "fingerprint": d.fingerprints["test"],
                "options": d.options,
                "test": [[e.prompt, e.target, e.rejected] for e in d.test],
            }
            for d in tasks
        ],
    }
    text = json.dumps(content, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shared_row0(
    cache: Path | None,
    key: str,
    run_dir: Path,
    evaluate: Callable[[], tuple[Scores, float]],
) -> tuple[Scores, float, dict[str, Any] | None]:
    """Row 0's scores and evaluation seconds, and results.json's `row0` record when they were
    reused from `cache` (None when this run evaluated them, or without a cache)."""
    if cache is None:
        return (*evaluate(), None)
    entry = cache / key
    with hold_lock(cache / f"{key}.lock", wait=WAIT_SECONDS):
        kept = predictions.row_dir(run_dir, 0)
        if (entry / "row0.json").exists():
            found = read_json(entry / "row0.json")
            if (entry / "predictions").is_dir():
                shutil.copytree(entry / "predictions", kept, dirs_exist_ok=True)
            return found["scores"], 0.0, {"reused": True, "key": key, "source": found["source"]}
        scores, seconds = evaluate()
        entry.mkdir(parents=True, exist_ok=True)
        if kept.is_dir():
            shutil.copytree(kept, entry / "predictions", dirs_exist_ok=True)
        # Written last: an entry with row0.json is complete.
        write_json(
            entry / "row0.json", {"scores": scores, "source": run_dir.name, "seconds": seconds}
        )
        return scores, seconds, None
