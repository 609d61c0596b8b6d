"""results.json as a typed object: the one module that knows its layout (docs/results-schema.md).

`Results.from_json` checks a results object, migrates an older `schema_version` and fills in
what can be derived from the file's own numbers (a metric added to the table after the file
was written, general forgetting); every reader goes through it. `Results.to_json` gives the
JSON content back, and the runner writes through it.

Each block is a dataclass whose annotations are the schema: `from_json` checks every field
against them, so adding an optional block is one field with a default. Keys this clbench does
not know are kept in `extra` and written back unchanged, so a block added by a newer clbench
survives a round trip.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from clbench import metrics
from clbench.errors import ClbenchError

SCHEMA_VERSION = 2
FIRST_VERSION = 1  # the oldest version this clbench reads
# Not part of the JSON: where the object was read from, and the keys of no known field.
_NOT_JSON = {"json": False}


class ResultsError(ClbenchError):
    """Content that does not follow the schema: `field` is its dotted path (`runs[0].` style
    prefixes are the caller's), `problem` what is wrong, as in "is null; expected an object"."""

    def __init__(self, source: str, field_name: str, problem: str) -> None:
        self.source, self.field, self.problem = source, field_name, problem
        where = f"field {field_name!r} " if field_name else ""
        super().__init__(f"{source}: {where}{problem}")


class _Problem(Exception):
    """A problem found while parsing; `from_json` adds the source."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(field_name, problem)
        self.field, self.problem = field_name, problem


@dataclass(kw_only=True)
class _Record:
    """A JSON object with typed fields (from the annotations) and the keys it does not know."""

    extra: dict[str, Any] = field(default_factory=dict, metadata=_NOT_JSON, repr=False)

    @classmethod
    def parse(cls, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _Problem(where, f"is {_show(value)}; expected an object")
        hints = _hints(cls)
        known = {}
        for spec in _json_fields(cls):
            name = f"{where}.{spec.name}" if where else spec.name
            if spec.name in value:
                known[spec.name] = _convert(value[spec.name], hints[spec.name], name)
            elif spec.default is MISSING and spec.default_factory is MISSING:
                raise _Problem(name, "is missing")
        names = {spec.name for spec in _json_fields(cls)}
        return cls(**known, extra={k: v for k, v in value.items() if k not in names})

    def dump(self) -> dict[str, Any]:
        content = {spec.name: _dump(getattr(self, spec.name)) for spec in _json_fields(self)}
        return content | self.extra


@dataclass(kw_only=True)
class TaskInfo(_Record):
    """One task of the sequence, as the run used it."""

    name: str
    family: str | None = None
    metric: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    fingerprint: str  # a hash of the exact test examples scored
    train_fingerprint: str | None = None
    evaluation: str | None = None  # "rank", "generate" or "preference", as scored


@dataclass(kw_only=True)
class SequenceInfo(_Record):
    name: str
    tasks: list[TaskInfo]


@dataclass(kw_only=True)
class MethodInfo(_Record):
    name: str
    hyperparameters: dict[str, Any]
    uses_task_id: bool | None = None
    extra_memory: str | None = None


@dataclass(kw_only=True)
class ModelInfo(_Record):
    name: str
    source: str | None = None
    revision: str | None = None
    parameters: int | None = None
    trainable_parameters: int | None = None
    peft: dict[str, Any] | None = None

    @property
    def peft_type(self) -> str | None:
        """ "lora" for a run with `--peft lora`; None without PEFT."""
        kind = (self.peft or {}).get("type")
        return kind if isinstance(kind, str) else None


@dataclass(kw_only=True)
class Probes(_Record):
    """General-ability probes scored before training and after every stage (`--probes`)."""

    names: list[str]
    sources: list[str] | None = None
    metrics: list[str] | None = None
    lm_eval_version: str | None = None
    limit: float | None = None
    batch_size: int | None = None
    matrix: list[list[float | None]]  # (T+1) x P
    general_forgetting: list[float | None] | None = None  # row 0 - last row, per probe

    def labels(self) -> list[str]:
        """'name (metric)' per probe, or the name where no metric is recorded."""
        found = self.metrics or [None] * len(self.names)
        return [
            name if m is None else f"{name} ({m})"
            for name, m in zip(self.names, found, strict=True)
        ]


@dataclass(kw_only=True)
class PredictionFile(_Record):
    """One cell's logged predictions: a JSONL file, its path relative to the run folder."""

    task: str
    path: str
    sha256: str


@dataclass(kw_only=True)
class Predictions(_Record):
    """Every cell's predictions and gold answers (clbench.evaluation.predictions)."""

    format: int  # the version of the line layout
    folder: str
    files: list[list[PredictionFile]]  # (T+1) x T, like the matrix


@dataclass(kw_only=True)
class ProtocolInfo(_Record):
    """The benchmark protocol a run followed (docs/protocols.md)."""

    name: str
    version: int
    hash: str  # of the protocol file's budget, sequences and seeds


@dataclass(kw_only=True)
class CostInfo(_Record):
    """What the run cost (clbench.training.cost); tokens are non-pad tokens, summed over
    processes."""

    train_tokens: int | None = None
    optimizer_steps: int | None = None
    generated_tokens: int | None = None  # sampled by the method (pseudo-samples)
    extra_forward_passes: int | None = None  # beyond plain training: teachers, references, ...
    extra_forward_tokens: int | None = None
    extra_backward_passes: int | None = None  # of those, the ones a gradient went through
    extra_backward_tokens: int | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    method_seconds: float | None = None
    peak_memory_mb: float | None = None
    method_state_bytes: int | None = None  # kept by the method: buffers, Fisher, teacher, ...
    method_parameter_bytes: int | None = None  # added to the model: adapters, prompts, blocks

    @property
    def compute_tokens(self) -> int | None:
        """Tokens through the model in training and for the method: trained, extra forward
        and backward, and generated."""
        parts = (
            self.train_tokens,
            self.extra_forward_tokens,
            self.extra_backward_tokens,
            self.generated_tokens,
        )
        return None if self.train_tokens is None else sum(p or 0 for p in parts)


@dataclass(kw_only=True)
class InStagePoint(_Record):
    """The language-modelling tasks scored after optimizer step `step` of stage `stage`."""

    stage: int
    step: int
    train_tokens: int  # trained on in the run so far, earlier stages included
    scores: dict[str, dict[str, float | None]]  # every metric of each task, by task name


@dataclass(kw_only=True)
class InStageCurves(_Record):
    """Scores within the stages (`--eval-every`), between the rows of the matrix."""

    eval_every: int
    tasks: list[str]  # the tasks scored: the sequence's language-modelling tasks
    points: list[InStagePoint]


@dataclass(kw_only=True)
class Row0Info(_Record):
    """Row 0 of the matrix taken from a sweep's shared cache rather than evaluated."""

    reused: bool
    key: str  # the hash of what row 0 depends on (clbench.sweep.row0)
    source: str  # the run that evaluated it


@dataclass(kw_only=True)
class Results(_Record):
    """One finished run. Fields are in the order the runner writes them."""

    schema_version: int = SCHEMA_VERSION
    clbench_version: str | None = None
    run_id: str
    created_at: str | None = None
    finished_at: str | None = None
    sequence: SequenceInfo
    method: MethodInfo
    model: ModelInfo
    seed: int
    budget: dict[str, Any]
    protocol: ProtocolInfo | None = None
    config: dict[str, Any] | None = None
    matrix: list[list[float | None]]  # (T+1) x T, fractions; docs/metrics.md
    single_task: list[float | None] | None = None
    probes: Probes | None = None
    scores: list[list[dict[str, Any]]] | None = None  # every metric of every cell
    predictions: Predictions | None = None  # the files of the logged predictions
    metrics: dict[str, float | None] = field(default_factory=dict)  # every key of the table
    curves: dict[str, list[float | None]] | None = None
    curves_in_stage: InStageCurves | None = None  # with --eval-every
    timings: dict[str, Any] | None = None
    # Stages whose training loss ended above clbench.training.guard.DIVERGENCE_FACTOR times
    # its first value; [] when none did, null in files written before the loss guard.
    diverged: list[int] | None = None
    cost: CostInfo | None = None
    row0: Row0Info | None = None  # set when row 0 was reused from a sweep's cache
    peak_memory: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    source: str = field(default="", metadata=_NOT_JSON, compare=False, repr=False)

    @classmethod
    def from_json(cls, content: Any, source: str = "") -> Results:
        """Check `content` (a parsed results.json), migrate it to this schema version and fill
        in what derives from its numbers; a ResultsError names `source` and the field."""
        if not source:
            run_id = content.get("run_id") if isinstance(content, dict) else None
            source = f"run {run_id}" if isinstance(run_id, str) else "results"
        if not isinstance(content, dict):
            kind = type(content).__name__
            raise ResultsError(source, "", f"a results object must be a JSON object, not {kind}")
        try:
            results = cls.parse(_migrate(content), "")
            results.source = source
            results._check_shapes()
            return results._complete()
        except _Problem as problem:
            raise ResultsError(source, problem.field, problem.problem) from None

    def to_json(self) -> dict[str, Any]:
        """The JSON content (NaN as None), ready for `json.dumps`."""
        return self.dump()

    @property
    def tasks(self) -> list[str]:
        return [task.name for task in self.sequence.tasks]

    def metric(self, key: str) -> float:
        """A metric as a float, NaN where it is undefined (null)."""
        value = self.metrics.get(key)
        return math.nan if value is None else value

    def _check_shapes(self) -> None:
        n = len(self.sequence.tasks)
        if n == 0:
            raise _Problem("sequence.tasks", "is []; expected at least one task")
        _shape("matrix", self.matrix, n + 1, n, "T+1 rows of the T tasks")
        if self.single_task is not None and len(self.single_task) != n:
            raise _Problem("single_task", f"has {len(self.single_task)} values; expected {n}")
        if self.predictions is not None:
            _shape("predictions.files", self.predictions.files, n + 1, n, "a file per cell")
        if self.probes is not None:
            width = len(self.probes.names)
            if width == 0:
                raise _Problem("probes.names", "is []; expected at least one probe")
            _shape("probes.matrix", self.probes.matrix, n + 1, width, "a row per matrix row")
            for name in ("sources", "metrics", "general_forgetting"):
                values = getattr(self.probes, name)
                if values is not None and len(values) != width:
                    problem = f"has {len(values)} values; expected {width}, one per probe"
                    raise _Problem(f"probes.{name}", problem)

    def _complete(self) -> Results:
        """Fill in general forgetting and the metrics of the table the file lacks."""
        probes = self.probes
        if probes is not None and probes.general_forgetting is None:
            probes.general_forgetting = metrics.general_forgetting(probes.matrix)
        missing = [key for key in metrics.METRICS if key not in self.metrics]
        if missing:
            found = metrics.compute_all(
                self.matrix,
                self.single_task,
                None if probes is None else probes.matrix,
                [task.metric for task in self.sequence.tasks],
            )
            self.metrics |= {key: _finite(found[key]) for key in missing}
        return self


def is_results(content: Any) -> bool:
    """Whether parsed JSON is meant as a results object (it may still break the schema)."""
    return isinstance(content, dict) and "matrix" in content


def as_results(run: Results | Mapping[str, Any]) -> Results:
    """`run` itself, or the Results of a results.json content (as `load_results` returns)."""
    return run if isinstance(run, Results) else Results.from_json(dict(run))


# ---- versions ---------------------------------------------------------------------------------


def _from_1(content: dict[str, Any]) -> dict[str, Any]:
    """Version 2 has every metric of the table in `metrics`, general forgetting (`gf`) too;
    `Results._complete` computes the ones a file lacks."""
    return content


# MIGRATIONS[v] turns version v into v + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_1}


def _migrate(content: dict[str, Any]) -> dict[str, Any]:
    version = content.get("schema_version", MISSING)
    readable = f"this clbench reads versions {FIRST_VERSION} to {SCHEMA_VERSION}"
    if version is MISSING:
        raise _Problem("schema_version", f"is missing; {readable}")
    if not isinstance(version, int) or isinstance(version, bool) or version < FIRST_VERSION:
        raise _Problem("schema_version", f"is {_show(version)}; {readable}")
    if version > SCHEMA_VERSION:
        raise _Problem(
            "schema_version", f"is {version}, from a newer clbench; {readable}: upgrade clbench"
        )
    while version < SCHEMA_VERSION:
        content = MIGRATIONS[version](content)
        version += 1
    return {**content, "schema_version": version}


# ---- fields -----------------------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _json_fields(record: Any) -> list[Any]:
    return [spec for spec in fields(record) if spec.metadata.get("json", True)]


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _convert(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the annotation `hint`; a _Problem naming `where` if it fails."""
    if hint is Any:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):  # `X | None`: the only unions of the schema
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        (inner,) = (arg for arg in args if arg is not type(None))
        try:
            return _convert(value, inner, where)
        except _Problem as problem:
            if problem.field != where:
                raise
            raise _Problem(where, f"{problem.problem} or null") from None
    if origin is list:
        if not isinstance(value, list):
            raise _Problem(where, f"is {_show(value)}; expected a list")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Problem(where, f"is {_show(value)}; expected an object")
        return {k: _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, _Record):
        return hint.parse(value, where)
    return _scalar(value, hint, where)


def _scalar(value: Any, kind: type, where: str) -> Any:
    is_bool = isinstance(value, bool)
    if kind is float and isinstance(value, numbers.Real) and not is_bool:
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise _Problem(where, f"is {_show(value)}; expected a finite number")
        return value  # an integer stays one, so a round trip keeps the text
    if kind is int and isinstance(value, int) and not is_bool:
        return value
    if kind in (str, bool) and isinstance(value, kind):
        return value
    raise _Problem(where, f"is {_show(value)}; expected {_KINDS[kind]}")


def _shape(where: str, matrix: list[list[Any]], rows: int, width: int, what: str) -> None:
    lengths = sorted({len(row) for row in matrix})
    if len(matrix) == rows and lengths == [width]:
        return
    if len(lengths) > 1:
        shown = f"ragged (rows of {', '.join(map(str, lengths))} values)"
    else:
        shown = f"{len(matrix)} x {lengths[0] if lengths else 0}"
    raise _Problem(where, f"is {shown}; expected {rows} x {width} ({what})")


def _dump(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return _finite(value) if isinstance(value, float) else value


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
