"""The results schema: round trips, older versions, unknown blocks, and errors naming the field."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from clbench.errors import ClbenchError
from clbench.results.io import load_results, read_results
from clbench.results.load import load_results_file
from clbench.results.schema import SCHEMA_VERSION, Results, ResultsError

# A submission of results.json version 1, as the leaderboard shipped it before version 2.
COMMITTED = Path(__file__).parent / "files" / "submission-schema-v1.json"


def content(**changes: Any) -> dict[str, Any]:
    """A small results.json of the current version, with a probe block."""
    tasks = [{"name": f"t{j}", "fingerprint": f"fp{j}"} for j in range(2)]
    base = {
        "schema_version": SCHEMA_VERSION,
        "run_id": "r",
        "sequence": {"name": "s", "tasks": tasks},
        "method": {"name": "seq-ft", "hyperparameters": {}},
        "model": {"name": "m"},
        "seed": 0,
        "budget": {"steps_per_task": 1},
        "matrix": [[0.2, 0.1], [0.8, 0.3], [0.5, 0.9]],
        "probes": {"names": ["p0", "p1"], "matrix": [[0.6, 0.5], [0.5, 0.5], [0.4, None]]},
    }
    return base | changes


def test_a_written_results_file_reads_back_unchanged(default_runs: list[Path]) -> None:
    path = default_runs[0] / "results.json"
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["schema_version"] == SCHEMA_VERSION
    results = read_results(default_runs[0])
    assert results.to_json() == on_disk
    assert list(results.to_json()) == list(on_disk)  # the same key order as well
    assert load_results(path) == on_disk
    assert results.source == str(path)
    assert results.metrics["gf"] is None  # every metric of the table, null without probes
    assert results.tasks == [task.name for task in results.sequence.tasks]


def test_derived_values_are_filled_in() -> None:
    results = Results.from_json(content())
    assert results.probes.general_forgetting == pytest.approx([0.2, None])  # p1's last is null
    assert results.metrics["gf"] == pytest.approx(0.2)  # the mean over the probes that have it
    assert results.metrics["aa"] == pytest.approx(0.7)
    assert results.metrics["fwd"] is None and math.isnan(results.metric("fwd"))
    assert results.probes.labels() == ["p0", "p1"]


def test_unknown_blocks_and_keys_are_carried_through() -> None:
    data = content(carbon={"kg": 1.5}, notes="v1")
    data["model"] = {"name": "m", "dtype": "bf16"}
    data["sequence"]["tasks"][0]["language"] = "zh"
    written = Results.from_json(data).to_json()
    assert written["carbon"] == {"kg": 1.5} and written["notes"] == "v1"
    assert written["model"]["dtype"] == "bf16"
    assert written["sequence"]["tasks"][0]["language"] == "zh"
    assert Results.from_json(written).to_json() == written


def test_version_1_is_migrated() -> None:
    submission = json.loads(COMMITTED.read_text(encoding="utf-8"))
    old = submission["runs"][0]
    assert old["schema_version"] == 1 and "gf" not in old["metrics"]
    results = Results.from_json(copy.deepcopy(old), "old.json")
    assert results.schema_version == SCHEMA_VERSION == 2
    assert results.metrics == old["metrics"] | {"gf": None}  # no probes: gf is undefined
    with_probes = old | {"probes": {"names": ["p"], "matrix": [[0.5]] + [[0.25]] * 4}}
    assert Results.from_json(with_probes).metrics["gf"] == pytest.approx(0.25)
    runs = load_results_file(COMMITTED)
    assert len(runs) == 3 and all(run.schema_version == SCHEMA_VERSION for run in runs)
    assert runs[1].source == f"{COMMITTED}: runs[1]"


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (3, "is 3, from a newer clbench; this clbench reads versions 1 to 2: upgrade clbench"),
        (0, "is 0; this clbench reads versions 1 to 2"),
        ("2", "is '2'; this clbench reads versions 1 to 2"),
        (None, "is null; this clbench reads versions 1 to 2"),
    ],
)
def test_an_unreadable_version_names_the_file_and_the_version(tmp_path, version, message) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content(schema_version=version)), encoding="utf-8")
    with pytest.raises(ClbenchError) as caught:
        read_results(path)
    assert str(caught.value) == f"{path}: field 'schema_version' {message}"


def test_a_missing_version_is_an_error() -> None:
    data = content()
    del data["schema_version"]
    with pytest.raises(ResultsError, match=r"run r: field 'schema_version' is missing"):
        Results.from_json(data)


def without(path: str) -> dict[str, Any]:
    data = content()
    *parents, last = path.split(".")
    holder = data
    for key in parents:
        holder = holder[key]
    del holder[last]
    return data


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (without("budget"), "budget", "is missing"),
        (without("method.hyperparameters"), "method.hyperparameters", "is missing"),
        (content(seed="one"), "seed", "is 'one'; expected an integer"),
        (content(seed=True), "seed", "is true; expected an integer"),
        (content(run_id=None), "run_id", "is null; expected a string"),
        (content(metrics={"aa": "high"}), "metrics.aa", "is 'high'; expected a number or null"),
        (content(metrics={"aa": math.inf}), "metrics.aa", "is Infinity; expected a finite number"),
        (content(sequence={"name": "s", "tasks": []}), "sequence.tasks", "is []; expected"),
        (
            content(sequence={"name": "s", "tasks": [{"name": "a"}, {"name": "b"}]}),
            "sequence.tasks[0].fingerprint",
            "is missing",
        ),
        (content(matrix=[[0.1, 0.2], [0.3, 0.4]]), "matrix", "is 2 x 2; expected 3 x 2"),
        (content(matrix=[[0.1], [0.3, 0.4], [1, 1]]), "matrix", "is ragged (rows of 1, 2 values)"),
        (content(matrix=[[0.1, "x"], [0, 0], [1, 1]]), "matrix[0][1]", "is 'x'; expected a number"),
        (content(single_task=[0.5]), "single_task", "has 1 values; expected 2"),
        (content(probes={"names": [], "matrix": []}), "probes.names", "is []; expected"),
        (content(probes=[1]), "probes", "is [1]; expected an object or null"),
        (
            content(probes={"names": ["p"], "matrix": [[0.5]] * 3, "metrics": ["a", "b"]}),
            "probes.metrics",
            "has 2 values; expected 1, one per probe",
        ),
        (
            content(probes={"names": ["p"], "matrix": [[0.5]] * 2}),
            "probes.matrix",
            "is 2 x 1; expected 3 x 1 (a row per matrix row)",
        ),
    ],
)
def test_errors_name_the_field(data, field, problem) -> None:
    with pytest.raises(ResultsError) as caught:
        Results.from_json(data, "runs/r/results.json")
    assert caught.value.field == field and caught.value.problem.startswith(problem)
    assert str(caught.value).startswith(f"runs/r/results.json: field '{field}' {problem}")


def test_content_that_is_no_object_is_an_error() -> None:
    with pytest.raises(ResultsError) as caught:
        Results.from_json([], "x.json")
    assert str(caught.value) == "x.json: a results object must be a JSON object, not list"
