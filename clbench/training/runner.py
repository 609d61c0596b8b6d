"""The runner: evaluate every task (row 0), then for each task of the sequence run the method's
hooks, train, and evaluate every task again. `run` is that loop; the helpers below it only set
up, evaluate and save."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from clbench import __version__, metrics
from clbench.config import BUDGET_FIELDS, RunConfig
from clbench.data import registry
from clbench.data.packing import packed_tasks
from clbench.data.protocol import apply_protocol, protocol_record
from clbench.data.task import TaskData, find_contamination
from clbench.errors import ClbenchError
from clbench.evaluation import predictions
from clbench.evaluation.evaluate import evaluate_task, evaluation_of
from clbench.evaluation.probes import (
    Probe,
    check_model,
    evaluate_probes,
    load_probes,
    probe_results,
)
from clbench.methods import Method, Stage, create_method
from clbench.results.io import (
    environment,
    load_checkpoint,
    load_method_tensors,
    peak_memory_mb,
    read_json,
    remove_old_checkpoints,
    write_json,
    write_results,
)
from clbench.results.schema import SCHEMA_VERSION, Results
from clbench.training import checkpoints, guard
from clbench.training.cost import Cost, cost_block, parameter_bytes, record_stage
from clbench.training.lock import LOCK_NAME, RunLock
from clbench.training.models import LoadedModel, apply_lora, load_model
from clbench.training.references import attached_references
from clbench.training.train import InStageEval, train_task


def run(
    config: RunConfig,
    resume: bool = False,
    include: tuple[str, ...] = (),
    stop_after: int | None = None,
    fresh: bool = False,
    row0_cache: Path | None = None,
) -> Path:
    """Run `config`, or continue it where its folder holds it unfinished; returns the run
    folder. A finished run is left as it is; `fresh` deletes the run's files and starts over.
    `resume` only insists that there is a run to continue (docs/reliability.md).

    `stop_after` ends this invocation after that many stages, leaving a resumable run.
    `row0_cache` is a sweep's folder of shared rows 0 (clbench.sweep.row0).
    """
    config = apply_protocol(config, include)
    accelerator = _accelerator(config)
    if config.save_every and accelerator.num_processes > 1:
        raise ClbenchError(
            f"--save-every {config.save_every}: step checkpoints need a single process, and this "
            f"run has {accelerator.num_processes}; leave it at 0 (a checkpoint after each stage)"
        )
    run_dir = run_dir_of(config)
    if accelerator.is_main_process:
        _check_run_dir(run_dir, config, resume, fresh)  # fails fast, before the model is loaded
    if (run_dir / "results.json").exists() and not fresh:
        return run_dir
    # Single-task references are runs of their own, made (or read) before this one starts.
    recorded = {
        "protocol": protocol_record(config, include),
        "single_task": attached_references(config, include),
    }
    setup = _prepare(config, include)  # every input is checked before any file is written
    setup.row0_cache = row0_cache
    # The shallowest folder of the run's path that this call would create, if any.
    new = next((p for p in [*reversed(run_dir.parents), run_dir] if not p.exists()), None)
    try:
        with RunLock(run_dir) if accelerator.is_main_process else contextlib.nullcontext():
            if fresh and accelerator.is_main_process:
                _clear(run_dir)
            accelerator.wait_for_everyone()
            return _run_stages(config, setup, run_dir, accelerator, stop_after, recorded)
    except BaseException:
        # The lock made the folder; a run refused before its config was written leaves none.
        if new and accelerator.is_main_process and not (run_dir / "config.json").exists():
            shutil.rmtree(new, ignore_errors=True)
        raise


def _run_stages(
    config: RunConfig,
    setup: _Setup,
    run_dir: Path,
    accelerator: Accelerator,
    stop_after: int | None,
    recorded: dict[str, Any],
) -> Path:
    """The stages of the run not yet in its state.json, under the run's lock."""
    state = read_json(run_dir / "state.json") if (run_dir / "state.json").exists() else _new_state()
    say = functools.partial(_say, accelerator)
    state = checkpoints.restore(run_dir, state, say)
    method, tasks, tokenizer = setup.method, setup.tasks, setup.loaded.tokenizer
    # The method's state comes first: it tells `wrap_model` which adapters or blocks the saved
    # stages had added, so the checkpoint's weights fit the model.
    if state["checkpoint"]:
        tensors = load_method_tensors(run_dir, state["checkpoint"])
        method.load_state_dict({**state["method_state"], **tensors})
    base_bytes = parameter_bytes(setup.loaded.model)  # what the method adds is its cost
    model = method.wrap_model(setup.loaded.model).to(accelerator.device)
    check_model(setup.probes, model)
    saved = run_dir / "config.json"
    # A run continued with other operational settings (--save-every) records the latest.
    if accelerator.is_main_process and (not saved.exists() or read_json(saved) != config.to_dict()):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(saved, config.to_dict())
    accelerator.wait_for_everyone()
    if state["checkpoint"]:
        load_checkpoint(run_dir, state["checkpoint"], model)
    setup.loaded.model = model

    if not state["rows"]:  # row 0: the model before any continual training
        scores, seconds, state["row0"] = _row0(setup, config, accelerator, run_dir)
        _add_row(state, tasks, scores)
        probe_seconds = _probe_row(state, setup, accelerator, config)
        state["stages"].append(
            {"stage": 0, "train_seconds": 0.0, "eval_seconds": seconds, **probe_seconds}
        )
        record_stage(state, Cost(eval_seconds=seconds), method, model, base_bytes, accelerator)
        _save_progress(run_dir, state, model, method, accelerator, stage=0)

    first = len(state["rows"])
    last = len(tasks) if stop_after is None else min(len(tasks), first - 1 + stop_after)
    for k in range(first, last + 1):
        data = tasks[k - 1]
        set_seed(config.seed + k)  # each stage reproducible on its own, so resume is exact
        stage = Stage(k, data, model, config.seed, tokenizer, config, accelerator, Cost())
        with stage.cost.method_time():
            method.before_task(stage)
        started = time.perf_counter()
        # Prepared afresh each stage: `before_task` may have added parameters.
        desc = f"stage {k}/{len(tasks)} train {data.task.name}"
        saves, resume = None, None
        if accelerator.num_processes == 1:  # several processes: stage checkpoints only
            resume = checkpoints.step_to_resume(run_dir, state, k, say)
            saves = checkpoints.StepCheckpoints(run_dir, state, k, config.save_every, resume)
        in_stage = _in_stage_eval(setup, config, accelerator, state, stage, resume)
        prepared = accelerator.prepare(model)
        training = train_task(prepared, stage, method, accelerator, desc, saves, in_stage)
        # Scoring within the stage is evaluation time, not training time.
        train_seconds = time.perf_counter() - started - stage.cost.eval_seconds
        with stage.cost.method_time():
            method.after_task(stage)
        scores, eval_seconds = _evaluate_all(
            setup.loaded, method, tasks, config, accelerator, f"after {data.task.name}", run_dir, k
        )
        stage.cost.eval_seconds += eval_seconds
        tokens_before = _tokens_trained(state)
        record_stage(state, stage.cost, method, model, base_bytes, accelerator)
        _add_row(state, tasks, scores)
        probe_seconds = _probe_row(state, setup, accelerator, config)
        state["stages"].append(
            {
                "stage": k,
                "task": data.task.name,
                "train_seconds": train_seconds,
                "eval_seconds": stage.cost.eval_seconds,
                **probe_seconds,
                **training,
                "train_tokens": _tokens_trained(state) - tokens_before,
            }
        )
        _save_progress(run_dir, state, model, method, accelerator, stage=k)

    if len(state["rows"]) == len(tasks) + 1 and accelerator.is_main_process:
        results = _results(config, setup, state, run_dir, accelerator, recorded)
        write_results(run_dir / "results.json", results)
        remove_old_checkpoints(run_dir)
    accelerator.wait_for_everyone()
    return run_dir


