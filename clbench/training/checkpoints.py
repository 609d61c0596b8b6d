"""Stage checkpoints a resume can trust (docs/reliability.md).

After stage k the runner writes `checkpoint-k/` (`clbench.results.io.save_checkpoint`), hashes
its files as they are on disk and records them in state.json under `checkpoints`, with the
method's JSON state of that stage. The previous stage's checkpoint stays beside it: older
folders are deleted only once state.json names the new one.

On resume, `restore` checks the latest checkpoint's files against their SHA-256. A missing or
damaged file makes it fall back to the previous checkpoint (or to row 0, which needs none) and
drop the rows after it, so those stages are computed again; with nothing to fall back to, a
ClbenchError names the file and the stage.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clbench.errors import ClbenchError
from clbench.results.io import CHECKPOINT_FILES, save_checkpoint

KEEP = 2  # the latest stage's checkpoint and the one before it
# The per-stage lists of state.json, one entry per matrix row (row 0 included).
_ROWS = ("rows", "scores", "stages", "probe_rows")
# Running totals of state.json over the stages so far, kept with each checkpoint.
_TOTALS = ("cost",)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save(
    run_dir: Path,
    state: dict[str, Any],
    stage: int,
    model: torch.nn.Module,
    method_state: dict[str, Any],
) -> None:
    """Write checkpoint-`stage` and record it, hashed as read back from disk, in `state`
    (which the caller then writes); the checkpoint of the stage before stays recorded."""
    tensors = {k: v for k, v in method_state.items() if isinstance(v, torch.Tensor)}
    name = save_checkpoint(run_dir, stage, model, tensors)
    entry = {
        "name": name,
        "stage": stage,
        "sha256": {file: sha256_file(run_dir / name / file) for file in CHECKPOINT_FILES},
        "method_state": {k: v for k, v in method_state.items() if k not in tensors},
        "totals": {key: copy.deepcopy(state[key]) for key in _TOTALS if key in state},
    }
    state["checkpoints"] = [*state.get("checkpoints", [])[-(KEEP - 1) :], entry]
    state["checkpoint"] = name


def kept(state: dict[str, Any]) -> list[str]:
    """The checkpoint folders `state` records, which must stay on disk."""
    return [entry["name"] for entry in state.get("checkpoints", [])]


def problem(run_dir: Path, entry: dict[str, Any]) -> str | None:
    """What is wrong with a recorded checkpoint's files, or None if every hash matches."""
    for file, digest in entry["sha256"].items():
        path = run_dir / entry["name"] / file
        if not path.is_file():
            return f"{path} is missing"
        if sha256_file(path) != digest:
            return f"{path} is damaged (its SHA-256 is not the one state.json recorded)"
    return None


def restore(run_dir: Path, state: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """The state to resume from: `state` if its latest checkpoint is intact, else `state`
    rolled back to the previous checkpoint (`say` tells the user). A state.json written
    before checkpoints were hashed is trusted as it is."""
    entries = state.get("checkpoints")
    if not entries:
        return state
    latest = entries[-1]
    trouble = problem(run_dir, latest)
    if trouble is None:
        return state
    where = f"the checkpoint of stage {latest['stage']}: {trouble}"
    previous = latest["stage"] - 1
    fallback = [e for e in entries[:-1] if e["stage"] == previous]
    if previous > 0 and (not fallback or problem(run_dir, fallback[0]) is not None):
        raise ClbenchError(
            f"{where}, and the checkpoint of stage {previous} is not intact either; "
            "start the run again with --fresh"
        )
    say(
        f"clbench: warning: {where}; falling back to stage {previous} and training stage "
        f"{latest['stage']} again"
    )
    # Back to stage 0 means from the start: row 0 is scored again, so the totals count it.
    kept_rows = previous + 1 if fallback else 0
    state = {**state, **{key: state[key][:kept_rows] for key in _ROWS if key in state}}
    state = {key: value for key, value in state.items() if key not in _TOTALS}
    state["checkpoints"] = fallback
    state["checkpoint"] = fallback[0]["name"] if fallback else None
    if fallback:
        state["method_state"] = fallback[0]["method_state"]
        state.update(copy.deepcopy(fallback[0].get("totals", {})))
    return state
