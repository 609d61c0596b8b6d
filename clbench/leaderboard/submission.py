"""Leaderboard submissions: one JSON file per (sequence, method, model) holding every run.

    leaderboard/submissions/<sequence>/<name>__<model>.json
    {"submission_version": 1, "name", "sequence", "method", "model", "paper", "code",
     "flags": [...], "runs": [<results.json>, ...]}
    leaderboard/submissions/<sequence>/<name>__<model>/<run>/predictions/row<k>/<task>.jsonl

`<sequence>` is the sequence group: the runs of `standard-cl-order1..3` share one file. The
folder beside the file holds the logged predictions of the runs that kept them, each run's
(`<run>`: its sequence and seed) laid out as in its own run folder. The validator trusts
nothing in a file: it re-derives every metric from the matrix and every data fingerprint from
the registered task, and its errors name the file and the field. A submission whose every cell
it also recomputes from the predictions (clbench.leaderboard.verify) is "verified"; any other
valid one is "self-reported".
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench import metrics
from clbench.data import registry
from clbench.data.protocol import budget_differences, load_protocol
from clbench.data.task import TaskData
from clbench.errors import ClbenchError
from clbench.evaluation.predictions import verified
from clbench.leaderboard.verify import check_run, same, show
from clbench.results.compare import comparable_groups
from clbench.results.io import write_json
from clbench.results.load import read_runs, runs_frame, split_order
from clbench.results.schema import Results, ResultsError, TaskInfo

SUBMISSION_VERSION = 1
MAX_BYTES = 5_000_000  # a 3-order x 5-seed submission of a 20-task sequence is ~2 MB
MIN_SEEDS = 3
PICKLE_MAGIC = (b"\x80", b"(dp", b"(lp", b"ccopy_reg")  # protocol 2+ and protocol 0 openings
URL = re.compile(r"https?://[^\s<>\"']+\Z", re.IGNORECASE)
REQUIRED_BUDGET = ("batch_size", "lr", "lr_scheduler", "max_length")
# Where a run was written and read its data and probes on the submitter's machine: not published.
PRIVATE_CONFIG = ("output", "data_dir", "probe_include")
PEFT_NAMES = {"lora": "LoRA"}
VERIFIED, SELF_REPORTED = "verified", "self-reported"
NO_DATA = "cannot verify: data not found"


@dataclass
class Checked:
    """The outcome of validating one submission file."""

    path: Path
    errors: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    submission: dict[str, Any] | None = None
    runs: list[Results] = field(default_factory=list)  # the submission's, when it is valid
    unverified: list[str] = field(default_factory=list)  # why a valid one is self-reported

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def status(self) -> str:
        """ "verified" when every cell of every run was recomputed from its predictions."""
        return VERIFIED if self.ok and self.runs and not self.unverified else SELF_REPORTED


def read_submission(path: Path) -> dict[str, Any]:
    """The parsed file, after the checks that must come before parsing (size, pickle, JSON)."""
    if not path.is_file():
        raise ClbenchError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ClbenchError(f"{path}: {size} bytes, over the {MAX_BYTES}-byte limit")
    raw = path.read_bytes()
    if raw.lstrip().startswith(PICKLE_MAGIC):
        raise ClbenchError(f"{path}: a Python pickle, not JSON; submissions are JSON only")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ClbenchError(f"{path}: not UTF-8 text (byte {err.start})") from err
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise ClbenchError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    except (ValueError, RecursionError) as err:
        raise ClbenchError(f"{path}: malformed JSON: {err}") from err
    if not isinstance(value, dict):
        raise ClbenchError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def validate_file(path: Path, data_dir: str | None = None) -> Checked:
    """Every check of one submission file; never raises for bad content."""
    checked = Checked(path)
    try:
        submission = read_submission(path)
    except ClbenchError as err:
        checked.errors.append(str(err))
        return checked
    validator = _Validator(data_dir, lambda run: run_folder(path, run))
    checked.errors = [f"{path}: {problem}" for problem in validator.submission(submission)]
    if checked.ok:
        checked.submission, checked.runs = submission, validator.runs
        checked.flags = flags(checked.runs)
        checked.unverified = validator.unverified()
    return checked


def run_folder(path: Path, run: Results) -> Path:
    """Where the submission at `path` keeps the predictions of `run`: a folder laid out as the
    run's own, named by its sequence and seed (unique within a submission)."""
    return path.with_suffix("") / _slug(f"{run.sequence.name}-seed{run.seed}")


