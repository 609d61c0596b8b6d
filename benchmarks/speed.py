"""Speed of clbench against a bare PyTorch loop and against lm-eval, at the same thread count.

    python benchmarks/speed.py --data-dir DATA_DIR [--workload all] [--threads 2] [--repeats 1]
        [--concurrent] [--quick]

1. The CL workloads of benchmarks/bare_loop.py (SmolLM2-135M; 64 train examples a task; 128
   tokens; LoRA r8 on every linear layer; 8 steps of batch 8 a task; the full (T+1) x T
   matrix): classification (agnews, yahoo, dbpedia; 100 test examples a task; label ranking)
   and generation (multi30k_en-de, multi30k_en-fr; 32 test examples a task; greedy
   translation scored by chrF), as `--workload` selects (default: both). Each runs in the bare
   loop and in clbench (`clbench.training.runner.run`, seq-ft), each side in a fresh process
   with the same thread count: alternately (the default), or with `--concurrent` both at the
   same time (1 thread each unless `--threads` says otherwise), so that other work on the
   machine disturbs both alike. Both use the same seeds and data, so their matrices must
   agree: no cell may differ by more than the workload's MATRIX_TOLERANCE; for generation the
   record also counts the texts the two sides generated identically. The record holds the
   ratios bare / clbench of the training, evaluation and whole-run seconds (above 1: clbench
   faster).
2. Option scoring: clbench's two exact strategies (one-pass, shared-cache) on each task's test
   prompts with the base model, timed with the padded-token fraction of each; this is the
   measurement behind `ONE_PASS_MIN_LONGER_OPTIONS` in clbench/evaluation/evaluate.py.
3. clbench's evaluator against lm-eval on the same exported task (lm_eval_speed.compare):
   dbpedia (14 options) against `multiple_choice`, and multi30k_en-de against
   `generate_until`.

--quick runs every part at tiny sizes, to check that it all works (its times mean nothing).
Progress is printed as it goes. Writes results/speed.json (results/speed-quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling scripts, when this file is run as a script

from bare_loop import WORKLOADS, arguments, for_workload  # noqa: E402
from lm_eval_speed import compare, versions  # noqa: E402

from clbench.data import registry  # noqa: E402
from clbench.data.encoding import encode_prompt, encode_target  # noqa: E402
from clbench.evaluation.evaluate import TokenCounts, counting, option_scores  # noqa: E402
from clbench.training.models import LoadedModel, load_model  # noqa: E402

# The largest difference allowed in any cell, for predictions decided by a near-tie that the
# two sides' float rounding breaks differently (their batches are padded differently).
MATRIX_TOLERANCE = {
    # accuracies on 100 test examples: at most 2 examples may differ
    "classification": 0.02,
    # corpus chrF on 32 texts: a text that takes another token at a near-tie goes its own way
    # from there; one such text in 32 moves the corpus statistics by at most about 1/32
    "generation": 0.03,
}
# Tiny sizes for --quick: the workload's options, then the lm-eval and strategy parts.
# 96 tokens leave generation's 64 new tokens room for a prompt.
QUICK = ["--train", "8", "--test", "6", "--steps", "2", "--batch-size", "4", "--max-length", "96"]
QUICK_EXAMPLES = 4
FULL_EXAMPLES = {"dbpedia": 32, "multi30k_en-de": 32}
STRATEGY_EXAMPLES = 100


def main() -> None:
    args = parse(sys.argv[1:])
    torch.set_num_threads(args.threads)
    if args.side:
        record = clbench_side(for_workload(args, args.workload))
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return
    started = time.perf_counter()
    record: dict[str, Any] = {
        "date": datetime.now(timezone.utc).date().isoformat(),
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "threads": args.threads,
        "mode": mode(args),
        "quick": args.quick,
        "workload": {k: v for k, v in vars(args).items() if k not in ("data_dir", "side", "out")},
        "environment": versions(),
    }
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    for workload in workloads:
        record[workload] = compare_sides(for_workload(args, workload))
    if not args.workloads_only:
        loaded = load_model(args.model)
        record["option_strategies"] = option_strategies(loaded, args)
        record["lm_eval"] = lm_eval_comparisons(loaded, args)
    record["benchmark_seconds"] = time.perf_counter() - started
    name = "speed-quick.json" if args.quick else "speed.json"
    if args.workloads_only:  # beside the full record, not over it
        name = name.replace(".json", f"-workloads-{record['mode']}-{args.threads}t.json")
    out = HERE / "results" / name
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"speed: done in {record['benchmark_seconds']:.0f} s; wrote {out}")
    differing = [w for w in workloads if not record[w]["matrices_agree"]]
    if differing:
        sys.exit(f"speed: the matrices of {', '.join(differing)} differ by more than allowed")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line's options, with `--quick`'s sizes where it gives none of its own."""
    parser = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="run the two sides at the same time (default: alternately)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that it runs")
    parser.add_argument(
        "--workloads-only",
        action="store_true",
        help="part 1 only (no option strategies, no lm-eval); writes speed-workloads-*.json",
    )
    parser.add_argument("--side", choices=["clbench"], help=argparse.SUPPRESS)  # one child run
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args = parser.parse_args([*QUICK, *argv])
    if args.tasks and args.workload == "all":
        parser.error("--tasks needs a single --workload")
    # Side by side, each side gets its own threads: one each unless told otherwise.
    args.threads = args.threads or (1 if args.concurrent else torch.get_num_threads())
    return args