@dataclass
class _Setup:
    tasks: list[TaskData]
    method: Method
    loaded: LoadedModel
    sequence_name: str
    probes: list[Probe]
    row0_cache: Path | None = None


def _prepare(config: RunConfig, include: tuple[str, ...]) -> _Setup:
    config.validate()
    sequence = registry.load_sequence(config.sequence, include)
    task_defs = [registry.load_task(name, include) for name in sequence.tasks]
    method = create_method(config.method, config.method_args)
    tasks = [
        t.load(config.data_dir, config.max_train_examples, config.max_test_examples)
        for t in task_defs
    ]
    for problem in find_contamination(tasks):
        warnings.warn(f"contamination: {problem}", stacklevel=2)
    probes = load_probes(config, include, sequence.tasks)
    set_seed(config.seed)  # LoRA's initialisation depends on it
    loaded = load_model(config.model)
    # Language-modelling tasks train on token blocks, which need the model's tokenizer.
    tasks = packed_tasks(tasks, method, loaded.tokenizer, config.max_length, config.seed)
    if config.peft == "lora":
        loaded.model = apply_lora(loaded.model, config.lora_r, config.lora_alpha)
    return _Setup(tasks, method, loaded, sequence.name, probes)


def default_run_id(config: RunConfig) -> str:
    model = Path(config.model.rstrip("/")).name
    parts = [Path(config.sequence).stem, config.method.split(":")[-1], model]
    if config.peft:
        parts.append(config.peft)
    parts.append(f"seed{config.seed}")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts))


