"""The `clbench` command line; its contract is docs/cli.md."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from clbench.config import RunConfig
from clbench.errors import ClbenchError
from clbench.training.signals import Preempted, preemptible

RUN_DESCRIPTION = """\
Train a method over a sequence and fill the (T+1) x T matrix. Every RunConfig field is a flag
(lora_r -> --lora-r); a field that may be null takes the value `none`. Flags override the
--config file."""


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    try:
        args = _parser().parse_args(argv)  # a bad --method-arg raises ClbenchError here
        return args.handler(args) or 0
    except ClbenchError as err:
        print(f"clbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "clbench: interrupted; finished stages are saved (the same command continues)",
            file=sys.stderr,
        )
        return 130
    except Preempted as err:
        print(
            f"clbench: stopped by {err}; finished stages are saved (the same command continues)",
            file=sys.stderr,
        )
        return err.exit_code


_PYTHON_FORMATWARNING = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """clbench's own warnings as one line, like its errors; other packages' as Python shows them."""
    if Path(filename).is_relative_to(Path(__file__).parent):
        return f"clbench: warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of dataclass `cls`, typed by its annotation and described by its
    metadata: `help` (required), and optionally `flag` (another name), `metavar`, and for a
    list `separator` (one value may hold several items). A flag that is not given leaves its
    field out of the namespace, so a `--config` file keeps the fields the user did not set."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for item in dataclasses.fields(cls):
        meta = item.metadata
        if not meta.get("help"):
            raise TypeError(f"{cls.__name__}.{item.name} has no help metadata for its flag")
        kind, nullable = _without_none(hints[item.name])
        base = typing.get_origin(kind) or kind
        element = typing.get_args(kind)[0] if base is list else base
        metavar = meta.get("metavar") or {int: "N", float: "X"}.get(element, item.name.upper())
        options: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS}
        text = meta["help"]
        if base is dict:
            options.update(action=_KeyValue, metavar="KEY=VALUE")
            text += "; repeatable, VALUE read as YAML"
        elif base is list:
            separator = meta.get("separator")
            options.update(action="extend", type=_items(element, separator), metavar=metavar)
            if separator:
                options["metavar"] = f"{metavar}[{separator}{metavar}...]"
            text += f"; {separator}-separated, repeatable" if separator else "; repeatable"
        elif base is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=_scalar(base, nullable), metavar=metavar)
        text = f"{text} (default: {_shown(getattr(defaults, item.name))})"
        flag = meta.get("flag", "--" + item.name.replace("_", "-"))
        parser.add_argument(flag, help=text.replace("%", "%%"), **options)


def config_flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` whose flags `args` holds, by field name."""
    fields = dataclasses.fields(cls)
    return {item.name: getattr(args, item.name) for item in fields if hasattr(args, item.name)}


def _without_none(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); any other annotation -> (itself, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0], len(kinds) < len(typing.get_args(hint))
    return hint, False


