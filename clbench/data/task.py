"""A Task: a dataset, its text-to-text formatting and its metric, defined by one YAML file.

    name: review-positive
    family: text_classification        # see clbench.data.families
    source: {generator: review_question, args: {question: positive, ...}}
    #   or: {dataset: agnews, hub: {...}}   # <data-dir>/<family>/agnews/, else the Hub
    prompt: "{text}\nAnswer:"          # str.format over the record's fields
    target: " {label}"
    labels: ["yes", "no"]              # closed label set (else labels.json of the mirror folder)
    metric: accuracy

docs/tasks-and-sequences.md lists every field.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clbench.data import hub, mirror
from clbench.data.families import FAMILIES
from clbench.errors import ClbenchError
from clbench.evaluation.scorers import SCORERS


@dataclass(frozen=True)
class Example:
    prompt: str
    target: str  # the gold continuation, trained on and compared against
    task: str
    label: int | None = None  # index of the gold option, for ranked tasks
    rejected: str | None = None  # the dispreferred response, for alignment tasks
    reference: Any = None  # what the scorer compares with, when not `target` or `label`


@dataclass
class TaskData:
    """The exact examples a run uses for one task, with their fingerprints."""

    task: Task
    train: list[Example]
    test: list[Example]
    options: list[str] | None  # rendered label continuations, for ranked tasks
    fingerprints: dict[str, str]


@dataclass
class Task:
    name: str
    family: str
    source: dict[str, Any]
    prompt: str
    target: str
    metric: str = ""
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

    @property
    def evaluation(self) -> str:
        """ "rank", "generate" or "preference" (see clbench.data.families)."""
        return FAMILIES[self.family].evaluation

    @classmethod
    def from_yaml(cls, path: Path) -> Task:
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ClbenchError(f"{path}: not valid YAML: {err}") from err
        return cls.from_dict(spec, origin=str(path))

    @classmethod
    def from_dict(cls, spec: Any, origin: str = "<python>") -> Task:
        if not isinstance(spec, dict):
            raise ClbenchError(f"{origin}: a task file must be a mapping of fields")
        known = set(cls.__dataclass_fields__) - {"origin"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ClbenchError(f"{origin}: unknown task field(s) {', '.join(unknown)}")
        for name in ("name", "family", "source", "prompt", "target"):
            if name not in spec:
                raise ClbenchError(f"{origin}: missing required field {name!r}")
        task = cls(**spec, origin=origin)
        task._validate()
        return task

    def _validate(self) -> None:
        where = f"{self.origin}"
        for name in ("name", "prompt", "target"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ClbenchError(f"{where}: field {name!r} must be a non-empty string")
        if self.family not in FAMILIES:
            raise ClbenchError(
                f"{where}: field 'family' is {self.family!r}; known: {', '.join(FAMILIES)}"
            )
        self.metric = self.metric or FAMILIES[self.family].metric
        if self.metric not in SCORERS:
            raise ClbenchError(
                f"{where}: field 'metric' is {self.metric!r}; known: {', '.join(SCORERS)}"
            )
        if not isinstance(self.source, dict) or not ({"generator", "dataset"} & set(self.source)):
            raise ClbenchError(f"{where}: field 'source' needs 'generator' or 'dataset'")
        if self.source.get("hub") is not None:
            hub.check_spec(self.source["hub"], where)
        preference = FAMILIES[self.family].evaluation == "preference"
        self.objective = self.objective or ("dpo" if preference else "sft")
        if self.objective not in ("sft", "dpo") or (self.objective == "dpo" and not preference):
            raise ClbenchError(
                f"{where}: field 'objective' is {self.objective!r}; 'sft', or 'dpo' for alignment"
            )
        if not isinstance(self.beta, (int, float)) or self.beta <= 0:
            raise ClbenchError(f"{where}: field 'beta' must be a positive number")
        if self.filter is not None and not (
            isinstance(self.filter, dict) and all(isinstance(v, list) for v in self.filter.values())
        ):
            raise ClbenchError(f"{where}: field 'filter' must map field names to lists of values")
        answer = FAMILIES[self.family].answer
        if FAMILIES[self.family].evaluation == "rank":
            names = {p[1] for p in string.Formatter().parse(self.target) if p[1]}
            if names != {answer}:
                raise ClbenchError(
                    f"{where}: field 'target' of a ranked task must use exactly {{{answer}}}"
                )
        if self.labels is not None and (
            not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels)
        ):
            raise ClbenchError(f"{where}: field 'labels' must be a list of strings")
        for name in ("max_new_tokens", "max_train_examples", "max_test_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ClbenchError(f"{where}: field {name!r} must be a positive integer")
        for name in ("prompt", "target"):
            for _, field_name, _, _ in string.Formatter().parse(getattr(self, name)):
                if field_name is not None and not field_name.isidentifier():
                    raise ClbenchError(
                        f"{where}: field {name!r} has a bad placeholder {{{field_name}}}"
                    )

    def record_fields(self) -> tuple[str, ...]:
        """Fields every record must have: the family's and those the templates name."""
        family = FAMILIES[self.family]
        names = {
            parsed[1]
            for template in (self.prompt, self.target)
            for parsed in string.Formatter().parse(template)
            if parsed[1]
        }
        return tuple(sorted((names - set(family.provides)) | set(family.fields)))

    def load(
        self, data_dir: str | None = None, max_train: int | None = None, max_test: int | None = None
    ) -> TaskData:
        """Read, check, subsample and format the task's examples."""
        family = FAMILIES[self.family]
        splits, origins, labels = self._read(data_dir)
        if family.evaluation == "rank" and not labels:
            raise ClbenchError(
                f"{self.origin}: a {self.family} task needs 'labels' or a labels.json"
            )
        for split, records in splits.items():
            self._check(records, labels, origins[split])
        if self.filter:
            splits = {s: [r for r in rs if self._keep(r)] for s, rs in splits.items()}
            for split, records in splits.items():
                if not records:
                    raise ClbenchError(f"{self.origin}: the filter leaves the {split} split empty")
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
        return TaskData(self, examples["train"], examples["test"], options, fingerprints)

    def _read(self, data_dir: str | None) -> tuple[dict, dict, list[str] | None]:
        """The raw records of each split, where they came from, and the label set."""
        fields = self.record_fields()
        if "generator" in self.source:
            splits = mirror.generate(
                self.source["generator"], self.source.get("args", {}), self.name
            )
            origins = {s: f"{self.origin}: generated {s} split, record" for s in splits}
            for split, records in splits.items():
                _check_fields(records, fields, origins[split])
            return splits, origins, self.labels
        root = mirror.data_root(data_dir)
        if self.source.get("hub") and (
            root is None or not (root / self.family / self.source["dataset"]).is_dir()
        ):
            splits = hub.load_hub(self.source["hub"], self.name)
            origins = {s: f"{self.source['hub']['path']} ({s} split), record" for s in splits}
            for split, records in splits.items():
                _check_fields(records, fields, origins[split])
            return splits, origins, self.labels
        folder = mirror.mirror_folder(root, self.family, self.source["dataset"], self.name)
        splits = {s: mirror.read_jsonl(folder / f"{s}.jsonl", fields) for s in mirror.SPLITS}
        origins = {s: f"{folder / f'{s}.jsonl'}: line" for s in mirror.SPLITS}
        labels = self.labels
        if labels is None and (folder / "labels.json").is_file():
            labels = mirror.read_labels(folder / "labels.json")
        return splits, origins, labels

    def _check(self, records: list[dict], labels: list[str] | None, origin: str) -> None:
        family = FAMILIES[self.family]
        for number, record in enumerate(records, start=1):
            problem = family.check(record)
            # A filtered task keeps a subset of the labels: records it drops are not checked.
            if problem is None and labels is not None and (not self.filter or self._keep(record)):
                problem = _label_problem(self.family, family.answer, record, labels)
            if problem:
                raise ClbenchError(f"{origin} {number}: {problem}")

    def _keep(self, record: dict) -> bool:
        return all(record.get(name) in values for name, values in self.filter.items())

    def _format(self, record: dict, labels: list[str] | None) -> Example:
        family = FAMILIES[self.family]
        values = {**record, **family.derive(record)}
        if family.evaluation == "preference":
            return Example(
                self.prompt.format_map(values),
                self.target.format_map({**values, "response": record["chosen"]}),
                self.name,
                rejected=self.target.format_map({**values, "response": record["rejected"]}),
            )
        label = labels.index(record[family.answer]) if family.evaluation == "rank" else None
        reference = (
            {"tokens": record["tokens"], "tags": record["tags"]} if self.family == "ner" else None
        )
        return Example(
            self.prompt.format_map(values),
            self.target.format_map(values),
            self.name,
            label,
            reference=reference,
        )


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


def _check_fields(records: list[dict], fields: tuple[str, ...], origin: str) -> None:
    if not records:
        raise ClbenchError(f"{origin}s: the split is empty")
    for number, record in enumerate(records, start=1):
        missing = [name for name in fields if name not in record]
        if missing:
            raise ClbenchError(f"{origin} {number}: missing field(s) {', '.join(missing)}")


def find_contamination(tasks: list[TaskData]) -> list[str]:
    """Test examples of a sequence whose prompt is also a training prompt of any of its tasks."""
    trained: dict[str, str] = {}
    for task_data in tasks:
        for example in task_data.train:
            trained.setdefault(example.prompt, task_data.task.name)
    found = []
    for task_data in tasks:
        hits = Counter(trained[e.prompt] for e in task_data.test if e.prompt in trained)
        found += [
            f"{count} test example(s) of {task_data.task.name!r} also appear in the training "
            f"set of {name!r}"
            for name, count in hits.items()
        ]
    return found


def _min(*limits: int | None) -> int | None:
    given = [x for x in limits if x is not None]
    return min(given) if given else None