def run_dir_of(config: RunConfig) -> Path:
    return Path(config.output) / (config.run_id or default_run_id(config))


def _check_run_dir(run_dir: Path, config: RunConfig, resume: bool, fresh: bool) -> None:
    """Refuse a folder that holds another run or files that are not a run, or nothing to
    resume; say whether this run is finished, continued or started over."""
    saved = run_dir / "config.json"
    if saved.exists():
        differs = config.differs_from(read_json(saved))
        if differs:
            raise ClbenchError(
                f"{run_dir} already holds a different run (differs in: {', '.join(differs)}); "
                "choose another --output or --run-id"
            )
        if fresh:
            print(f"clbench: starting the run in {run_dir} over (--fresh)", file=sys.stderr)
        elif (run_dir / "results.json").exists():
            print(
                f"clbench: {run_dir} holds this run, finished; its results follow "
                "(--fresh starts it over)",
                file=sys.stderr,
            )
        else:
            print(
                f"clbench: continuing the unfinished run in {run_dir} (--fresh starts it over)",
                file=sys.stderr,
            )
    elif resume:
        raise ClbenchError(f"nothing to resume: {saved} does not exist")
    elif run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise ClbenchError(
            f"{run_dir} exists and is not a clbench run folder; choose another --output"
        )


def _clear(run_dir: Path) -> None:
    """Delete a run's files for `--fresh`, but the lock this process holds."""
    for path in run_dir.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _say(accelerator: Accelerator, text: str) -> None:
    if accelerator.is_main_process:
        print(text, file=sys.stderr)


def config_of_run(run_dir: str | Path) -> RunConfig:
    """The config a run folder was started with (for `--resume RUN_DIR`)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ClbenchError(f"{run_dir} is not a clbench run folder (no config.json)")
    return RunConfig.from_dict(read_json(path), origin=str(path))


def _new_state() -> dict[str, Any]:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "created_at": created,
        "rows": [],
        "scores": [],
        "stages": [],
        "checkpoint": None,
        "checkpoints": [],
        "probe_rows": [],
        "probe_metrics": [],
        "in_stage": [],  # per matrix row, the points scored within its stage (--eval-every)
        "method_state": {},
        "peak_memory": {},
    }


def _accelerator(config: RunConfig) -> Accelerator:
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # Several processes without a GPU (torchrun or `accelerate launch` on CPUs): accelerate
    # runs them as CPU DDP over gloo only when told it is on the CPU.
    cpu_processes = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=config.grad_accum, cpu=cpu_processes
    )


def _evaluate_all(
    loaded: LoadedModel,
    method: Method,
    tasks: list[TaskData],
    config: RunConfig,
    accelerator: Accelerator,
    when: str,
    run_dir: Path | None = None,
    row: int = 0,
) -> tuple[list[dict[str, float]], float]:
    """Every metric of every task; the primary one of each fills the matrix row. With
    `run_dir` and `config.predictions`, the row's predictions are kept there."""
    started = time.perf_counter()
    keep = predictions.row_dir(run_dir, row) if run_dir and config.predictions else None
    scores = []
    bar = tqdm(
        tasks, desc=f"eval {when}", leave=False, disable=not accelerator.is_local_main_process
    )
    for data in bar:
        method.before_eval(loaded.model, data)
        samples: list[dict[str, Any]] | None = None if keep is None else []
        scores.append(
            evaluate_task(
                loaded.model,
                loaded.tokenizer,
                data,
                accelerator,
                config.eval_batch_size,
                config.max_length,
                None,
                samples,
                config.eval_mode,
            )
        )
        if keep is not None and accelerator.is_main_process:
            predictions.write_cell(keep, data, samples, evaluation_of(data.task, config.eval_mode))
    if accelerator.is_local_main_process:
        cells = ", ".join(
            f"{d.task.name} {s[d.task.metric]:.3f}" for d, s in zip(tasks, scores, strict=True)
        )
        tqdm.write(f"{when}: {cells}")
    return scores, time.perf_counter() - started


