"""The `clbench` command line (SPEC section 5)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from clbench.config import RunConfig
from clbench.errors import ClbenchError

# Flags of `run` that set a RunConfig field directly: flag dest -> type.
RUN_FIELDS: dict[str, type] = {
    "sequence": str,
    "method": str,
    "model": str,
    "seed": int,
    "output": str,
    "run_id": str,
    "peft": str,
    "steps_per_task": int,
    "epochs": int,
    "batch_size": int,
    "grad_accum": int,
    "lr": float,
    "lr_scheduler": str,
    "warmup_steps": int,
    "max_length": int,
    "data_dir": str,
    "max_train_examples": int,
    "max_test_examples": int,
    "eval_batch_size": int,
    "mixed_precision": str,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except ClbenchError as err:
        print(f"clbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "clbench: interrupted; finished stages are saved (continue with --resume)",
            file=sys.stderr,
        )
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train a method over a sequence and fill the matrix")
    for name, kind in RUN_FIELDS.items():
        run.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=f"(default: {getattr(RunConfig(), name)})",
        )
    run.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method hyper-parameter; repeat for several",
    )
    run.add_argument("--config", help="a YAML file of RunConfig fields; flags override it")
    run.add_argument(
        "--include-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of extra task and sequence YAML files",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN_DIR",
        help="continue an unfinished run from its last finished stage",
    )
    run.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="K",
        help="stop after K stages this time (resume later)",
    )
    run.set_defaults(handler=_run)

    listing = commands.add_parser("list", help="list registered names")
    listing.add_argument("what", choices=["tasks", "sequences", "methods", "models"])
    listing.add_argument("--include-path", action="append", default=[], metavar="DIR")
    listing.set_defaults(handler=_list)

    rep = commands.add_parser("report", help="tables of the matrix and metrics of runs")
    rep.add_argument("runs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    rep.set_defaults(handler=_report)
    download = commands.add_parser("download", help="write a sequence's data in the mirror layout")
    download.add_argument("--sequence", required=True)
    download.add_argument("--data-dir", required=True)
    download.add_argument("--include-path", action="append", default=[], metavar="DIR")
    download.set_defaults(handler=_download)
    return parser


def _download(args: argparse.Namespace) -> int:
    from clbench.hub import download

    for line in download(args.sequence, args.data_dir, tuple(args.include_path)):
        print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    from clbench.report import report
    from clbench.results import load_results
    from clbench.runner import config_of_run, run

    given = {name: getattr(args, name) for name in RUN_FIELDS if getattr(args, name) is not None}
    if args.method_arg:
        given["method_args"] = _method_args(args.method_arg)
    if isinstance(args.resume, str):  # --resume RUN_DIR: the run's own config
        if given or args.config:
            raise ClbenchError(
                "--resume RUN_DIR takes its config from the run; give no other settings"
            )
        config = config_of_run(args.resume)
    elif args.config:
        config = RunConfig.from_yaml(args.config, overrides=given)
    else:
        config = RunConfig.from_dict(given, origin="command line")
    if args.stop_after is not None and args.stop_after < 1:
        raise ClbenchError("--stop-after must be >= 1")
    run_dir = run(
        config,
        resume=args.resume is not None,
        include=tuple(args.include_path),
        stop_after=args.stop_after,
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`, one process reports
        return 0
    if (run_dir / "results.json").exists():
        print(report([load_results(run_dir)]))
        print(f"results: {run_dir / 'results.json'}\nheatmap: {run_dir / 'matrix.png'}")
    else:
        print(f"stopped; continue with: clbench run --resume {run_dir}")
    return 0


def _method_args(pairs: list[str]) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ClbenchError(f"--method-arg {pair!r}: expected KEY=VALUE")
        values[key] = yaml.safe_load(text)  # 0.5 -> float, 10 -> int, true -> bool
    return values


def _list(args: argparse.Namespace) -> int:
    from clbench import registry
    from clbench.method import method_names
    from clbench.models import BUILTIN_MODELS

    include = tuple(args.include_path)
    if args.what == "tasks":
        for name, path in sorted(registry.task_names(include).items()):
            print(f"{name:32} {os.path.relpath(path)}")
    elif args.what == "sequences":
        for name, path in sorted(registry.sequence_names(include).items()):
            tasks = registry.load_sequence(name, include).tasks
            print(f"{name:24} {len(tasks):3} tasks  {Path(path).name}")
    elif args.what == "methods":
        for name, target in sorted(method_names().items()):
            print(f"{name:24} {target}")
    else:
        for name, text in BUILTIN_MODELS.items():
            print(f"{name:24} {text}")
        print("(any Hugging Face causal LM id or local folder works too)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from clbench.report import report
    from clbench.results import load_results

    print(report([load_results(path) for path in args.runs], args.format), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
