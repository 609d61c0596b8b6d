"""General-ability probes: tasks outside the sequence, scored before training and after every
stage, which fill a (T+1) x P probe matrix next to the (T+1) x T one.

A probe is an lm-eval task or group (lm-eval's own, or one in a `--probe-include` folder), or
a clbench task that is not in the sequence. lm-eval probes run through lm-eval itself, on the
in-memory model (adapters included) wrapped in its `HFLM`, with a pinned batch size; clbench
probes run through clbench's evaluator. `load_probes` resolves every name and loads its data
before the model is loaded, so a bad probe fails before any training.

Probes see the model as the method leaves it after a stage, with no task-specific setup (a
probe has no task identity to select an adapter or prompt with).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch
from accelerate import Accelerator

from clbench.config import RunConfig
from clbench.data import registry
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import evaluate_task
from clbench.metrics import general_forgetting

LM_EVAL = "lm-eval"
CLBENCH = "clbench"


@dataclass
class Probe:
    name: str
    source: str  # LM_EVAL or CLBENCH
    target: Any  # the loaded lm-eval Task or Group, or the clbench TaskData
    metric: str | None = None  # lm-eval's "<metric>,<filter>" key is known after a first run


def load_probes(
    config: RunConfig, include: tuple[str, ...], sequence_tasks: list[str]
) -> list[Probe]:
    """Every probe of `config`, resolved and with its data loaded."""
    names = config.probes or []
    known = registry.task_names(include)
    probes, lm_eval_names = [], []
    for name in names:
        if name in sequence_tasks:
            raise ClbenchError(
                f"probe {name!r} is a task of the sequence; its scores are already in the matrix"
            )
        if name in known:
            data = registry.load_task(name, include).load(
                config.data_dir, max_train=1, max_test=config.probe_limit
            )
            probes.append(Probe(name, CLBENCH, data, data.task.metric))
        else:
            lm_eval_names.append(name)
            probes.append(Probe(name, LM_EVAL, None))
    if lm_eval_names:
        loaded = _load_lm_eval(lm_eval_names, config.probe_include or [], config.probe_limit)
        for probe in probes:
            if probe.source == LM_EVAL:
                probe.target = loaded[probe.name]
    return probes


def _load_lm_eval(names: list[str], include: list[str], limit: int | None) -> dict:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ClbenchError(
            f"probes {', '.join(names)} are not clbench tasks, and lm-eval is not installed: "
            "pip install 'clbench[lm-eval]'"
        ) from err
    # Its warning that a model object (not a name) was passed is expected here.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # Indexing lm-eval's own thousands of tasks takes about 20 s, which local probes do not need.
    local = TaskManager(include_path=include, include_defaults=False) if include else None
    full = functools.cache(lambda: TaskManager(include_path=include or None))
    known = local.all_tasks if local else []
    for name in names:
        if name not in known and name not in full().all_tasks:
            where = f" or in {', '.join(include)}" if include else ""
            raise ClbenchError(
                f"unknown probe {name!r}: not a clbench task (see `clbench list tasks`) and not "
                f"an lm-eval task, group or tag{where} (see `lm_eval ls tasks`)"
            )
    loaded = {}
    for name in names:
        # A local task may rest on lm-eval's own (a group of them, say): then the full index.
        managers = [lambda: local, full] if name in known else [full]
        for i, manager in enumerate(managers):
            try:
                found = _build(manager(), name, limit)
                break
            except Exception as err:  # lm-eval and datasets raise many kinds
                if i == len(managers) - 1:
                    raise ClbenchError(
                        f"probe {name!r}: lm-eval could not load it, its data or its prompts: "
                        f"{err.__class__.__name__}: {err}"
                    ) from err
        loaded[name] = found["groups"].get(name) or found["tasks"].get(name)
        if loaded[name] is None:  # a tag: tasks with no aggregate score of their own
            raise ClbenchError(
                f"probe {name!r} is an lm-eval tag of {len(found['tasks'])} tasks with no "
                f"score of its own; name its tasks ({', '.join(sorted(found['tasks']))}) instead"
            )
    return loaded


def _build(manager: Any, name: str, limit: int | None) -> dict:
    """The task or group `name`, its data read and its requests built, as simple_evaluate does."""
    found = manager.load([name])
    for task in found["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.build_all_requests(limit=limit)
    return found


def check_model(probes: list[Probe], model: torch.nn.Module) -> None:
    """Refuse models that lm-eval cannot score: peft prompt learning adds virtual tokens to
    every forward pass, which lm-eval's position arithmetic does not expect."""
    config = getattr(model, "active_peft_config", None)
    if getattr(config, "is_prompt_learning", False):
        names = [p.name for p in probes if p.source == LM_EVAL]
        if names:
            raise ClbenchError(
                f"lm-eval probes ({', '.join(names)}) cannot score a prompt-learning model "
                "(its virtual tokens shift every position); use clbench tasks as probes"
            )


def evaluate_probes(
    probes: list[Probe],
    model: torch.nn.Module,
    tokenizer: Any,
    accelerator: Accelerator,
    config: RunConfig,
) -> list[float | None]:
    """One probe matrix row; lm-eval probes run on the main process only (others get None)."""
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    row: list[float | None] = []
    for probe in probes:
        if probe.source == CLBENCH:
            scores = evaluate_task(
                model, tokenizer, probe.target, accelerator, batch_size(config), config.max_length
            )
            row.append(scores[probe.metric])
        elif accelerator.is_main_process:
            row.append(_lm_eval_score(probe, model, tokenizer, config))
        else:
            row.append(None)
    model.train(was_training)
    return row


def batch_size(config: RunConfig) -> int:
    return config.probe_batch_size or config.eval_batch_size


def _lm_eval_score(probe: Probe, model: Any, tokenizer: Any, config: RunConfig) -> float:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size(config))
    try:
        output = simple_evaluate(
            model=lm,
            tasks=[probe.target],
            # The task is built already; an empty index spares lm-eval's own (about 20 s).
            task_manager=TaskManager(include_defaults=False),
            limit=config.probe_limit,  # the first N documents: the same ones every time
            bootstrap_iters=0,
            log_samples=False,
            # Leave the run's random state alone; few-shot sampling keeps lm-eval's fixed seed.
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
        )
    except Exception as err:
        raise ClbenchError(
            f"probe {probe.name!r}: lm-eval failed: {err.__class__.__name__}: {err}"
        ) from err
    entry = output["results"].get(probe.name, {})
    keys = [k for k in entry if "," in k and "_stderr" not in k]
    if not keys:
        raise ClbenchError(f"probe {probe.name!r}: lm-eval returned no metric ({sorted(entry)})")
    probe.metric = probe.metric or keys[0]
    return float(entry[probe.metric])


def probe_results(
    probes: list[Probe], state: dict[str, Any], config: RunConfig
) -> dict[str, Any] | None:
    """The `probes` block of results.json; general forgetting is row 0 minus the last row."""
    if not probes:
        return None
    rows = state["probe_rows"]
    lm_eval_version = version("lm-eval") if any(p.source == LM_EVAL for p in probes) else None
    return {
        "names": [p.name for p in probes],
        "sources": [p.source for p in probes],
        "metrics": state["probe_metrics"],
        "lm_eval_version": lm_eval_version,
        "limit": config.probe_limit,
        "batch_size": batch_size(config),
        "matrix": rows,
        "general_forgetting": general_forgetting(rows),
    }