def _row0(
    setup: _Setup, config: RunConfig, accelerator: Accelerator, run_dir: Path
) -> tuple[list[dict[str, float]], float, dict[str, Any] | None]:
    """Row 0's scores and seconds, and its `row0` record when a sweep's cache gave it."""

    def evaluate() -> tuple[list[dict[str, float]], float]:
        loaded, method, tasks = setup.loaded, setup.method, setup.tasks
        return _evaluate_all(loaded, method, tasks, config, accelerator, "before training", run_dir)

    shareable = not setup.method.changes_model_before_training and accelerator.num_processes == 1
    if setup.row0_cache is None or not shareable:
        return (*evaluate(), None)
    from clbench.sweep.row0 import row0_key, shared_row0

    key = row0_key(config, setup.tasks, setup.loaded.info)
    return shared_row0(setup.row0_cache, key, run_dir, evaluate)


def _in_stage_eval(
    setup: _Setup,
    config: RunConfig,
    accelerator: Accelerator,
    state: dict,
    stage: Stage,
    resume: dict[str, Any] | None,
) -> InStageEval | None:
    """What scores the language-modelling tasks every `eval_every` optimizer steps of `stage`
    into state.json's `in_stage` record of the stage (None when there is nothing to score).
    The record keeps the points up to the step checkpoint the stage resumes from (`resume`),
    and none if it starts over; records of later stages, left by a fallback, are dropped."""
    k, kept = stage.index, state.get("in_stage") or []
    resumed_at = resume["step"] if resume else 0
    points = [p for p in (kept[k] if len(kept) > k else []) if p["step"] <= resumed_at]
    state["in_stage"] = [*(kept + [[]] * k)[:k], points]
    tasks = _curve_tasks(setup.tasks)
    if not config.eval_every or not tasks:
        return None
    loaded = setup.loaded

    def evaluate(step: int) -> None:
        if step % config.eval_every:
            return
        started = time.perf_counter()
        # No `before_eval`: a method selecting a task's adapter would change the training that
        # goes on after this point.
        scores = {
            d.task.name: evaluate_task(
                loaded.model,
                loaded.tokenizer,
                d,
                accelerator,
                config.eval_batch_size,
                config.max_length,
                mode=config.eval_mode,
            )
            for d in tasks
        }
        trained = _tokens_trained(state) + stage.cost.reduced(accelerator).train_tokens
        points.append({"stage": k, "step": step, "train_tokens": trained, "scores": scores})
        stage.cost.eval_seconds += time.perf_counter() - started

    return evaluate


def _tokens_trained(state: dict) -> int:
    """The tokens trained on in the finished stages (a state.json from before the cost block
    has none recorded)."""
    return (state.get("cost") or {}).get("train_tokens", 0)


def _curve_tasks(tasks: list[TaskData]) -> list[TaskData]:
    """The tasks scored within a stage: the language-modelling ones (scored by their loss,
    which is cheap; the figure of continual pre-training is about the loss)."""
    return [d for d in tasks if d.task.evaluation == "loss"]


def _probe_row(
    state: dict, setup: _Setup, accelerator: Accelerator, config: RunConfig
) -> dict[str, float]:
    """Score the probes into the next probe-matrix row; returns its timing for the stage."""
    if not setup.probes:
        return {}
    started = time.perf_counter()
    loaded = setup.loaded
    row = evaluate_probes(setup.probes, loaded.model, loaded.tokenizer, accelerator, config)
    state["probe_rows"].append(row)
    state["probe_metrics"] = [p.metric for p in setup.probes]
    if accelerator.is_local_main_process:
        pairs = zip(setup.probes, row, strict=True)
        cells = ", ".join(f"{p.name} {v:.3f}" for p, v in pairs if v is not None)
        tqdm.write(f"probes: {cells}")
    return {"probe_seconds": time.perf_counter() - started}


