"""A Task: a dataset, its text-to-text formatting and its metric, defined by one YAML file.

    name: review-positive
    family: text_classification        # see clbench.data.families
    source: {generator: review_question, args: {question: positive, ...}}
    #   or: {dataset: agnews, hub: {...}}   # <data-dir>/<family>/agnews/, else the Hub
    prompt: "{text}\nAnswer ({options}):"   # str.format over the record's fields
    target: " {label}"
    labels: ["yes", "no"]              # closed label set (else labels.json of the mirror folder)
    metric: accuracy

A file may start from another with `include: base.yaml` (see `read_task_file`).
docs/tasks-and-sequences.md lists every field; docs/data-layout.md the records of each family.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.data import hub, mirror, synthetic
from clbench.data.families import FAMILIES
from clbench.errors import ClbenchError, at, read_yaml
from clbench.evaluation.scorers import SCORERS, check_options, scorer_options

OPTIONS = "options"  # the template variable listing a task's labels
OPTIONS_SEPARATOR = "; "  # labels may hold commas ("Cause-Effect(e1,e2)"), and "or" is English


@dataclass(frozen=True)
class Example:
    prompt: str
    target: str  # the gold continuation, trained on and compared against
    task: str
    label: int | None = None  # index of the gold option, for ranked tasks
    rejected: str | None = None  # the dispreferred response, for alignment tasks
    reference: Any = None  # what the scorer compares with, when not `target` or `label`
    # A packed block of token ids (language modelling): trained on whole, prompt and target unused.
    ids: tuple[int, ...] | None = None


def gold(example: Example, evaluation: str) -> Any:
    """What a scorer compares the prediction for `example` with: the option index of a ranked
    task, else the example's `reference` if it has one (NER's tokens and tags), else its
    target without the white space around it."""
    if evaluation == "rank":
        return example.label
    return example.reference if example.reference is not None else example.target.strip()


@dataclass
class TaskData:
    """The exact examples a run uses for one task, with their fingerprints."""

    task: Task
    train: list[Example]
    test: list[Example]
    options: list[str] | None  # rendered label continuations, for ranked tasks
    fingerprints: dict[str, str]
    metric_args: dict[str, Any] = field(default_factory=dict)  # the scorer's keyword options

    @property
    def references(self) -> list[Any]:
        """The gold answer of every test example, as the task's scorer takes it."""
        return [gold(e, self.task.evaluation) for e in self.test]

    def score(self, predictions: list[Any]) -> dict[str, float]:
        """Every metric of the task's scorer for predictions of the test examples, in order."""
        return SCORERS[self.task.metric](predictions, self.references, **self.metric_args)


# Where a record came from, for errors: its place given its 1-based number in the split, or the
# split as a whole for None.
Place = Callable[[int | None], str]


def read_task_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict]:
    """A task file's fields, and for each the file that set it.

    `include: base.yaml` (relative to the including file) starts from the fields of that file,
    which may include another. Fields of the including file win; where both are mappings they
    are merged key by key, recursively; any other value (a list too) replaces the base's.
    """
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ClbenchError(f"{path}: a task file must be a mapping of fields")
    base = spec.pop("include", None)
    if base is None:
        return spec, dict.fromkeys(spec, str(path))
    if not isinstance(base, str) or not base:
        raise ClbenchError(f"{path}: field 'include' must be the path of a YAML file")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ClbenchError(f"{path}: field 'include' names {base_path}, which does not exist")
    chain = (*chain, path)
    if base_path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(map(str, (*chain, base_path)))
        raise ClbenchError(f"{path}: field 'include' makes a cycle: {cycle}")
    inherited, sources = read_task_file(base_path, chain)
    return _merge(inherited, spec), {**sources, **dict.fromkeys(spec, str(path))}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


