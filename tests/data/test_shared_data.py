"""The registered real datasets on the local mirror (`../shared/data` beside the repository, or
$CLBENCH_DATA_DIR). Skipped cleanly where no mirror is present."""

import os
from pathlib import Path

import pytest
from accelerate import Accelerator
from conftest import SHARED_DATA

from clbench.data.registry import load_sequence, load_task, task_names
from clbench.evaluation.evaluate import evaluate_task
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run

MIRROR = Path(os.environ.get("CLBENCH_DATA_DIR") or SHARED_DATA)
pytestmark = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no data mirror at {MIRROR}")

MIRRORED = sorted(p.parent.name for p in MIRROR.glob("*/*/train.jsonl")) if MIRROR.is_dir() else []


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


def test_every_mirror_dataset_is_registered():
    assert MIRRORED and set(MIRRORED) <= set(task_names())


@pytest.mark.parametrize("name", MIRRORED)
def test_mirror_dataset_loads_formats_and_evaluates(name, tiny):
    data = load_task(name).load(str(MIRROR), max_train=8, max_test=4)
    assert len(data.train) == 8 and len(data.test) == 4
    assert all(e.prompt and e.target.strip() for e in data.train + data.test)
    assert data.fingerprints["test"].startswith("sha256:")
    scores = evaluate_task(tiny.model, tiny.tokenizer, data, Accelerator(cpu=True), 4, 256)
    assert 0 <= scores[data.task.metric] <= 1


SEQUENCES = [
    "standard-cl-order1",
    "ner-domains",
    "re-incremental",
    "re-semeval",
    "mt-languages",
    "instruct-superni",
    "align-dimensions",
    "mixed-six",
]


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_named_sequence_fills_its_matrix(sequence, tiny_config, tmp_path):
    tiny_config.sequence, tiny_config.data_dir = sequence, str(MIRROR)
    tiny_config.steps_per_task, tiny_config.max_train_examples = 1, 8
    tiny_config.max_test_examples, tiny_config.max_length = 3, 192
    results = load_results(run(tiny_config))
    tasks = load_sequence(sequence).tasks
    assert [t["name"] for t in results["sequence"]["tasks"]] == tasks
    matrix = results["matrix"]
    assert len(matrix) == len(tasks) + 1 and all(len(row) == len(tasks) for row in matrix)
    assert all(cell is not None and 0 <= cell <= 1 for row in matrix for cell in row)