def predictions_folder(run: Results) -> Path:
    """The folder that holds the predictions of `run`: its run folder, or its folder in the
    leaderboard submission it was read from (`load_results_file` names such a run's source
    `<file>: runs[<i>]`)."""
    submission, within, _ = run.source.rpartition(": runs[")
    return run_folder(Path(submission), run) if within else Path(run.source).parent


def flags(runs: list[Results]) -> list[str]:
    """What a reader must know to judge a comparison: few seeds, task identity, extra memory."""
    found = []
    seeds = Counter(run.sequence.name for run in runs)
    for sequence, n in sorted(seeds.items()):
        if n < MIN_SEEDS:
            found.append(f"fewer than {MIN_SEEDS} seeds ({n} on {sequence})")
    method = runs[0].method
    if method.uses_task_id:
        found.append("uses the task id at inference")
    if method.extra_memory:
        found.append(f"extra memory: {method.extra_memory}")
    return found


class _Validator:
    """Collects problems as `field: why` strings; task data is loaded once per budget. The runs
    of a valid submission are left in `runs`; `unverified` says why it cannot be verified.
    `run_dir` gives the folder that holds a run's predictions."""

    def __init__(self, data_dir: str | None, run_dir: Callable[[Results], Path]) -> None:
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.data: dict[tuple, TaskData | str] = {}  # a load error where the data is absent
        self.runs: list[Results] = []
        self.missing: dict[str, str] = {}  # task name -> why its data cannot be loaded here
        self.without_predictions = 0  # runs

    def submission(self, sub: dict[str, Any]) -> list[str]:
        problems = []
        if sub.get("submission_version") != SUBMISSION_VERSION:
            problems.append(
                f"field 'submission_version' is {sub.get('submission_version')!r}; "
                f"this clbench reads version {SUBMISSION_VERSION}"
            )
        for key in ("name", "sequence", "method", "model"):
            value = sub.get(key)
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                problems.append(f"field {key!r} must be a non-empty string of at most 200 chars")
        for key in ("paper", "code"):
            value = sub.get(key)
            if value is not None and not (isinstance(value, str) and URL.match(value)):
                problems.append(f"field {key!r} is {value!r}; expected an http(s) URL or null")
        runs = sub.get("runs")
        if not isinstance(runs, list) or not runs:
            return [*problems, "field 'runs' must be a non-empty list of results"]
        if problems:
            return problems
        for i, run in enumerate(runs):
            problems += [f"runs[{i}].{p}" for p in self.run(run, sub)]
        if problems:
            return problems
        return self.together(self.runs)

    def run(self, content: Any, sub: dict[str, Any]) -> list[str]:
        """One results.json: its schema, its data and its numbers."""
        if not isinstance(content, dict):
            return [f"must be a results object, got {type(content).__name__}"]
        try:
            run = Results.from_json(content, "submission")
        except ResultsError as err:
            return [f"{err.field} {err.problem}"]
        self.runs.append(run)
        problems = [
            f"{key}.name is {found!r}, not the submission's {key}"
            for key, found in [("method", run.method.name), ("model", run.model.name)]
            if found != sub[key]
        ]
        budget = run.budget
        if "steps_per_task" not in budget and "epochs" not in budget:
            problems.append("budget has neither 'steps_per_task' nor 'epochs'")
        problems += [f"budget.{key} is missing" for key in REQUIRED_BUDGET if key not in budget]
        for key in ("max_train_examples", "max_test_examples"):
            value = budget.get(key)
            if value is not None and (type(value) is not int or value < 1):
                problems.append(f"budget.{key} is {show(value)}; expected an integer >= 1 or null")
        problems += self.protocol(run)
        if problems:
            return problems
        return self.sequence(run, sub) or self.numbers(run) or self.predictions(run)

    def protocol(self, run: Results) -> list[str]:
        """A run that names a protocol has the registered version and follows its budget."""
        named = run.protocol
        if named is None:
            return []
        try:
            protocol = load_protocol(named.name)
        except ClbenchError as err:
            return [f"protocol.name: {err}"]
        if (named.version, named.hash) != (protocol.version, protocol.hash):
            return [
                f"protocol is {named.name} v{named.version} ({named.hash}); the registered "
                f"protocol is v{protocol.version} ({protocol.hash})"
            ]
        settings = {"model": run.model.name, **(run.config or {}), **run.budget}
        differences = budget_differences(protocol, settings)
        if differences:
            return [f"budget differs from protocol {protocol.name}: {'; '.join(differences)}"]
        return []

    def sequence(self, run: Results, sub: dict[str, Any]) -> list[str]:
        """The sequence is registered, in the submission's group, and on the registered data."""
        name = run.sequence.name
        known = registry.sequence_names()
        if name not in known:
            return [f"sequence.name: unknown sequence {name!r}"]
        if split_order(name)[0] != sub["sequence"]:
            return [f"sequence.name {name!r} is not in the submission's {sub['sequence']!r}"]
        expected = registry.load_sequence(name).tasks
        if run.tasks != list(expected):
            return [f"sequence.tasks are {run.tasks}; {name} is registered as {list(expected)}"]
        problems = []
        for j, task in enumerate(run.sequence.tasks):
            problems += [f"sequence.tasks[{j}].{p}" for p in self.task(task, run.budget)]
        return problems

    def task(self, recorded: TaskInfo, budget: dict[str, Any]) -> list[str]:
        task = registry.load_task(recorded.name)
        problems = [
            f"{key} is {getattr(recorded, key)!r}; task {task.name} has {key} {want!r}"
            for key, want in [("family", task.family), ("metric", task.metric)]
            if getattr(recorded, key) != want
        ]
        data = self.task_data(recorded.name, budget)
        if isinstance(data, str):  # no mirror here: the entry stays self-reported
            self.missing.setdefault(recorded.name, data)
            return problems
        registered = {"fingerprint": data.fingerprints["test"]}
        registered["train_fingerprint"] = data.fingerprints["train"]
        for field_name, want in registered.items():
            if getattr(recorded, field_name) != want:
                problems.append(
                    f"{field_name} {getattr(recorded, field_name)!r} does not match the "
                    f"registered data of {task.name} ({want}): the results are not on the same "
                    "examples"
                )
        return problems

    def task_data(self, name: str, budget: dict[str, Any]) -> TaskData | str:
        """The registered task's data under the run's limits, as the run loaded it, or why it
        cannot be loaded."""
        limits = (budget.get("max_train_examples"), budget.get("max_test_examples"))
        key = (name, *map(repr, limits))
        if key not in self.data:
            try:
                self.data[key] = registry.load_task(name).load(self.data_dir, *limits)
            except ClbenchError as err:
                self.data[key] = str(err)
        return self.data[key]

    def predictions(self, run: Results) -> list[str]:
        """Every cell recomputed from the run's predictions, when it has them and the data is
        here; otherwise the run is left unverified."""
        if run.predictions is None:
            self.without_predictions += 1
            return []
        data = [self.task_data(name, run.budget) for name in run.tasks]
        if any(isinstance(d, str) for d in data):
            return []  # `task` has said why
        return check_run(run, self.run_dir(run), data)

    def unverified(self) -> list[str]:
        """Why the runs seen so far are not all verified; [] when they are."""
        reasons = []
        if self.without_predictions:
            reasons.append(f"no predictions ({self.without_predictions} of {len(self.runs)} runs)")
        if self.missing:
            first = next(iter(self.missing.values()))
            reasons.append(f"{NO_DATA} for {', '.join(self.missing)}: {first}")
        return reasons

    def numbers(self, run: Results) -> list[str]:
        """Every cell a fraction, then every metric of the table recomputed from the matrix
        (and the probe matrix)."""
        task_metrics = [task.metric for task in run.sequence.tasks]
        for i, row in enumerate(run.matrix):
            for j, value in enumerate(row):
                # A loss (bits per byte) is a positive number, not a fraction.
                if not (_fraction(value) or _positive_loss(value, task_metrics[j])):
                    return [
                        f"matrix[{i}][{j}] is {show(value)}; expected a number in [0, 1] "
                        "(a loss such as bits per byte: a number >= 0)"
                    ]
        single = run.single_task
        if single is not None and not all(map(_fraction, single)):
            return [f"single_task must be null or {len(single)} numbers in [0, 1]"]
        problems = self.probes(run)
        if problems:
            return problems
        probe_matrix = None if run.probes is None else run.probes.matrix
        recomputed = metrics.compute_all(run.matrix, single, probe_matrix, task_metrics)
        for key, value in recomputed.items():
            claimed, expected = run.metrics.get(key), None if math.isnan(value) else value
            if not same(claimed, expected):
                problems.append(
                    f"metrics.{key} is {show(claimed)} but the matrix gives {show(expected)}"
                )
        return problems

    def probes(self, run: Results) -> list[str]:
        """The probe block, if any: no missing cell, and general forgetting recomputed."""
        block = run.probes
        if block is None:
            return []
        for i, row in enumerate(block.matrix):
            for j, value in enumerate(row):
                if value is None:
                    return [f"probes.matrix[{i}][{j}] is null; expected a number"]
        expected = metrics.general_forgetting(block.matrix)
        if not all(map(same, block.general_forgetting, expected)):
            return [
                f"probes.general_forgetting is {show(block.general_forgetting)} but "
                f"probes.matrix gives {show(expected)}"
            ]
        return []

    def together(self, runs: list[Results]) -> list[str]:
        """The runs of one submission are distinct and may be averaged together."""
        seen = Counter((run.sequence.name, run.seed) for run in runs)
        twice = [f"{s} seed {k}" for (s, k), n in seen.items() if n > 1]
        if twice:
            return [f"runs: more than one run of {', '.join(twice)}"]
        protocols = sorted({"none" if r.protocol is None else r.protocol.name for r in runs})
        if len(protocols) > 1:
            return [f"runs: follow different protocols ({', '.join(protocols)}); submit each apart"]
        try:
            grouped, notes = comparable_groups(runs_frame(runs), average_orders=True)
        except ClbenchError as err:
            return [f"runs: {err}"]
        if grouped["variant"].max() > 1:
            return [f"runs: {notes[0]}; submit each variant under its own --name"]
        return []


