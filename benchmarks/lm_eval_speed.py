"""clbench's evaluator against lm-eval on the same model, data and prompts: the wall time of
each, the score each reports and how many predictions agree.

    python benchmarks/lm_eval_speed.py --data-dir DATA_DIR [--task agnews] [--n 64]

The task is exported with `clbench export-lm-eval`; both sides then score the same test
examples with the in-memory `smollm2-135m` at the same batch size. A ranked task runs as
lm-eval's `multiple_choice` (its predictions: the option with the highest log-likelihood), a
generated-text task as `generate_until` (its predictions: the text cut at the stop strings).
Each side runs once to warm up, then `--repeats` times; the median is reported. lm-eval's time
includes building its requests from the documents, which is part of every lm-eval evaluation.
Writes results/lm_eval_speed.json; `compare` is what benchmarks/speed.py calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from clbench.data import registry
from clbench.evaluation.evaluate import predict_task
from clbench.reporting.lm_eval_export import export
from clbench.training.models import LoadedModel, load_model

OUT = Path(__file__).resolve().parent / "results" / "lm_eval_speed.json"
# Long enough that no prompt is cut on either side.
MAX_LENGTH = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--task", default="agnews")
    parser.add_argument("--n", type=int, default=64, help="test examples")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    record = compare(
        load_model("smollm2-135m"), args.task, args.data_dir, args.n, args.batch_size, args.repeats
    )
    record["environment"] = {"cpu_threads": torch.get_num_threads(), **versions()}
    OUT.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))


def compare(
    loaded: LoadedModel,
    task_name: str,
    data_dir: str,
    n: int,
    batch_size: int,
    repeats: int,
    warmup: bool = True,
) -> dict[str, Any]:
    """Time clbench and lm-eval on the first `n` test examples of `task_name`; the record
    holds each side's median seconds and score, and how many predictions agree."""
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    data = registry.load_task(task_name).load(data_dir, max_test=n)
    metric = data.task.metric
    ranked = data.task.evaluation == "rank"
    accelerator = Accelerator(cpu=True)
    with tempfile.TemporaryDirectory() as folder:
        export(task_name, folder, data_dir=data_dir, max_test_examples=n)
        manager = TaskManager(include_path=folder)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)

        def ours() -> tuple[float, tuple]:
            predictions = predict_task(model, tokenizer, data, accelerator, batch_size, MAX_LENGTH)
            return data.score(predictions)[metric], tuple(predictions)

        def theirs() -> tuple[float, tuple]:
            output = simple_evaluate(
                model=lm,
                tasks=[task_name],
                task_manager=manager,
                bootstrap_iters=0,
                log_samples=True,
            )
            samples = sorted(output["samples"][task_name], key=lambda s: s["doc_id"])
            if ranked:
                predictions = [
                    max(range(len(s["filtered_resps"])), key=lambda i: s["filtered_resps"][i][0])
                    for s in samples
                ]
                score = output["results"][task_name]["acc,none"]
            else:  # the exported task strips the text before scoring it
                predictions = [s["filtered_resps"][0].strip() for s in samples]
                score = output["results"][task_name][f"{metric},none"]
            return score, tuple(predictions)

        measured = {
            "clbench": timed(ours, repeats, warmup),
            "lm-eval": timed(theirs, repeats, warmup),
        }
    ours_predictions, their_predictions = (m.pop("predictions") for m in measured.values())
    agree = sum(a == b for a, b in zip(ours_predictions, their_predictions, strict=True))
    return {
        "task": task_name,
        "lm_eval_output_type": "multiple_choice" if ranked else "generate_until",
        "metric": metric,
        "test_examples": len(data.test),
        "options": len(data.options) if ranked else None,
        "batch_size": batch_size,
        "repeats": repeats,
        **{f"{name}_seconds": m["seconds"] for name, m in measured.items()},
        **{f"{name}_score": m["score"] for name, m in measured.items()},
        "predictions_agreeing": agree,
        "speedup": measured["lm-eval"]["seconds"] / measured["clbench"]["seconds"],
    }


def timed(side: Callable[[], tuple[float, tuple]], repeats: int, warmup: bool) -> dict[str, Any]:
    """The median seconds of `repeats` calls of `side`, after one more to warm up; its score
    and predictions, which must be the same every time."""
    if warmup:
        side()
    seconds, results = [], set()
    for _ in range(repeats):
        started = time.perf_counter()
        results.add(side())
        seconds.append(time.perf_counter() - started)
    ((score, predictions),) = results  # the same every time
    return {"seconds": statistics.median(seconds), "score": score, "predictions": predictions}


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "peft": version("peft"),
        "lm_eval": version("lm-eval"),
    }


if __name__ == "__main__":
    main()