def _scalar(kind: type, nullable: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if nullable and text == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse's message: "invalid int value: 'x'"
    return parse


def _items(kind: type, separator: str | None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        parts = [part.strip() for part in text.split(separator)] if separator else [text]
        return [kind(part) for part in parts if part]

    parse.__name__ = kind.__name__
    return parse


def _shown(default: Any) -> str:
    if default is None or default == {}:
        return "none"
    if isinstance(default, list):
        return ",".join(map(str, default))
    return str(default)


class _KeyValue(argparse.Action):
    """Collects repeated `KEY=VALUE` into a dict, each value read as YAML (0.5, 10, true)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        key, sep, text = str(values).partition("=")
        if not sep or not key:
            raise ClbenchError(f"{option_string} {values!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ClbenchError(f"{option_string} {values!r}: VALUE is not valid YAML") from err
        setattr(namespace, self.dest, {**getattr(namespace, self.dest, {}), key: value})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="train a method over a sequence and fill the matrix",
        description=RUN_DESCRIPTION,
    )
    add_config_flags(run, RunConfig)
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
        help="continue an unfinished run from its last finished stage; without it, a run "
        "that is unfinished is continued too, but one that does not exist is started",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="delete the run's files (an unfinished or finished run) and start it over",
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
    listing.add_argument("what", choices=["tasks", "sequences", "protocols", "methods", "models"])
    listing.add_argument("--include-path", action="append", default=[], metavar="DIR")
    listing.set_defaults(handler=_list)

    rep = commands.add_parser(
        "report",
        help="one run's matrix and metrics, or mean ± std, CIs and tests over many runs",
    )
    rep.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR_OR_GLOB",
        help="run folders, folders of runs, results files or globs (quote them)",
    )
    rep.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    rep.add_argument("--baseline", metavar="METHOD", help="test every method against this one")
    rep.add_argument(
        "--metrics",
        help="comma-separated, e.g. aa,fgt,bwt,gf (default: all six, and gf for runs with probes)",
    )
    rep.add_argument(
        "--average-orders",
        action="store_true",
        help="average a method over the task orders of a sequence (standard-cl-order1..3)",
    )
    rep.add_argument("--decimals", type=int, default=1, help="decimals of the percentages")
    rep.add_argument(
        "--interval",
        choices=["std", "ci"],
        default="std",
        help="show mean ± std or mean [95%% CI] (default: std)",
    )
    rep.add_argument(
        "--examples",
        type=int,
        metavar="N",
        help="also show N (prediction, gold) pairs per task after the last stage, ✗ if wrong",
    )
    rep.add_argument(
        "--claims",
        metavar="CLAIMS",
        help="check published orderings, comma-separated [METRIC:]LEFT OP RIGHT with OP one of "
        "> >= < <= and * for every other method, e.g. 'replay>seq-ft,joint>=*,fgt:ewc<seq-ft'",
    )
    rep.add_argument(
        "--power",
        action="store_true",
        help="check the power criteria of the runs' protocol on its seq-ft, replay and joint "
        "runs of one task order; prints PASS or FAIL per criterion",
    )
    rep.set_defaults(handler=_report)

    fig = commands.add_parser("plot", help="a paper figure of runs (PDF, PNG or SVG)")
    fig.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a run folder, results.json file or glob; a folder of runs means all under it",
    )
    fig.add_argument(
        "--kind",
        default="heatmap",
        metavar="{heatmap,curves,stages,bars,general,cost,loss-vs-tokens}",
        help="the matrix, task curves, AA_k/AIA_k by stage, metric bars, the probes of "
        "--probes after every stage, AA against compute, or the language-modelling tasks' "
        "loss against training tokens (default: heatmap)",
    )
    fig.add_argument("--out", required=True, metavar="FILE", help="a .pdf, .png or .svg file")
    fig.add_argument(
        "--width",
        choices=["single", "double"],
        default="single",
        help="one column (3.5 in) or two (7.0 in) of a two-column paper",
    )
    fig.add_argument(
        "--style",
        choices=["auto", "lines", "multiples"],
        default="auto",
        help="curves and stages: every method in colour, or one small panel per method over "
        "the others in grey (default: auto, small multiples above 6 methods)",
    )
    fig.add_argument(
        "--highlight",
        metavar="METHOD",
        help="curves and stages: this method in colour over the others in grey",
    )
    fig.set_defaults(handler=_plot)
    sub = commands.add_parser(
        "submit", help="validate runs and write leaderboard submissions (one per method x model)"
    )
    sub.add_argument("runs", nargs="+", metavar="RUN", help="run folders, results files or globs")
    sub.add_argument("--name", help="the entry's name (default: the method, + LoRA if used)")
    sub.add_argument("--paper", metavar="URL", help="the paper describing the method")
    sub.add_argument("--code", metavar="URL", help="the method's code")
    sub.add_argument("--replace", action="store_true", help="overwrite an existing submission")
    _leaderboard_options(sub)
    sub.set_defaults(handler=_submit)

    board = commands.add_parser("leaderboard", help="validate submissions or build the leaderboard")
    actions = board.add_subparsers(dest="action", required=True)
    validate = actions.add_parser("validate", help="check every submission; fails on any error")
    _leaderboard_options(validate)
    validate.set_defaults(handler=_validate)
    make = actions.add_parser("build", help="write README.md and site/ from the submissions")
    _leaderboard_options(make)
    make.add_argument(
        "--check", action="store_true", help="write nothing; fail if the files are out of date"
    )
    make.set_defaults(handler=_build)

    download = commands.add_parser("download", help="write a sequence's data in the mirror layout")
    download.add_argument("--sequence", required=True)
    download.add_argument("--data-dir", required=True)
    download.add_argument("--include-path", action="append", default=[], metavar="DIR")
    download.set_defaults(handler=_download)

    export = commands.add_parser(
        "export-lm-eval", help="write a clbench task as an lm-eval task folder (YAML + data)"
    )
    export.add_argument("--task", required=True)
    export.add_argument("--name", help="the lm-eval task's name (default: the task's)")
    export.add_argument("--out", required=True, metavar="DIR")
    export.add_argument("--data-dir", help="the local mirror (default: $CLBENCH_DATA_DIR)")
    export.add_argument(
        "--max-test-examples", type=int, metavar="N", help="the same subsample a run takes"
    )
    export.add_argument("--include-path", action="append", default=[], metavar="DIR")
    export.set_defaults(handler=_export)
    from clbench.sweep.command import add_parser as add_sweep_parser

    add_sweep_parser(commands)
    return parser


def _leaderboard_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--leaderboard", default="leaderboard", metavar="DIR", help="(default: leaderboard)"
    )
    parser.add_argument(
        "--data-dir",
        help="the local mirror, for data fingerprints and verification (default: "
        "$CLBENCH_DATA_DIR)",
    )


def _submit(args: argparse.Namespace) -> int:
    from clbench.leaderboard.submission import submit

    root = Path(args.leaderboard)
    options = dict(name=args.name, paper=args.paper, code=args.code, replace=args.replace)
    for path in submit(args.runs, root, data_dir=args.data_dir, **options):
        print(f"wrote {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from clbench.leaderboard.submission import VERIFIED, validate_all

    checked = validate_all(Path(args.leaderboard), args.data_dir)
    for result in checked:
        for error in result.errors:
            print(f"error: {error}", file=sys.stderr)
        for flag in result.flags:
            print(f"flag: {result.path}: {flag}")
        if result.ok:
            why = f" ({'; '.join(result.unverified)})" if result.unverified else ""
            print(f"{result.status}: {result.path}{why}")
    bad = sum(not result.ok for result in checked)
    verified = sum(result.status == VERIFIED for result in checked)
    print(f"{len(checked) - bad} of {len(checked)} submissions valid, {verified} verified")
    return 1 if bad else 0


def _build(args: argparse.Namespace) -> int:
    from clbench.leaderboard.build import build

    paths = build(Path(args.leaderboard), args.data_dir, check=args.check)
    print(("up to date: " if args.check else "wrote ") + ", ".join(map(str, paths)))
    return 0


def _download(args: argparse.Namespace) -> int:
    from clbench.data.download import download

    for line in download(args.sequence, args.data_dir, tuple(args.include_path)):
        print(line)
    return 0


def _export(args: argparse.Namespace) -> int:
    from clbench.reporting.lm_eval_export import export

    if args.max_test_examples is not None and args.max_test_examples < 1:
        raise ClbenchError("--max-test-examples must be >= 1")
    include = tuple(args.include_path)
    written = export(args.task, args.out, args.data_dir, include, args.max_test_examples, args.name)
    for path in written:
        print(f"wrote {path}")
    name = args.name or args.task
    print(f"run it with: lm_eval --model hf --include_path {args.out} --tasks {name} ...")
    return 0


def _run(args: argparse.Namespace) -> int:
    from clbench.reporting.plots import heatmap
    from clbench.reporting.tables import report
    from clbench.results.io import read_results
    from clbench.training.runner import config_of_run, run

    given = config_flag_values(args, RunConfig)
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
    if args.fresh and args.resume is not None:
        raise ClbenchError("--fresh starts the run over; it cannot be given with --resume")
    with preemptible():  # SIGTERM and SIGUSR1 stop the run with exit code 75, Ctrl-C 130
        run_dir = run(
            config,
            resume=args.resume is not None,
            include=tuple(args.include_path),
            stop_after=args.stop_after,
            fresh=args.fresh,
        )
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`, one process reports
        return 0
    if (run_dir / "results.json").exists():
        results = read_results(run_dir)
        heatmap(results).savefig(run_dir / "matrix.png", dpi=150, bbox_inches="tight")
        print(report([results]))
        print(f"results: {run_dir / 'results.json'}\nheatmap: {run_dir / 'matrix.png'}")
    else:
        print(f"stopped; continue with: clbench run --resume {run_dir}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from clbench.data import registry
    from clbench.data.protocol import load_protocol, protocol_names
    from clbench.methods import method_names
    from clbench.training.models import BUILTIN_MODELS

    include = tuple(args.include_path)
    if args.what == "tasks":
        for name, path in sorted(registry.task_names(include).items()):
            print(f"{name:32} {os.path.relpath(path)}")
    elif args.what == "sequences":
        for name, path in sorted(registry.sequence_names(include).items()):
            tasks = registry.load_sequence(name, include).tasks
            print(f"{name:24} {len(tasks):3} tasks  {Path(path).name}")
    elif args.what == "protocols":
        for name, path in sorted(protocol_names(include).items()):
            protocol, where = load_protocol(name, include), os.path.relpath(path)
            print(f"{name:16} v{protocol.version:<3} {protocol.status:12} {where}")
    elif args.what == "methods":
        for name, target in sorted(method_names().items()):
            print(f"{name:24} {target}")
    else:
        for name, text in BUILTIN_MODELS.items():
            print(f"{name:24} {text}")
        print("(any Hugging Face causal LM id or local folder works too)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from clbench.reporting.recompute import recompute_metrics
    from clbench.reporting.tables import claims_table, examples, parse_metrics, report, tables
    from clbench.results.claims import check_claims, parse_claims
    from clbench.results.load import read_runs, reported_metrics, runs_frame

    results = recompute_metrics(read_runs(args.runs))
    if args.power:
        return _power(results, args)
    runs = runs_frame(results)
    metrics = reported_metrics(runs)
    if args.metrics is not None:
        metrics = parse_metrics(args.metrics)
    if len(runs) == 1:  # one run: its whole matrix, as after `clbench run`
        text = report(results, args.format, metrics, args.decimals)
    else:
        text = tables(
            runs,
            args.format,
            baseline=args.baseline,
            metrics=metrics,
            average_orders=args.average_orders,
            decimals=args.decimals,
            interval=args.interval,
            results=None if args.format == "csv" else results,  # CSV: one table only
        )
    if args.claims is not None:
        checked = check_claims(runs, parse_claims(args.claims), args.average_orders)
        text += "\n" + claims_table(checked, args.format, args.decimals)
    if args.examples is not None:
        text += "\n" + examples(results, args.examples)
    print(text, end="")
    return 0


def _power(results: list, args: argparse.Namespace) -> int:
    """`report --power`: exit code 0 whether the criteria hold or not; the table says which."""
    from clbench.reporting.tables import power_table
    from clbench.results.power import check_power, protocol_of

    options = {"--baseline": args.baseline, "--metrics": args.metrics}
    options |= {"--average-orders": args.average_orders, "--examples": args.examples}
    options["--claims"] = args.claims
    given = [flag for flag, value in options.items() if value]
    if given:
        raise ClbenchError(f"--power has fixed criteria on one order; drop {', '.join(given)}")
    print(power_table(check_power(results, protocol_of(results)), args.format), end="")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from clbench.reporting.plots import plot, save
    from clbench.reporting.recompute import recompute_metrics
    from clbench.results.load import read_runs

    runs = recompute_metrics(read_runs(args.runs))
    figure = plot(runs, args.kind, args.width, args.style, args.highlight)
    print(f"wrote {save(figure, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