def mode(args: argparse.Namespace) -> str:
    return "concurrent" if args.concurrent else "alternate"


def compare_sides(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides of `args.workload`, `args.repeats` times each, alternately or at the same
    time; their matrices and time ratios."""
    runs: dict[str, list[dict]] = {"bare": [], "clbench": []}
    turns = [list(runs)] if args.concurrent else [[side] for side in runs]
    for repeat in range(args.repeats):
        for sides in turns:
            which = " and ".join(sides)
            progress(f"{args.workload} workload, {which} (run {repeat + 1} of {args.repeats})")
            for side, record in run_sides(sides, args).items():
                runs[side].append(record)
                progress(f"{side} took {record['whole_seconds']:.0f} s")
    bare, ours = runs["bare"][0], runs["clbench"][0]
    differences = [
        abs(a - b)
        for row_a, row_b in zip(bare["matrix"], ours["matrix"], strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    ]
    tolerance = MATRIX_TOLERANCE[args.workload]
    agree = max(differences) <= tolerance
    last_losses = {side: [losses[-1] for losses in r[0]["losses"]] for side, r in runs.items()}
    progress(f"matrices agree within {tolerance}: {agree} (largest: {max(differences)})")
    medians = {
        side: {
            part: statistics.median(total(run, part) for run in side_runs)
            for part in ("train", "eval", "whole")
        }
        for side, side_runs in runs.items()
    }
    compared: dict[str, Any] = {
        "mode": mode(args),
        "tasks": args.tasks,
        "test_examples": args.test,
        "runs": runs,
        "matrix_tolerance": tolerance,
        "matrices_agree": agree,
        "largest_cell_difference": max(differences),
        "cells_differing": sum(d > 0 for d in differences),
        # The last loss of each stage; training on the same batches, they should be equal.
        "last_losses": last_losses,
        "largest_last_loss_difference": max(
            abs(a - b) for a, b in zip(*last_losses.values(), strict=True)
        ),
        "median_seconds": medians,
        # bare / clbench: above 1, clbench is faster.
        "speedup": {
            part: medians["bare"][part] / medians["clbench"][part] for part in medians["bare"]
        },
    }
    if args.workload == "generation":
        compared |= identical_texts(bare["predictions"], ours["predictions"])
    return compared


def identical_texts(bare: list, ours: list) -> dict[str, Any]:
    """How many of the texts the two sides generated are the same, per cell and in all."""
    cells = [
        [sum(a == b for a, b in zip(x, y, strict=True)) for x, y in zip(row_a, row_b, strict=True)]
        for row_a, row_b in zip(bare, ours, strict=True)
    ]
    return {
        "identical_texts_per_cell": cells,
        "identical_texts": sum(map(sum, cells)),
        "texts": sum(len(texts) for row in bare for texts in row),
    }


def total(run: dict[str, Any], part: str) -> float:
    return run["whole_seconds"] if part == "whole" else sum(run[f"{part}_seconds"])


def run_sides(sides: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One run of the workload by each of `sides`, all at the same time, each in a fresh
    process with `args.threads` threads."""
    workload = [
        *("--workload", args.workload),
        *("--data-dir", args.data_dir, "--model", args.model, "--tasks", *args.tasks),
        *("--train", args.train, "--test", args.test, "--max-length", args.max_length),
        *("--steps", args.steps, "--batch-size", args.batch_size),
        *("--eval-batch-size", args.eval_batch_size, "--lr", args.lr, "--seed", args.seed),
        *("--lora-r", args.lora_r, "--lora-alpha", args.lora_alpha, "--threads", args.threads),
    ]
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as scratch:
        outs = {side: Path(scratch) / f"{side}.json" for side in sides}
        processes = {}
        for side in sides:
            script = HERE / ("bare_loop.py" if side == "bare" else "speed.py")
            extra = ["--side", "clbench"] if side == "clbench" else []
            command = [sys.executable, str(script), *map(str, workload), *extra]
            command += ["--out", str(outs[side])]
            processes[side] = subprocess.Popen(command, env=env)
        for process in processes.values():  # all of them, before any failure is raised
            process.wait()
        for process in processes.values():
            if process.returncode:
                raise subprocess.CalledProcessError(process.returncode, process.args)
        return {side: json.loads(out.read_text(encoding="utf-8")) for side, out in outs.items()}


def clbench_side(args: argparse.Namespace) -> dict[str, Any]:
    """The workload as a clbench run (in this process); the same record as the bare loop's."""
    from clbench.config import RunConfig
    from clbench.training.runner import run

    with tempfile.TemporaryDirectory() as scratch:
        include = Path(scratch) / "tasks"
        include.mkdir()
        sequence = {"name": f"speed-{args.workload}", "tasks": args.tasks}
        (include / f"speed-{args.workload}.yaml").write_text(yaml.safe_dump(sequence))
        config = RunConfig(
            sequence=f"speed-{args.workload}",
            model=args.model,
            peft="lora",
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            seed=args.seed,
            steps_per_task=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_length,
            mixed_precision="no",
            data_dir=args.data_dir,
            max_train_examples=args.train,
            max_test_examples=args.test,
            eval_batch_size=args.eval_batch_size,
            output=str(Path(scratch) / "runs"),
        )
        started = time.perf_counter()
        run_dir = run(config, include=(str(include),))
        whole = time.perf_counter() - started
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        stages = results["timings"]["stages"]
        record = {
            "matrix": results["matrix"],
            "train_seconds": [s["train_seconds"] for s in stages[1:]],
            "eval_seconds": [s["eval_seconds"] for s in stages],
            "losses": [[s["final_loss"]] for s in stages[1:]],
            "train_padded_fraction": [s.get("padded_fraction") for s in stages[1:]],
            "whole_seconds": whole,
            "threads": torch.get_num_threads(),
        }
        if args.workload == "generation":  # read before the run folder goes
            record["predictions"] = generated_texts(run_dir, args.tasks, len(stages))
    return record


def generated_texts(run_dir: Path, tasks: list[str], rows: int) -> list[list[list[Any]]]:
    """[row][task]: the predictions the run kept (docs/results-schema.md#predictions)."""
    return [
        [
            [json.loads(line)["prediction"] for line in path.read_text("utf-8").splitlines()]
            for path in (run_dir / "predictions" / f"row{k}" / f"{t}.jsonl" for t in tasks)
        ]
        for k in range(rows)
    ]


def option_strategies(loaded: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds and padded-token fraction of each option-scoring strategy, per task."""
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    n = QUICK_EXAMPLES if args.quick else STRATEGY_EXAMPLES
    measured = {}
    for name in ranked_tasks(args):
        data = registry.load_task(name).load(args.data_dir, max_test=n)
        option_ids = [encode_target(tokenizer, o) for o in data.options]
        room = args.max_length - max(len(ids) for ids in option_ids)
        contexts = [encode_prompt(tokenizer, e.prompt, room) for e in data.test]
        lengths = [len(c) for c in contexts]
        entry: dict[str, Any] = {
            "examples": len(contexts),
            "options": len(option_ids),
            "options_longer_than_one_token": sum(len(ids) > 1 for ids in option_ids),
            # Padding of the prompt batches alone, before (the data's order, as the bare loop
            # batches) and after grouping by length (as clbench batches).
            "prompt_padded_fraction": {
                "data_order": padded_fraction(lengths, args.eval_batch_size),
                "by_length": padded_fraction(sorted(lengths), args.eval_batch_size),
            },
        }
        scores = {}
        for strategy in ("shared-cache", "one-pass"):
            progress(f"option scoring: {name}, {strategy}")
            counts = TokenCounts()
            started = time.perf_counter()
            with torch.inference_mode(), counting(counts):
                scores[strategy] = option_scores(
                    model,
                    contexts,
                    option_ids,
                    tokenizer.pad_token_id,
                    args.eval_batch_size,
                    torch.device("cpu"),
                    name,
                    strategy=strategy,
                )
            entry[strategy] = {
                "seconds": time.perf_counter() - started,
                "padded_fraction": counts.padded_fraction,
            }
        difference = (scores["one-pass"] - scores["shared-cache"]).abs().max()
        entry["largest_log_likelihood_difference"] = float(difference)
        measured[name] = entry
    return measured


def ranked_tasks(args: argparse.Namespace) -> list[str]:
    """Part 2's tasks: the classification workload's, or `--tasks` if that is the workload."""
    chosen = args.tasks if args.workload == "classification" else None
    return chosen or WORKLOADS["classification"]["tasks"]


def padded_fraction(lengths: list[int], batch_size: int) -> float:
    """Padding's share of the positions of left-padded batches of `lengths`, in that order."""
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    positions = sum(max(batch) * len(batch) for batch in batches)
    return 1 - sum(lengths) / positions


def lm_eval_comparisons(loaded: LoadedModel, args: argparse.Namespace) -> list[dict[str, Any]]:
    comparisons = []
    for task, n in FULL_EXAMPLES.items():
        n = QUICK_EXAMPLES if args.quick else n
        progress(f"clbench against lm-eval: {task}, {n} examples")
        record = compare(
            loaded, task, args.data_dir, n, args.eval_batch_size, repeats=1, warmup=False
        )
        progress(f"{task}: speed-up {record['speedup']:.2f}x")
        comparisons.append(record)
    return comparisons


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [x for x in cpuinfo.read_text().splitlines() if x.startswith("model name")]
        model = names[0].split(":", 1)[1].strip() if names else ""
    return {
        "cpu": model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def progress(message: str) -> None:
    print(f"speed [{time.strftime('%H:%M:%S')}]: {message}", flush=True)


if __name__ == "__main__":
    main()
