"""Every built-in task and sequence, read through the registry: each task file validates, each
sequence names known tasks, and each task whose data is generated or on the local mirror loads
a few examples and formats them. A new file in tasks/ is tested by being there."""

import pytest
from conftest import MIRROR

from clbench.data.families import FAMILIES
from clbench.data.registry import load_sequence, load_task, sequence_names, task_names

TASKS = sorted(task_names())
SEQUENCES = sorted(sequence_names())


def _data_dir(name: str) -> str | None:
    """Where the task's data is: None when generated, the mirror when it is there; else skip."""
    task = load_task(name)
    if "generator" in task.source:
        return None
    if not (MIRROR / task.mirror_family / task.source["dataset"]).is_dir():
        pytest.skip(f"dataset {task.source['dataset']!r} is not on the mirror at {MIRROR}")
    return str(MIRROR)


def test_the_registry_finds_the_builtin_files():  # else the tests below would test nothing
    assert "review-positive" in TASKS and "default" in SEQUENCES


@pytest.mark.parametrize("name", TASKS)
def test_task_file_validates(name):
    task = load_task(name)  # every field is checked here
    assert task.name == name
    # A built-in task says where its data comes from and under which terms.
    assert task.description.strip() and task.license.strip(), task.origin
    assert "generator" in task.source or task.citation.strip(), task.origin


@pytest.mark.parametrize("name", SEQUENCES)
def test_sequence_names_known_tasks(name):
    sequence = load_sequence(name)
    assert sequence.name == name and sequence.description.strip(), sequence.origin
    unknown = sorted(set(sequence.tasks) - set(TASKS))
    assert not unknown, f"{sequence.origin}: unknown task(s) {', '.join(unknown)}"


@pytest.mark.parametrize("name", TASKS)
def test_task_loads_and_formats_a_few_examples(name):
    data = load_task(name).load(_data_dir(name), max_train=4, max_test=4)
    evaluation = FAMILIES[data.task.family].evaluation
    assert 0 < len(data.train) <= 4 and 0 < len(data.test) <= 4
    assert all(f.startswith("sha256:") for f in data.fingerprints.values())
    for example in data.train + data.test:
        assert example.task == name and example.target.strip()
        # Language modelling has no prompt: the text alone is the target.
        assert example.prompt == "" if evaluation == "loss" else example.prompt.strip()
        if evaluation == "rank":  # the target is the gold option
            assert example.target == data.options[example.label]
        elif evaluation == "preference":
            assert example.rejected.strip() and example.rejected != example.target
        else:
            assert example.label is None
    if evaluation == "rank":
        assert len(set(data.options)) == len(data.options) >= 2
    else:
        assert data.options is None
