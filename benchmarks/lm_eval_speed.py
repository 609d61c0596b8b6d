"""clbench's evaluator against lm-eval's `multiple_choice` on the same model, data and prompts:
the wall time of each and the accuracy each reports (they must be equal).

    python benchmarks/lm_eval_speed.py --data-dir DATA_DIR [--task agnews] [--n 64]

The task is exported with `clbench export-lm-eval`; both sides then score the same test
examples with the in-memory `smollm2-135m` at the same batch size. Each side runs once to warm
up, then `--repeats` times; the median is reported. lm-eval's time includes building its
requests from the documents, which is part of every lm-eval evaluation. Writes
results/lm_eval_speed.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import Accelerator

from clbench.data import registry
from clbench.evaluation.evaluate import evaluate_task
from clbench.reporting.lm_eval_export import export
from clbench.training.models import load_model

OUT = Path(__file__).resolve().parent / "results" / "lm_eval_speed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--task", default="agnews")
    parser.add_argument("--n", type=int, default=64, help="test examples")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    loaded = load_model("smollm2-135m")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    data = registry.load_task(args.task).load(args.data_dir, max_test=args.n)
    accelerator = Accelerator(cpu=True)
    with tempfile.TemporaryDirectory() as folder:
        export(args.task, folder, data_dir=args.data_dir, max_test_examples=args.n)
        manager = TaskManager(include_path=folder)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)

        def ours() -> float:
            scores = evaluate_task(model, tokenizer, data, accelerator, args.batch_size, 2048)
            return scores["accuracy"]

        def theirs() -> float:
            output = simple_evaluate(
                model=lm, tasks=[args.task], task_manager=manager, bootstrap_iters=0
            )
            return output["results"][args.task]["acc,none"]

        sides = {"clbench": ours, "lm-eval": theirs}
        measured = {name: timed(side, args.repeats) for name, side in sides.items()}
    record = {
        "task": args.task,
        "test_examples": len(data.test),
        "options": len(data.options),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        **{f"{name}_seconds": m["seconds"] for name, m in measured.items()},
        **{f"{name}_accuracy": m["accuracy"] for name, m in measured.items()},
        "speedup": measured["lm-eval"]["seconds"] / measured["clbench"]["seconds"],
        "environment": {
            "cpu_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": version("transformers"),
            "lm_eval": version("lm-eval"),
        },
    }
    OUT.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))


def timed(side, repeats: int) -> dict[str, float]:
    side()  # warm-up
    seconds, results = [], set()
    for _ in range(repeats):
        started = time.perf_counter()
        results.add(side())
        seconds.append(time.perf_counter() - started)
    (accuracy,) = results  # the same every time
    return {"seconds": statistics.median(seconds), "accuracy": accuracy}


if __name__ == "__main__":
    main()
