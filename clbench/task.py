"""A Task: a dataset, its text-to-text formatting and its metric, defined by one YAML file.

    name: num-even
    family: text_classification        # decides the record fields and how the task is scored
    source: {generator: number_property, args: {property: even, train_size: 400, test_size: 100}}
    #   or: {dataset: agnews}          # <data-dir>/<family>/agnews/{train,test}.jsonl
    prompt: "{text}\\nAnswer:"          # str.format over the record's fields
    target: " {label}"
    labels: ["yes", "no"]              # closed label set (else labels.json of the mirror folder)
    metric: accuracy

Closed-label tasks are scored by ranking the log-likelihood of each label option; the others by
greedy generation of at most `max_new_tokens` tokens.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clbench import data
from clbench.errors import ClbenchError
from clbench.scorers import SCORERS


@dataclass(frozen=True)
class Family:
    fields: tuple[str, ...]  # fields every record must have
    answer: str  # the field that holds the gold answer
    ranked: bool  # scored by ranking label options (else by generation)
    metric: str  # default primary metric


FAMILIES: dict[str, Family] = {
    "text_classification": Family(("text", "label"), "label", ranked=True, metric="accuracy"),
    "instruction_tuning": Family(
        ("instruction", "input", "output"), "output", ranked=False, metric="exact_match"
    ),
}


@dataclass(frozen=True)
class Example:
    prompt: str
    target: str  # the gold continuation, trained on and compared against
    task: str
    label: int | None = None  # index of the gold option, for ranked tasks


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
    description: str = ""
    citation: str = ""
    license: str = ""
    origin: str = field(default="<python>", compare=False)

    @property
    def ranked(self) -> bool:
        return FAMILIES[self.family].ranked

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

    def template_fields(self) -> tuple[str, ...]:
        names = {
            parsed[1]
            for template in (self.prompt, self.target)
            for parsed in string.Formatter().parse(template)
            if parsed[1]
        }
        return tuple(sorted(names | set(FAMILIES[self.family].fields)))

    def load(
        self, data_dir: str | None = None, max_train: int | None = None, max_test: int | None = None
    ) -> TaskData:
        """Read, check, subsample and format the task's examples."""
        family = FAMILIES[self.family]
        labels = self.labels
        if "generator" in self.source:
            splits = data.generate(self.source["generator"], self.source.get("args", {}), self.name)
            origins = {s: f"{self.origin}: generated {s} split" for s in splits}
            for split, records in splits.items():
                _check_fields(records, self.template_fields(), origins[split])
        else:
            root = data.data_root(data_dir)
            folder = data.mirror_folder(root, self.family, self.source["dataset"], self.name)
            splits = {
                s: data.read_jsonl(folder / f"{s}.jsonl", self.template_fields())
                for s in data.SPLITS
            }
            origins = {s: str(folder / f"{s}.jsonl") for s in data.SPLITS}
            if family.ranked and labels is None:
                labels = data.read_labels(folder / "labels.json")
        if family.ranked and not labels:
            raise ClbenchError(
                f"{self.origin}: a {self.family} task needs 'labels' or a labels.json"
            )
        limits = {
            "train": _min(max_train, self.max_train_examples),
            "test": _min(max_test, self.max_test_examples),
        }
        chosen = {s: data.subsample(splits[s], limits[s]) for s in data.SPLITS}
        examples = {
            s: [
                self._format(r, labels, f"{origins[s]} record {i + 1}")
                for i, r in enumerate(chosen[s])
            ]
            for s in data.SPLITS
        }
        options = (
            [self._render(self.target, {family.answer: x}, self.origin) for x in labels]
            if family.ranked
            else None
        )
        return TaskData(
            self,
            examples["train"],
            examples["test"],
            options,
            {s: data.fingerprint(chosen[s]) for s in data.SPLITS},
        )

    def _format(self, record: dict, labels: list[str] | None, where: str) -> Example:
        answer = record[FAMILIES[self.family].answer]
        label = None
        if labels is not None:
            if answer not in labels:
                raise ClbenchError(f"{where}: label {answer!r} is not one of {labels}")
            label = labels.index(answer)
        return Example(
            self._render(self.prompt, record, where),
            self._render(self.target, record, where),
            self.name,
            label,
        )

    def _render(self, template: str, record: dict, where: str) -> str:
        try:
            return template.format_map(record)
        except KeyError as err:
            raise ClbenchError(f"{where}: the template needs field {err.args[0]!r}") from err


def _check_fields(records: list[dict], fields: tuple[str, ...], origin: str) -> None:
    for number, record in enumerate(records, start=1):
        missing = [name for name in fields if name not in record]
        if missing:
            raise ClbenchError(f"{origin} record {number}: missing field(s) {', '.join(missing)}")


def _min(*limits: int | None) -> int | None:
    given = [x for x in limits if x is not None]
    return min(given) if given else None
