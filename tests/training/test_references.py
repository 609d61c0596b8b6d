"""Single-task references: computed once per key and stored, attached to runs so FWD is a
number, reused by later runs, and read from a user's folder, whose mismatches are refused."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from clbench.config import RunConfig
from clbench.data.protocol import apply_protocol
from clbench.errors import ClbenchError
from clbench.reporting.tables import report
from clbench.training.references import attached_references, ensure_references
from clbench.training.runner import run


@pytest.fixture
def computed(tiny_tasks: Path, tiny_config: RunConfig) -> tuple[RunConfig, dict]:
    """A run of `tiny` whose references were computed into OUTPUT/references."""
    config = dataclasses.replace(tiny_config, references="compute")
    results = json.loads((run(config, include=(str(tiny_tasks),)) / "results.json").read_text())
    return config, results


def test_references_make_fwd_a_number(computed) -> None:
    config, results = computed
    single, matrix = results["single_task"], results["matrix"]
    assert len(single) == 3 and all(0.0 <= s <= 1.0 for s in single)
    expected = sum(matrix[j + 1][j] - single[j] for j in (1, 2)) / 2
    assert math.isclose(results["metrics"]["fwd"], expected)
    lines = report([results]).splitlines()
    header = next(line for line in lines if "(fwd)" in line).split("|")
    row = next(line for line in lines if line.startswith(f"| {results['run_id']} ")).split("|")
    column = next(i for i, cell in enumerate(header) if "(fwd)" in cell)
    assert row[column].strip() == f"{100 * expected:.1f}"  # the report shows FWD, not n/a
    folder = Path(config.output) / "references"
    stored = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert sorted(s["key"]["task"] for s in stored) == ["t-food", "t-neg", "t-pos"]
    for entry in stored:  # each is the one-task run's score, with the config that made it
        reference = json.loads((folder / entry["run"] / "results.json").read_text())
        assert reference["sequence"]["name"] == f"single-{entry['key']['task']}"
        assert reference["method"]["name"] == "seq-ft"
        assert entry["score"] == reference["matrix"][1][0]
        assert entry["key"]["model"] == "tiny-random" and entry["key"]["seed"] == 0
    assert [
        s["score"]
        for s in sorted(stored, key=lambda s: ["t-pos", "t-food", "t-neg"].index(s["key"]["task"]))
    ] == single


def test_references_are_computed_once_and_reused(computed, tiny_tasks) -> None:
    config, results = computed
    runs = Path(config.output) / "references" / "runs"
    made = sorted(p.name for p in runs.iterdir())
    other = dataclasses.replace(config, method="replay", run_id="second")
    again = json.loads((run(other, include=(str(tiny_tasks),)) / "results.json").read_text())
    assert again["single_task"] == results["single_task"]
    assert sorted(p.name for p in runs.iterdir()) == made
    assert ensure_references(config, (str(tiny_tasks),)) == results["single_task"]
    seed1 = dataclasses.replace(config, seed=1)
    assert len(ensure_references(seed1, (str(tiny_tasks),))) == 3
    assert len(list(runs.iterdir())) == 6  # another seed is another reference


def test_a_users_folder_is_read_not_computed(computed, tiny_tasks) -> None:
    config, results = computed
    folder = Path(config.output) / "references"
    given = dataclasses.replace(config, references=str(folder))
    assert attached_references(given, (str(tiny_tasks),)) == results["single_task"]
    with pytest.raises(ClbenchError, match="has no reference for task 't-pos'"):
        attached_references(
            dataclasses.replace(given, references=config.output),
            (str(tiny_tasks),),
        )
    with pytest.raises(ClbenchError, match="is not a folder"):
        attached_references(dataclasses.replace(given, references="nowhere"), ())


def test_a_folder_made_with_another_model_is_refused(computed, tiny_tasks) -> None:
    config, _ = computed
    folder = Path(config.output) / "references"
    other = dataclasses.replace(config, references=str(folder), model="smollm2-135m")
    with pytest.raises(ClbenchError) as err:
        attached_references(other, (str(tiny_tasks),))
    message = str(err.value)
    assert f"reference folder {folder} holds task 't-pos'" in message
    assert 'model "tiny-random" (this run: "smollm2-135m")' in message


def test_a_folder_made_under_another_protocol_is_refused(computed, tiny_tasks) -> None:
    config, _ = computed
    protocol = {
        "name": "tiny-budget",
        "version": 1,
        "status": "final",
        "sequences": ["tiny"],
        "seeds": [0],
        "config": {"model": "tiny-random"},
    }
    (tiny_tasks / "protocols").mkdir()
    (tiny_tasks / "protocols" / "tiny.yaml").write_text(yaml.safe_dump(protocol))
    folder = Path(config.output) / "references"
    other = dataclasses.replace(config, references=str(folder), protocol="tiny-budget")
    other = apply_protocol(other, (str(tiny_tasks),))
    with pytest.raises(ClbenchError, match=r"protocol null \(this run: tiny-budget v1 "):
        attached_references(other, (str(tiny_tasks),))


def test_no_references_by_default(tiny_config) -> None:
    assert attached_references(tiny_config) is None
