"""Stage checkpoints a resume can trust (docs/reliability.md).

After stage k the runner writes `checkpoint-k/` (`clbench.results.io.save_checkpoint`), hashes
its files as they are on disk and records them in state.json under `checkpoints`, with the
method's JSON state of that stage. The previous stage's checkpoint stays beside it: older
folders are deleted only once state.json names the new one.

On resume, `restore` checks the latest checkpoint's files against their SHA-256. A missing or
damaged file makes it fall back to the previous checkpoint (or to row 0, which needs none) and
drop the rows after it, so those stages are computed again; with nothing to fall back to, a
ClbenchError names the file and the stage.

Within a stage, `StepCheckpoints` writes `checkpoint-k-step-n/` every `--save-every` optimizer
steps, when the run is preempted and after the stage's last step (so preemption during the
method's `after_task` or the evaluation does not cost the stage's training): what training
changes (the trainable weights, optimizer, schedule, random generators, data position, loss
guard and the method's step state), so a resume continues the stage at step n. Only the
latest is kept, and none once the stage is saved.
"""

from __future__ import annotations

import copy
import hashlib
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clbench.errors import ClbenchError
from clbench.results.io import (
    CHECKPOINT_FILES,
    read_json,
    save_checkpoint,
    staged_folder,
    write_json,
)

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


PROGRESS_FILE = "progress.json"  # a step checkpoint's JSON values, beside its safetensors files
Tensors = dict[str, torch.Tensor]


@dataclass
class StepCheckpoints:
    """The step checkpoints of one stage: where they go, how often (`every` optimizer steps;
    0: none on a schedule; `train_task` adds the stage's last step and preemption), and the
    verified one to resume from. Each is recorded in `state` (state.json's content, written
    again with it) under `step_checkpoint`."""

    run_dir: Path
    state: dict[str, Any]
    stage: int
    every: int = 0
    resume: dict[str, Any] | None = None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, files: dict[str, Tensors], progress: dict[str, Any]) -> None:
        """Write checkpoint-`stage`-step-`step` (a hidden staging folder, then a rename), record
        it with the SHA-256 of its files in state.json, then delete the step checkpoint before."""
        name = f"checkpoint-{self.stage}-step-{step}"
        final = self.run_dir / name
        what = f"the step checkpoint of stage {self.stage}"
        errors = (OSError, SafetensorError, ClbenchError, TypeError)
        with staged_folder(final, what, errors) as staging:
            for file, tensors in files.items():
                save_file({k: v.detach().contiguous() for k, v in tensors.items()}, staging / file)
            write_json(staging / PROGRESS_FILE, progress)
        previous = self.state.get("step_checkpoint")
        self.state["step_checkpoint"] = {
            "name": name,
            "stage": self.stage,
            "step": step,
            "sha256": {f: sha256_file(final / f) for f in [*files, PROGRESS_FILE]},
        }
        write_json(self.run_dir / "state.json", self.state)
        if previous and previous["name"] != name:
            shutil.rmtree(self.run_dir / previous["name"], ignore_errors=True)

    def load(self) -> tuple[dict[str, Tensors], dict[str, Any]]:
        """The tensors (by file) and the JSON values of the step checkpoint to resume from."""
        folder = self.run_dir / self.resume["name"]
        names = [f for f in self.resume["sha256"] if f != PROGRESS_FILE]
        try:
            files = {f: load_file(folder / f) for f in names}
        except (OSError, SafetensorError) as err:
            raise ClbenchError(f"{folder}: cannot load the step checkpoint ({err})") from err
        return files, read_json(folder / PROGRESS_FILE)


def step_to_resume(
    run_dir: Path, state: dict[str, Any], stage: int, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """The step checkpoint of `stage` recorded in `state`, if its files are intact. A damaged
    one is reported (`say`) and forgotten, so the stage trains again from its start; one of
    another stage (left by a fallback to an earlier stage) is forgotten silently."""
    entry = state.get("step_checkpoint")
    if entry is None or entry["stage"] != stage:
        state.pop("step_checkpoint", None)
        return None
    trouble = problem(run_dir, entry)
    if trouble is None:
        return entry
    say(
        f"clbench: warning: the step checkpoint of stage {stage} (step {entry['step']}): "
        f"{trouble}; training stage {stage} again from its start"
    )
    del state["step_checkpoint"]
    return None


def random_state_to_json(state: tuple) -> list:
    """A `random.Random` state as JSON (its middle item is a tuple of 625 ints)."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def random_state_from_json(value: list) -> tuple:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def rng_states() -> tuple[Tensors, dict[str, Any]]:
    """The global random generators: torch's (and CUDA's) as tensors, Python's and numpy's as
    JSON values."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys.tolist(), position, has_gauss, cached]
    return tensors, {"python": random_state_to_json(random.getstate()), "numpy": numpy_state}


def set_rng_states(tensors: Tensors, values: dict[str, Any]) -> None:
    """Put back what `rng_states` returned."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(random_state_from_json(values["python"]))
    kind, keys, position, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))


def split_optimizer_state(state: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    """An optimizer's `state_dict` as tensors (`<parameter index>.<name>`) and JSON values."""
    tensors, values = {}, {}
    for index, entries in state["state"].items():
        values[str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                values[str(index)][key] = value
    return tensors, {"param_groups": state["param_groups"], "state": values}


def join_optimizer_state(tensors: Tensors, values: dict[str, Any]) -> dict[str, Any]:
    """The `state_dict` that `split_optimizer_state` split."""
    state = {int(index): dict(entries) for index, entries in values["state"].items()}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state[int(index)][key] = tensor
    return {"state": state, "param_groups": values["param_groups"]}
