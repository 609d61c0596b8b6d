"""Verified submissions: every cell recomputed from the submitted predictions and the data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_task

from clbench import metrics
from clbench.cli import main
from clbench.config import RunConfig
from clbench.leaderboard.build import build, leaderboard_entries
from clbench.leaderboard.submission import submit, validate_all, validate_file

SEQUENCE = "verify-seq"
TASKS = ["verify-gen", "verify-mirror"]  # generated, and read from a local mirror
RUN = f"{SEQUENCE}-seed0"  # the run's folder in the submission's predictions folder


def write_mirror(root: Path) -> None:
    folder = root / "text_classification" / "verify-data"
    folder.mkdir(parents=True)
    for split, size in [("train", 8), ("test", 6)]:
        records = [
            {"text": f"{split} review {i}: {'great' if i % 2 else 'awful'}", "label": "yes"}
            | ({"label": "no"} if i % 2 == 0 else {})
            for i in range(size)
        ]
        text = "".join(json.dumps(r) + "\n" for r in records)
        (folder / f"{split}.jsonl").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One finished tiny run of a sequence of a generated task and a mirror task, registered
    through $CLBENCH_INCLUDE_PATH while the module's tests run."""
    from clbench.training.runner import run

    root = tmp_path_factory.mktemp("verified")
    include, mirror = root / "include", root / "mirror"
    include.mkdir()
    write_task(include, TASKS[0], "positive", train=8, test=6)
    spec = {
        "name": TASKS[1],
        "family": "text_classification",
        "source": {"dataset": "verify-data"},
        "prompt": "{text}\nGood?",
        "target": " {label}",
        "labels": ["yes", "no"],
    }
    (include / f"{TASKS[1]}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    (include / f"{SEQUENCE}.yaml").write_text(yaml.safe_dump({"name": SEQUENCE, "tasks": TASKS}))
    write_mirror(mirror)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLBENCH_INCLUDE_PATH", str(include))
        patch.delenv("CLBENCH_DATA_DIR", raising=False)
        config = RunConfig(
            sequence=SEQUENCE,
            model="tiny-random",
            steps_per_task=1,
            batch_size=4,
            eval_batch_size=8,
            data_dir=str(mirror),
            output=str(root / "runs"),
        )
        yield {"run": run(config), "mirror": mirror, "config": config}


@pytest.fixture
def entry(world: dict[str, Path], tmp_path: Path) -> Path:
    """The run freshly submitted with its predictions."""
    (path,) = submit([str(world["run"])], tmp_path / "lb", data_dir=str(world["mirror"]))
    return path


def errors_of(path: Path, data_dir: Path) -> str:
    checked = validate_file(path, str(data_dir))
    assert not checked.ok, "expected a rejection"
    return "\n".join(checked.errors)


def forge(path: Path, row: int, task: str, change: Callable[[list[dict]], None]) -> Path:
    """Edit one cell's predictions file and record its new SHA-256 in the submission, as a
    careful forger would; returns the edited file."""
    content = json.loads(path.read_text())
    (run,) = content["runs"]
    (cell,) = [c for c in run["predictions"]["files"][row] if c["task"] == task]
    file = path.with_suffix("") / RUN / cell["path"]
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    change(lines)
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cell["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    path.write_text(json.dumps(content))
    return file


def test_a_run_with_predictions_is_verified(entry: Path, world, capsys) -> None:
    kept = sorted(p.relative_to(entry.parent).as_posix() for p in entry.parent.rglob("*.jsonl"))
    assert kept == [
        f"{entry.stem}/{SEQUENCE}-seed0/predictions/row{k}/{task}.jsonl"
        for k in range(3)
        for task in TASKS
    ]
    checked = validate_file(entry, str(world["mirror"]))
    assert checked.ok, checked.errors
    assert (checked.status, checked.unverified) == ("verified", [])
    root = entry.parents[2]
    args = [
        "leaderboard",
        "validate",
        "--leaderboard",
        str(root),
        "--data-dir",
        str(world["mirror"]),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"verified: {entry}\n" in out and "1 of 1 submissions valid, 1 verified" in out
    build(root, str(world["mirror"]))
    (row,) = [line for line in (root / "README.md").read_text().splitlines() if "| seq-ft" in line]
    assert "| verified " in row
    assert [e["status"] for e in leaderboard_entries(root, str(world["mirror"]))] == ["verified"]


def test_report_shows_the_examples_of_a_submission(entry: Path, world, capsys) -> None:
    capsys.readouterr()
    assert main(["report", str(world["run"]), "--examples", "2"]) == 0
    from_run = capsys.readouterr().out.split("### examples")[1]
    assert main(["report", str(entry), "--examples", "2"]) == 0
    assert capsys.readouterr().out.split("### examples")[1] == from_run
    assert f"{TASKS[0]}: " in from_run


def test_an_edited_prediction_file_is_refused(entry: Path, world) -> None:
    file = entry.with_suffix("") / RUN / "predictions" / "row1" / f"{TASKS[0]}.jsonl"
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    lines[0]["prediction"] = 1 - lines[0]["prediction"]
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert (
        f"runs[0].matrix[1][0] (after {TASKS[0]}, task {TASKS[0]}): predictions file {file} "
        "changed since results.json recorded it"
    ) in errors_of(entry, world["mirror"])


def test_a_forged_prediction_is_refused_by_its_cell(entry: Path, world) -> None:
    """The forger makes a wrong answer right, with its option, score and file hash, so only the
    rescored cell tells."""
    content = json.loads(entry.read_text())
    claimed = content["runs"][0]["matrix"][2][1]

    def make_one_right(lines: list[dict]) -> None:
        wrong = next(line for line in lines if line["score"] == 0.0)
        wrong.update(prediction=wrong["gold"], option=wrong["gold_option"], score=1.0)

    forge(entry, 2, TASKS[1], make_one_right)
    (error,) = errors_of(entry, world["mirror"]).splitlines()
    prefix = f"runs[0].matrix[2][1] (after {TASKS[1]}, task {TASKS[1]}): the matrix gives "
    assert prefix + f"{json.dumps(claimed)} but its predictions give " in error
    assert float(error.rsplit(" ", 1)[1]) == pytest.approx(claimed + 1 / 6)


def test_an_edited_gold_answer_is_refused(entry: Path, world) -> None:
    def flip_gold(lines: list[dict]) -> None:
        lines[3].update(gold=1 - lines[3]["gold"])

    file = forge(entry, 0, TASKS[1], flip_gold)
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert (
        f"runs[0].matrix[0][1] (before training, task {TASKS[1]}): {file}:4: gold is "
        f"{lines[3]['gold']}, but the test data gives {1 - lines[3]['gold']}"
    ) in errors_of(entry, world["mirror"])


def test_an_edited_matrix_cell_is_refused(entry: Path, world) -> None:
    """Metrics recomputed from the edited matrix pass; the cell's predictions do not."""
    content = json.loads(entry.read_text())
    run = content["runs"][0]
    old = run["matrix"][1][0]
    new = 1.0 if old < 1.0 else 0.5
    run["matrix"][1][0] = new
    computed = metrics.compute_all(run["matrix"], None, None, ["accuracy", "accuracy"])
    run["metrics"] = {k: None if math.isnan(v) else v for k, v in computed.items()}
    entry.write_text(json.dumps(content))
    text = errors_of(entry, world["mirror"])
    assert "metrics" not in text
    assert (
        f"runs[0].matrix[1][0] (after {TASKS[0]}, task {TASKS[0]}): the matrix gives "
        f"{json.dumps(new)} but its predictions give {json.dumps(old)}"
    ) in text


def test_changed_data_is_refused_by_its_fingerprint(entry: Path, world, tmp_path: Path) -> None:
    changed = tmp_path / "changed-mirror"
    shutil.copytree(world["mirror"], changed)
    test = changed / "text_classification" / "verify-data" / "test.jsonl"
    test.write_text(test.read_text().replace("awful", "dreadful", 1))
    text = errors_of(entry, changed)
    assert f"runs[0].sequence.tasks[1].fingerprint '{_recorded(entry, 1)}' does not match" in text
    assert "not on the same examples" in text


def _recorded(path: Path, task: int) -> str:
    return json.loads(path.read_text())["runs"][0]["sequence"]["tasks"][task]["fingerprint"]


def test_an_entry_without_predictions_is_self_reported(entry: Path, world) -> None:
    content = json.loads(entry.read_text())
    del content["runs"][0]["predictions"]
    entry.write_text(json.dumps(content))
    shutil.rmtree(entry.with_suffix(""))
    checked = validate_file(entry, str(world["mirror"]))
    assert checked.ok, checked.errors
    assert checked.status == "self-reported"
    assert checked.unverified == ["no predictions (1 of 1 runs)"]


def test_without_the_data_an_entry_is_self_reported_with_the_reason(entry: Path, capsys) -> None:
    checked = validate_file(entry, None)
    assert checked.ok, checked.errors
    assert checked.status == "self-reported"
    (reason,) = checked.unverified
    assert reason.startswith(f"cannot verify: data not found for {TASKS[1]}: task '{TASKS[1]}'")
    root = entry.parents[2]
    assert main(["leaderboard", "validate", "--leaderboard", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"self-reported: {entry} (cannot verify: data not found for {TASKS[1]}:" in out
    assert "1 of 1 submissions valid, 0 verified" in out
    build(root)
    assert "| self-reported " in (root / "README.md").read_text()


def test_a_file_beside_the_predictions_is_refused(entry: Path, world) -> None:
    stray = entry.with_suffix("") / RUN / "predictions" / "row9" / "x.jsonl"
    stray.parent.mkdir()
    stray.write_text("{}\n")
    (checked,) = validate_all(entry.parents[2], str(world["mirror"]))
    assert checked.errors == [f"{stray}: not a predictions file of {entry.name}'s runs"]


def test_resubmitting_replaces_the_predictions(entry: Path, world) -> None:
    old = entry.with_suffix("") / "old-seed9" / "predictions" / "row0" / "x.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text("{}\n")
    root = entry.parents[2]
    submit([str(world["run"])], root, data_dir=str(world["mirror"]), replace=True)
    assert not old.exists()
    assert validate_file(entry, str(world["mirror"])).status == "verified"


def test_a_submission_resubmitted_elsewhere_keeps_its_predictions(entry, world, tmp_path):
    """Runs read from a submission file take their predictions from that submission's folder."""
    (copy,) = submit([str(entry)], tmp_path / "other", data_dir=str(world["mirror"]))
    assert validate_file(copy, str(world["mirror"])).status == "verified"
    folders = [path.with_suffix("") for path in (entry, copy)]
    files = [sorted(p.relative_to(f) for p in f.rglob("*.jsonl")) for f in folders]
    assert files[0] == files[1] != []


def test_a_ranked_task_that_generated_its_label_is_rescored_as_evaluated(world, tmp_path) -> None:
    """Under --eval-mode generate the cell is the accuracy of the generated labels, and the
    lines hold the generated text against the gold label's text."""
    from clbench.training.runner import run

    config = dataclasses.replace(world["config"], eval_mode="generate", output=str(tmp_path))
    (path,) = submit([str(run(config))], tmp_path / "lb", data_dir=str(world["mirror"]))
    checked = validate_file(path, str(world["mirror"]))
    assert checked.ok, checked.errors
    assert checked.status == "verified"

    def spell_the_gold(lines: list[dict]) -> None:
        wrong = next(line for line in lines if line["score"] == 0.0)
        wrong.update(prediction=wrong["gold"], score=1.0)

    file = forge(path, 1, TASKS[1], spell_the_gold)
    assert "option" not in file.read_text()  # generated text, no option index
    (error,) = errors_of(path, world["mirror"]).splitlines()
    assert f"runs[0].matrix[1][1] (after {TASKS[0]}, task {TASKS[1]}): the matrix gives" in error
