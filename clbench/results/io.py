"""A run's files: results.json (docs/results-schema.md), and the state that `--resume` reads.

Only JSON and safetensors are written or read; every write goes to a temporary file that is
then renamed, so a file is either whole or absent.

    <output>/<run_id>/config.json      the RunConfig, written when the run starts
    <output>/<run_id>/state.json       finished rows, timings, method state (each stage)
    <output>/<run_id>/checkpoint-<k>/  model and method tensors after stage k (the latest two;
                                       clbench.training.checkpoints)
    <output>/<run_id>/results.json     the finished run
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from clbench.errors import ClbenchError
from clbench.results.schema import Results, is_results


def to_json_value(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); containers are converted deeply."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see `write_text`); NaN becomes null."""
    text = json.dumps(to_json_value(data), indent=2, ensure_ascii=False, allow_nan=False)
    write_text(path, text + "\n")


def write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary file in the same folder, then a rename. A failed write
    (a full disk) leaves the previous file as it was and raises a ClbenchError naming it."""
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise ClbenchError(f"cannot write {path}: {err.strerror}") from err
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ClbenchError(f"cannot write {path}: {err.strerror}") from err
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ClbenchError(f"cannot read {path}: {err.strerror}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ClbenchError(f"{path}: not valid JSON ({err})") from err


def read_results(run: str | Path) -> Results:
    """results.json of a finished run, given the run folder or the file itself."""
    path = Path(run)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ClbenchError(f"no results.json at {path} (is the run finished?)")
    content = read_json(path)
    if not is_results(content):
        raise ClbenchError(f"{path}: not a clbench results file (no 'matrix')")
    return Results.from_json(content, str(path))


def load_results(run: str | Path) -> dict[str, Any]:
    """The JSON content of `read_results`: checked, and migrated to this schema version."""
    return read_results(run).to_json()


def write_results(path: Path, results: Results) -> None:
    write_json(path, results.to_json())


CHECKPOINT_FILES = ("model.safetensors", "method.safetensors")


@contextlib.contextmanager
def staged_folder(
    final: Path, what: str, errors: tuple[type[BaseException], ...] = (OSError, SafetensorError)
) -> Iterator[Path]:
    """A folder written under a hidden staging name beside `final`, then renamed to it. A failed
    write (a full disk) leaves no folder behind and raises one ClbenchError naming `what`."""
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield staging
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except errors as err:
        shutil.rmtree(staging, ignore_errors=True)
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise ClbenchError(
            f"cannot write {what} to {final}: {reason}; "
            "the run can be resumed from its last finished stage"
        ) from err


def save_checkpoint(
    run_dir: Path, stage: int, model: torch.nn.Module, method_tensors: dict[str, torch.Tensor]
) -> str:
    """Model and method tensors after `stage`, in a new folder; returns the folder name. A
    failed write (a full disk) leaves no folder behind and raises a ClbenchError."""
    name = f"checkpoint-{stage}"
    with staged_folder(run_dir / name, f"the checkpoint of stage {stage}") as staging:
        save_model(model, str(staging / "model.safetensors"))  # handles tied weights
        tensors = {k: v.contiguous() for k, v in method_tensors.items()}
        save_file(tensors, str(staging / "method.safetensors"))
    return name


def load_checkpoint(run_dir: Path, name: str, model: torch.nn.Module) -> None:
    """Load a checkpoint's model weights into `model`, which must have the same tensors."""
    folder = run_dir / name
    try:
        missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    except (OSError, SafetensorError) as err:
        raise ClbenchError(f"{folder / 'model.safetensors'}: cannot load ({err})") from err
    if unexpected or missing:
        raise ClbenchError(
            f"{folder}: the checkpoint does not fit the model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors)"
        )


def load_method_tensors(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    path = run_dir / name / "method.safetensors"
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise ClbenchError(f"{path}: cannot load ({err})") from err


def remove_old_checkpoints(run_dir: Path, keep: Collection[str] | None = None) -> None:
    """Delete the checkpoint folders not in `keep`, and any left half-written."""
    for folder in [*run_dir.glob("checkpoint-*"), *run_dir.glob(".checkpoint-*")]:
        if folder.name not in (keep or ()):
            shutil.rmtree(folder, ignore_errors=True)


def peak_memory_mb() -> dict[str, float | None]:
    """Peak resident memory of this process, and peak CUDA memory where there is a GPU."""
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        if platform.system() == "Darwin":
            rss /= 1024  # bytes on macOS
    except ImportError:  # Windows
        rss = None
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"cpu_max_rss_mb": rss, "cuda_max_allocated_mb": cuda}


def environment(device: str, num_processes: int, mixed_precision: str) -> dict[str, Any]:
    from importlib.metadata import version

    packages = ["clbench", "torch", "transformers", "peft", "accelerate", "datasets"]
    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except Exception:  # a source tree that was never installed
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": device,
        "num_processes": num_processes,
        "mixed_precision": mixed_precision,
        "torch_threads": torch.get_num_threads(),
    }