@dataclass
class Task:
    name: str
    family: str
    source: dict[str, Any]
    prompt: str
    target: str
    metric: str = ""
    metric_args: dict[str, Any] = field(default_factory=dict)  # keyword options of the scorer
    labels: list[str] | None = None
    max_new_tokens: int = 32
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    filter: dict[str, list] | None = None  # keep records whose field value is listed
    stop: list[str] = field(default_factory=lambda: ["\n"])  # generation ends at the first
    objective: str = ""  # "sft", or "dpo" (alignment only; its default)
    beta: float = 0.1  # DPO's inverse temperature
    description: str = ""
    citation: str = ""
    license: str = ""
    origin: str = field(default="<python>", compare=False)
    # The file that set each field, where a task file includes another (errors name it).
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def evaluation(self) -> str:
        """ "rank", "generate", "preference" or "loss" (see clbench.data.families)."""
        return FAMILIES[self.family].evaluation

    @property
    def mirror_family(self) -> str:
        """The mirror folder the dataset is in: `source.family`, else the task's own family."""
        return self.source.get("family", self.family)

    @classmethod
    def from_yaml(cls, path: Path) -> Task:
        spec, sources = read_task_file(Path(path))
        return cls.from_dict(spec, origin=str(path), sources=sources)

    @classmethod
    def from_dict(
        cls, spec: Any, origin: str = "<python>", sources: dict[str, str] | None = None
    ) -> Task:
        if not isinstance(spec, dict):
            raise ClbenchError(f"{origin}: a task file must be a mapping of fields")
        known = set(cls.__dataclass_fields__) - {"origin", "sources"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ClbenchError(f"{origin}: unknown task field(s) {', '.join(unknown)}")
        named = spec.get("family")
        family = FAMILIES.get(named) if isinstance(named, str) else None  # else reported below
        if family is not None and family.unused:
            foreign = sorted(set(spec) & set(family.unused))
            if foreign:
                raise ClbenchError(
                    f"{origin}: field(s) {', '.join(foreign)} do not belong to a {family.name} task"
                )
            spec = {**family.task_defaults, **spec}
        for name in ("name", "family", "source", "prompt", "target"):
            if name not in spec:
                raise ClbenchError(f"{origin}: missing required field {name!r}")
        task = cls(**spec, origin=origin, sources=sources or {})
        task._validate()
        return task

    def where(self, name: str) -> str:
        """The file that set field `name` (the task's own file unless it came by `include`)."""
        return self.sources.get(name, self.origin)

    def _validate(self) -> None:
        for name in ("name", "prompt", "target"):
            value = getattr(self, name)
            if not isinstance(value, str) or not (value or name in self._family_defaults()):
                raise ClbenchError(f"{self.where(name)}: field {name!r} must be a non-empty string")
        if not isinstance(self.family, str) or self.family not in FAMILIES:
            raise ClbenchError(
                f"{self.where('family')}: field 'family' is {self.family!r}; "
                f"known: {', '.join(FAMILIES)}"
            )
        self.metric = self.metric or FAMILIES[self.family].metric
        if not isinstance(self.metric, str) or self.metric not in SCORERS:
            raise ClbenchError(
                f"{self.where('metric')}: field 'metric' is {self.metric!r}; "
                f"known: {', '.join(SCORERS)}"
            )
        problem = (
            check_options(self.metric, self.metric_args)
            if isinstance(self.metric_args, dict)
            else "it must be a mapping of option names to values"
        )
        if problem:
            raise ClbenchError(f"{self.where('metric_args')}: field 'metric_args': {problem}")
        where = self.where("source")
        if not isinstance(self.source, dict) or not ({"generator", "dataset"} & set(self.source)):
            raise ClbenchError(f"{where}: field 'source' needs 'generator' or 'dataset'")
        if self.source.get("hub") is not None:
            hub.check_spec(self.source["hub"], where)
        fields = self.source.get("fields", {})
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise ClbenchError(f"{where}: 'source.fields' must map record fields to column names")
        if self.mirror_family not in FAMILIES:
            raise ClbenchError(
                f"{where}: 'source.family' is {self.mirror_family!r}; known: {', '.join(FAMILIES)}"
            )
        preference = FAMILIES[self.family].evaluation == "preference"
        self.objective = self.objective or ("dpo" if preference else "sft")
        if self.objective not in ("sft", "dpo") or (self.objective == "dpo" and not preference):
            raise ClbenchError(
                f"{self.where('objective')}: field 'objective' is {self.objective!r}; "
                "'sft', or 'dpo' for alignment"
            )
        if not isinstance(self.beta, (int, float)) or self.beta <= 0:
            raise ClbenchError(f"{self.where('beta')}: field 'beta' must be a positive number")
        if self.filter is not None and not (
            isinstance(self.filter, dict) and all(isinstance(v, list) for v in self.filter.values())
        ):
            raise ClbenchError(
                f"{self.where('filter')}: field 'filter' must map field names to lists of values"
            )
        if self.labels is not None and (
            not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels)
        ):
            raise ClbenchError(f"{self.where('labels')}: field 'labels' must be a list of strings")
        for name in ("max_new_tokens", "max_train_examples", "max_test_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ClbenchError(f"{self.where(name)}: field {name!r} must be a positive integer")
        for name in ("prompt", "target"):
            for variable in self._variables(name):
                if not variable.isidentifier():
                    raise ClbenchError(
                        f"{self.where(name)}: field {name!r} has a bad placeholder {{{variable}}}"
                    )
        answer = FAMILIES[self.family].answer
        if FAMILIES[self.family].evaluation == "rank" and self._variables("target") != {answer}:
            raise ClbenchError(
                f"{self.where('target')}: field 'target' of a ranked task must use exactly "
                f"{{{answer}}}"
            )

    def _family_defaults(self) -> dict[str, Any]:
        family = FAMILIES.get(self.family)
        return family.task_defaults if family else {}

    def _variables(self, name: str) -> set[str]:
        """The variables that template field `name` (prompt or target) uses."""
        try:
            return {
                parsed[1]
                for parsed in string.Formatter().parse(getattr(self, name))
                if parsed[1] is not None
            }
        except ValueError as err:  # an unmatched brace, say
            raise ClbenchError(
                f"{self.where(name)}: field {name!r} is not a valid template: {err}"
            ) from err

    def load(
        self, data_dir: str | None = None, max_train: int | None = None, max_test: int | None = None
    ) -> TaskData:
        """Read, check, subsample and format the task's examples."""
        family = FAMILIES[self.family]
        splits, places, labels = self._read(data_dir)
        if family.evaluation == "rank" and not labels:
            raise ClbenchError(
                f"{self.origin}: a {self.family} task needs 'labels' or a labels.json"
            )
        for name in ("prompt", "target"):
            if OPTIONS in self._variables(name) and not labels:
                raise ClbenchError(
                    f"{self.where(name)}: field {name!r} uses {{{OPTIONS}}}, but the task has no "
                    "labels (field 'labels', or labels.json in its mirror folder)"
                )
        for split, records in splits.items():
            self._check(records, labels, places[split])
        if self.filter:
            splits = {s: [r for r in rs if self._keep(r)] for s, rs in splits.items()}
            for split, records in splits.items():
                if not records:
                    raise ClbenchError(
                        f"{self.where('filter')}: the filter leaves the {split} split empty"
                    )
        limits = {
            "train": _min(max_train, self.max_train_examples),
            "test": _min(max_test, self.max_test_examples),
        }
        chosen = {s: mirror.subsample(splits[s], limits[s]) for s in mirror.SPLITS}
        examples = {s: [self._format(r, labels) for r in chosen[s]] for s in mirror.SPLITS}
        options = None
        if family.evaluation == "rank":
            options = [self.target.format_map({family.answer: label}) for label in labels]
        fingerprints = {s: mirror.fingerprint(chosen[s]) for s in mirror.SPLITS}
        metric_args = dict(self.metric_args)
        languages = {r[family.language] for r in chosen["test"]} if family.language else set()
        if "language" in scorer_options(self.metric) and len(languages) == 1:
            metric_args.setdefault("language", languages.pop())
        return TaskData(
            self, examples["train"], examples["test"], options, fingerprints, metric_args
        )

    def _read(self, data_dir: str | None) -> tuple[dict, dict[str, Place], list[str] | None]:
        """The raw records of each split, where each came from, and the label set."""
        if "generator" in self.source:
            args = self.source.get("args", {})
            records = synthetic.generate(self.source["generator"], args, self.name)
            splits = {s: records.get(s, []) for s in mirror.SPLITS}
            places = {s: _counted(f"{self.origin}: generated {s} split") for s in splits}
            return splits, places, self.labels
        root = mirror.data_root(data_dir)
        if self.source.get("hub") and (
            root is None or not (root / self.mirror_family / self.source["dataset"]).is_dir()
        ):
            splits = hub.load_hub(self.source["hub"], self.name)
            path = self.source["hub"]["path"]
            return splits, {s: _counted(f"{path} ({s} split)") for s in splits}, self.labels
        folder = mirror.mirror_folder(root, self.mirror_family, self.source["dataset"], self.name)
        splits, places = {}, {}
        for split in mirror.SPLITS:
            path = folder / f"{split}.jsonl"
            splits[split], lines = mirror.read_jsonl(path)
            places[split] = _lines_of(path, lines)
            if self.source.get("fields"):
                splits[split] = _map_fields(splits[split], self.source["fields"], places[split])
        labels = self.labels
        if labels is None and (folder / "labels.json").is_file():
            labels = mirror.read_labels(folder / "labels.json")
        return splits, places, labels

    def _check(self, records: list[dict], labels: list[str] | None, place: Place) -> None:
        """Each record against its family and the task's templates and label set."""
        family = FAMILIES[self.family]
        if not records:
            raise ClbenchError(f"{place(None)}: the split is empty")
        self._check_template_fields(records, place)
        for number, record in enumerate(records, start=1):
            missing = [name for name in family.fields if name not in record]
            problem = f"missing field(s) {', '.join(missing)}" if missing else family.check(record)
            # A filtered task keeps a subset of the labels: records it drops are not checked.
            if problem is None and labels is not None and (not self.filter or self._keep(record)):
                problem = _label_problem(self.family, family.answer, record, labels)
            if problem:
                raise ClbenchError(f"{place(number)}: {problem}")

    def _check_template_fields(self, records: list[dict], place: Place) -> None:
        """Record fields that the templates use beyond the family's own. One that no record has
        is a mistake in the task file; one that some records lack, in the data."""
        family = FAMILIES[self.family]
        given = {*family.fields, *family.provides, OPTIONS}
        for name in ("prompt", "target"):
            for variable in sorted(self._variables(name) - given):
                lacking = [n for n, r in enumerate(records, start=1) if variable not in r]
                if len(lacking) == len(records):
                    fields = ", ".join(sorted(records[0]))
                    variables = ", ".join([*family.provides, OPTIONS])
                    raise ClbenchError(
                        f"{self.where(name)}: field {name!r} uses {{{variable}}}, which is "
                        f"neither a field of the task's records ({fields}) nor a variable that "
                        f"clbench adds ({variables})"
                    )
                if lacking:
                    raise ClbenchError(
                        f"{place(lacking[0])}: missing field {variable!r}, which the {name} of "
                        f"{self.where(name)} uses"
                    )

    def _keep(self, record: dict) -> bool:
        return all(record.get(name) in values for name, values in self.filter.items())

    def _format(self, record: dict, labels: list[str] | None) -> Example:
        family = FAMILIES[self.family]
        values = {**record, **family.derive(record)}
        if labels:
            values[OPTIONS] = OPTIONS_SEPARATOR.join(labels)
        if family.evaluation == "preference":
            return Example(
                self.prompt.format_map(values),
                self.target.format_map({**values, "response": record["chosen"]}),
                self.name,
                rejected=self.target.format_map({**values, "response": record["rejected"]}),
            )
        if family.evaluation == "loss":  # the document itself; packed for training later
            return Example("", record["text"], self.name)
        label = labels.index(record[family.answer]) if family.evaluation == "rank" else None
        reference = family.reference(record) if family.reference else None
        return Example(
            self.prompt.format_map(values),
            self.target.format_map(values),
            self.name,
            label,
            reference=reference,
        )


def _map_fields(records: list[dict], fields: dict[str, str], place: Place) -> list[dict]:
    """Records of another family's mirror folder as this task's: field name <- column."""
    mapped = []
    for number, record in enumerate(records, start=1):
        missing = sorted(set(fields.values()) - set(record))
        if missing:
            raise ClbenchError(
                f"{place(number)}: no column {', '.join(missing)} for 'source.fields' "
                f"(columns: {', '.join(record)})"
            )
        mapped.append({name: record[column] for name, column in fields.items()})
    return mapped


def _counted(split: str) -> Place:
    """Places of records without a file line: `<split>, record N`."""
    return lambda number: split if number is None else f"{split}, record {number}"


def _lines_of(path: Path, lines: list[int]) -> Place:
    """Places of the records of a JSONL file: `FILE:LINE`."""
    return lambda number: at(path) if number is None else at(path, lines[number - 1])


def _label_problem(family: str, answer: str | None, record: dict, labels: list[str]) -> str | None:
    """A label outside the task's label set (for NER: an entity type outside it)."""
    if family == "ner":
        unknown = sorted({tag[2:] for tag in record["tags"] if tag != "O"} - set(labels))
        return (
            f"entity type(s) {', '.join(unknown)} not in the label set {labels}"
            if unknown
            else None
        )
    if answer in record and FAMILIES[family].evaluation == "rank" and record[answer] not in labels:
        return f"label {record[answer]!r} is not one of {labels}"
    return None


def find_contamination(tasks: list[TaskData]) -> list[str]:
    """Test examples of a sequence whose prompt (a language-modelling text: the text) is also
    a training prompt of any of its tasks."""

    def key(example: Example) -> str:
        return example.prompt or example.target

    trained: dict[str, str] = {}
    for task_data in tasks:
        for example in task_data.train:
            trained.setdefault(key(example), task_data.task.name)
    found = []
    for task_data in tasks:
        hits = Counter(trained[key(e)] for e in task_data.test if key(e) in trained)
        found += [
            f"{count} test example(s) of {task_data.task.name!r} also appear in the training "
            f"set of {name!r}"
            for name, count in hits.items()
        ]
    return found


def _min(*limits: int | None) -> int | None:
    given = [x for x in limits if x is not None]
    return min(given) if given else None