def _add_row(state: dict, tasks: list[TaskData], scores: list[dict[str, float]]) -> None:
    state["rows"].append([s[d.task.metric] for d, s in zip(tasks, scores, strict=True)])
    state["scores"].append(scores)


def _save_progress(
    run_dir: Path,
    state: dict,
    model: torch.nn.Module,
    method: Method,
    accelerator: Accelerator,
    stage: int,
) -> None:
    """Checkpoint, then state.json pointing at it, then drop the checkpoints older than the
    one before it (clbench.training.checkpoints)."""
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    method_state = method.state_dict()
    if stage > 0:  # stage 0 changed no weight; a resume rebuilds it from the seed
        checkpoints.save(run_dir, state, stage, accelerator.unwrap_model(model), method_state)
    state["method_state"] = {
        k: v for k, v in method_state.items() if not isinstance(v, torch.Tensor)
    }
    state.pop("step_checkpoint", None)  # the stage is saved; remove_old_checkpoints deletes it
    previous = state.get("peak_memory") or {}
    now = peak_memory_mb()
    state["peak_memory"] = {
        k: max(filter(None, [previous.get(k), now[k]]), default=None) for k in now
    }
    write_json(run_dir / "state.json", state)
    remove_old_checkpoints(run_dir, keep=checkpoints.kept(state))
    accelerator.wait_for_everyone()


def _results(
    config: RunConfig,
    setup: _Setup,
    state: dict,
    run_dir: Path,
    accelerator: Accelerator,
    recorded: dict[str, Any],
) -> Results:
    """The finished run, checked against the results schema (docs/results-schema.md).
    `recorded` holds its `protocol` block and its `single_task` references."""
    single_task = recorded["single_task"]
    model = accelerator.unwrap_model(setup.loaded.model)
    matrix = state["rows"]
    task_metrics = [d.task.metric for d in setup.tasks]  # their directions (metrics.py)
    probes = probe_results(setup.probes, state, config)
    content = {
        "schema_version": SCHEMA_VERSION,
        "clbench_version": __version__,
        "run_id": run_dir.name,
        "created_at": state["created_at"],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sequence": {
            "name": setup.sequence_name,
            "tasks": [
                {
                    "name": d.task.name,
                    "family": d.task.family,
                    "metric": d.task.metric,
                    "train_size": len(d.train),
                    "test_size": len(d.test),
                    "fingerprint": d.fingerprints["test"],
                    "train_fingerprint": d.fingerprints["train"],
                    "evaluation": evaluation_of(d.task, config.eval_mode),
                }
                for d in setup.tasks
            ],
        },
        "method": setup.method.describe(),
        "model": {
            **setup.loaded.info,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peft": {"type": "lora", "r": config.lora_r, "alpha": config.lora_alpha}
            if config.peft == "lora"
            else None,
        },
        "seed": config.seed,
        "budget": {key: getattr(config, key) for key in BUDGET_FIELDS},
        "protocol": recorded["protocol"],
        "config": config.to_dict(),
        "matrix": matrix,
        "single_task": single_task,
        "probes": probes,
        "scores": state["scores"],  # every metric of every cell, the matrix's included
        "predictions": predictions.block(run_dir, [d.task.name for d in setup.tasks], len(matrix)),
        "metrics": metrics.compute_all(
            matrix, single_task, None if probes is None else probes["matrix"], task_metrics
        ),
        "curves": metrics.curves(matrix, single_task, task_metrics),
        "curves_in_stage": {
            "eval_every": config.eval_every,
            "tasks": [d.task.name for d in _curve_tasks(setup.tasks)],
            "points": [point for points in state["in_stage"] for point in points],
        }
        if config.eval_every
        else None,
        "timings": {"stages": state["stages"]},
        "diverged": guard.diverged(state["stages"]),
        "cost": cost_block(state),
        "row0": state.get("row0"),
        "peak_memory": state["peak_memory"],
        "environment": environment(
            str(accelerator.device), accelerator.num_processes, accelerator.mixed_precision
        ),
    }
    return Results.from_json(content)