def _fraction(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


def _positive_loss(value: Any, task_metric: str | None) -> bool:
    return (
        not metrics.higher_is_better(task_metric)
        and isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0.0
    )


# ---- writing submissions ----------------------------------------------------------------------


def submission_path(root: Path, submission: dict[str, Any]) -> Path:
    """`<root>/submissions/<sequence>/<name>__<model>.json`, in file-name-safe characters."""
    return (
        root
        / "submissions"
        / _slug(submission["sequence"])
        / f"{_slug(submission['name'])}__{_slug(submission['model'])}.json"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unnamed"


def default_name(run: Results) -> str:
    kind = run.model.peft_type
    return run.method.name + (f" + {PEFT_NAMES.get(kind, kind)}" if kind else "")


def submit(
    runs: list[str],
    root: Path,
    name: str | None = None,
    paper: str | None = None,
    code: str | None = None,
    data_dir: str | None = None,
    replace: bool = False,
) -> list[Path]:
    """Validate the runs and write one submission per (sequence, method, model) variant, with
    the predictions of the runs that kept them.

    Nothing is written unless every submission passes.
    """
    groups: dict[tuple[str, str, str], list[Results]] = {}
    for run in read_runs(runs):
        group = split_order(run.sequence.name)[0]
        groups.setdefault((group, name or default_name(run), run.model.name), []).append(run)
    pending = []
    for (group, label, model), members in groups.items():
        published = sorted(map(_published, members), key=lambda r: (r.sequence.name, r.seed))
        submission = {
            "submission_version": SUBMISSION_VERSION,
            "name": label,
            "sequence": group,
            "method": members[0].method.name,
            "model": model,
            "paper": paper,
            "code": code,
            "runs": [run.to_json() for run in published],
        }
        target = submission_path(root, submission)
        problems = _Validator(data_dir, _source_folders(published)).submission(submission)
        if problems:
            raise ClbenchError(
                f"not submitted ({label} on {group} with {model}):\n  " + "\n  ".join(problems)
            )
        if target.exists() and not replace:
            raise ClbenchError(f"{target} exists; pass --replace to overwrite it")
        submission["flags"] = flags(published)
        pending.append((target, submission, published))
    for target, submission, published in pending:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, submission)
        _copy_predictions(target, published)
    return [target for target, _, _ in pending]


def _published(run: Results) -> Results:
    """The run without its private config fields; without its predictions when their folder
    is gone."""
    config = run.config and {k: v for k, v in run.config.items() if k not in PRIVATE_CONFIG}
    kept = run.predictions if predictions_folder(run).is_dir() else None
    return dataclasses.replace(run, config=config, predictions=kept)


def _source_folders(runs: list[Results]) -> Callable[[Results], Path]:
    """The folder of each run's predictions, found by its sequence and seed."""
    folders = {(run.sequence.name, run.seed): predictions_folder(run) for run in runs}
    return lambda run: folders[run.sequence.name, run.seed]


def _copy_predictions(target: Path, runs: list[Results]) -> None:
    """Each run's checked predictions into the submission's folder, replacing what was there."""
    shutil.rmtree(target.with_suffix(""), ignore_errors=True)
    for run in runs:
        if run.predictions is None:
            continue
        source = predictions_folder(run)
        for cell in (cell for row in run.predictions.files for cell in row):
            copy = run_folder(target, run) / cell.path
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(verified(source, cell.path, cell.sha256), copy)


def validate_all(root: Path, data_dir: str | None = None) -> list[Checked]:
    """Every file under `<root>/submissions/`; anything that is neither a .json file nor a
    predictions file of its runs (in the folder beside it) is an error."""
    folder = root / "submissions"
    if not folder.is_dir():
        raise ClbenchError(f"no submissions folder at {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    kept = [p for p in files if any(map(_predictions_of, _parents(p, folder)))]
    checked = []
    for path in (p for p in files if p not in kept):
        if path.suffix != ".json":
            checked.append(Checked(path, [f"{path}: not a .json file; submissions are JSON only"]))
            continue
        result = validate_file(path, data_dir)
        if result.ok:
            mine = [p for p in kept if path.with_suffix("") in p.parents]
            result.errors += _placement(path, root, result) + _strays(path, result.runs, mine)
        checked.append(result)
    return checked


def _parents(path: Path, top: Path) -> list[Path]:
    """The folders between `top` and `path`."""
    return [top / parent for parent in path.relative_to(top).parents if parent.parts]


def _predictions_of(folder: Path) -> bool:
    """Whether `folder` is the predictions folder of a submission file beside it."""
    return folder.with_name(folder.name + ".json").is_file()


def _strays(path: Path, runs: list[Results], files: list[Path]) -> list[str]:
    """The files of the predictions folder of `path` that none of its runs lists."""
    listed = {
        (run_folder(path, run) / cell.path).resolve()
        for run in runs
        if run.predictions is not None
        for row in run.predictions.files
        for cell in row
    }
    return [
        f"{file}: not a predictions file of {path.name}'s runs"
        for file in files
        if file.resolve() not in listed
    ]


def _placement(path: Path, root: Path, checked: Checked) -> list[str]:
    submission = checked.submission
    expected = submission_path(root, submission)
    if path.resolve() != expected.resolve():
        return [f"{path}: should be at {expected.relative_to(root)} (its sequence, name, model)"]
    wanted = checked.flags
    if submission.get("flags") != wanted:
        return [f"{path}: field 'flags' is {submission.get('flags')!r}; expected {wanted!r}"]
    return []
