"""Protocols: the shipped files, their errors, applying one to a config, the results' protocol
block, comparability by protocol, the submission budget check, and the evaluation modes."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from accelerate import Accelerator
from conftest import write_task

from clbench.config import RunConfig
from clbench.data import registry
from clbench.data.protocol import apply_protocol, load_protocol, protocol_names
from clbench.data.task import Task
from clbench.errors import ClbenchError
from clbench.evaluation import evaluate
from clbench.leaderboard.build import build
from clbench.leaderboard.submission import submit, validate_file
from clbench.reporting.tables import tables as report_tables
from clbench.results.compare import comparable_groups
from clbench.results.load import runs_frame
from clbench.results.schema import Results
from clbench.training.models import load_model

PROTOCOL = {
    "name": "tiny-budget",
    "version": 1,
    "status": "final",
    "sequences": ["tiny"],
    "seeds": [0, 1],
    "config": {"model": "tiny-random", "steps_per_task": 2, "batch_size": 4, "lr": 0.01},
}


def write_protocol(folder: Path, spec: dict, name: str = "tiny-budget") -> Path:
    path = folder / "protocols" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_the_shipped_protocols_load_and_are_not_tasks() -> None:
    assert {"cpu-small", "paper"} <= set(protocol_names())
    small, paper = load_protocol("cpu-small"), load_protocol("paper")
    assert small.status == "final"
    assert small.config["model"] == "smollm2-135m"
    # Below 200 test examples a task only with the stated reason (docs/protocols.md).
    assert small.config["max_test_examples"] >= 200 or small.small_test_sets
    assert small.sequences == ["standard-cl-order1", "standard-cl-order2"]
    assert small.seeds == [0, 1, 2]
    assert paper.config["eval_mode"] == "generate" and paper.config["lr"] == 1e-3
    assert paper.published["results"] == {"seq-ft": 67.7664, "lora-seq": 62.875, "o-lora": 78.3651}
    for name in ("seq-ft", "lora-seq", "o-lora"):
        assert (Path("clbench/methods") / f"{name.replace('-', '_')}.py").is_file()
    for sequence in small.sequences + paper.sequences:
        assert sequence in registry.sequence_names()
    assert not {"cpu-small", "paper"} & set(registry.task_names())


def test_an_unknown_protocol_lists_the_known_names() -> None:
    with pytest.raises(ClbenchError, match="unknown protocol 'cpu-smal'") as err:
        load_protocol("cpu-smal")
    assert "cpu-small" in str(err.value) and "paper" in str(err.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.pop("seeds"), "'seeds'"),
        (lambda s: s.pop("config"), "'config'"),
        (lambda s: s.update(version="one"), "'version'"),
        (lambda s: s.update(status="draft"), "'status'"),
        (lambda s: s.update(sequences=[]), "'sequences'"),
        (lambda s: s.update(colour="red"), "colour"),
        (lambda s: s["config"].update(lr=-1), "'lr'"),
        (lambda s: s["config"].update(stepz=3), "stepz"),
        (lambda s: s["config"].update(seed=3), "'config.seed'"),
    ],
)
def test_a_wrong_or_missing_field_names_the_file_and_field(tmp_path, change, field) -> None:
    spec = json.loads(json.dumps(PROTOCOL))
    change(spec)
    path = write_protocol(tmp_path, spec)
    with pytest.raises(ClbenchError) as err:
        load_protocol(str(path))
    assert str(path) in str(err.value) and field in str(err.value)


def test_the_hash_covers_the_budget_not_the_description(tmp_path) -> None:
    base = load_protocol(str(write_protocol(tmp_path, PROTOCOL))).hash
    described = {**PROTOCOL, "description": "other words"}
    assert load_protocol(str(write_protocol(tmp_path, described))).hash == base
    changed = {**PROTOCOL, "config": {**PROTOCOL["config"], "lr": 0.02}}
    assert load_protocol(str(write_protocol(tmp_path, changed))).hash != base


def test_a_protocol_fills_the_config(tmp_path) -> None:
    write_protocol(tmp_path, PROTOCOL)
    config = apply_protocol(RunConfig(protocol="tiny-budget"), (str(tmp_path),))
    assert (config.model, config.steps_per_task, config.batch_size, config.lr) == (
        "tiny-random",
        2,
        4,
        0.01,
    )
    assert config.sequence == "tiny"  # the default sequence becomes the protocol's first
    same = RunConfig(protocol="tiny-budget", lr=0.01, seed=1)
    assert apply_protocol(same, (str(tmp_path),)).lr == 0.01
    assert apply_protocol(RunConfig(), ()) == RunConfig()


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        ({"lr": 0.5}, "lr = 0.5 (the protocol has 0.01)"),
        ({"sequence": "default"}, None),
        ({"sequence": "mixed-six"}, "sequence = 'mixed-six'"),
        ({"seed": 7}, "seed = 7"),
    ],
)
def test_a_setting_that_contradicts_the_protocol_is_refused(tmp_path, setting, shown) -> None:
    write_protocol(tmp_path, PROTOCOL)
    config = RunConfig(protocol="tiny-budget", **setting)
    if shown is None:  # the default sequence is not a contradiction
        assert apply_protocol(config, (str(tmp_path),)).sequence == "tiny"
        return
    with pytest.raises(ClbenchError, match="contradicts protocol 'tiny-budget'") as err:
        apply_protocol(config, (str(tmp_path),))
    assert shown in str(err.value)


def test_a_run_records_its_protocol(tiny_tasks, tiny_config) -> None:
    from clbench.training.runner import run

    path = write_protocol(tiny_tasks, PROTOCOL)
    config = dataclasses.replace(
        tiny_config, protocol="tiny-budget", model="smollm2-135m", steps_per_task=40, lr=1e-4
    )
    results = json.loads((run(config, include=(str(tiny_tasks),)) / "results.json").read_text())
    expected = load_protocol(str(path))
    assert results["protocol"] == {"name": "tiny-budget", "version": 1, "hash": expected.hash}
    assert results["budget"]["steps_per_task"] == 2 and results["model"]["name"] == "tiny-random"
    assert results["budget"]["eval_mode"] == "rank"
    assert [t["evaluation"] for t in results["sequence"]["tasks"]] == ["rank"] * 3


def _with_protocol(run: Results, name: str, hash_: str = "0123456789abcdef") -> Results:
    content = run.to_json() | {"protocol": {"name": name, "version": 1, "hash": hash_}}
    return Results.from_json(content)


def test_runs_of_different_protocols_are_tabled_apart(default_runs) -> None:
    runs = [Results.from_json(json.loads((d / "results.json").read_text())) for d in default_runs]
    mixed = [runs[0], _with_protocol(runs[1], "cpu-small"), _with_protocol(runs[2], "cpu-small")]
    grouped, _ = comparable_groups(runs_frame(mixed))
    tables = sorted(set(grouped["table_sequence"]))
    assert tables == ["default", "default [protocol cpu-small v1 01234567]"]
    assert set(grouped["variant"]) == {1}
    text = report_tables(runs_frame(mixed), metrics=["aa"])
    assert "### default [protocol cpu-small v1 01234567], tiny-random\n" in text  # not "averaged"


def test_runs_of_different_evaluation_modes_are_never_averaged(default_runs) -> None:
    runs = [Results.from_json(json.loads((d / "results.json").read_text())) for d in default_runs]
    generated = Results.from_json(
        runs[2].to_json() | {"budget": {**runs[2].budget, "eval_mode": "generate"}}
    )
    grouped, notes = comparable_groups(runs_frame([*runs[:2], generated]))
    assert sorted(grouped["variant"]) == [1, 1, 2]
    assert "budget.eval_mode" in notes[0]


def _submission(default_runs, tmp_path: Path, change) -> Path:
    (path,) = submit([str(d) for d in default_runs], tmp_path / "lb")
    content = json.loads(path.read_text())
    for run in content["runs"]:
        change(run)
    path.write_text(json.dumps(content))
    return path


def test_a_submission_off_its_protocols_budget_shows_the_differing_fields(
    default_runs, tmp_path
) -> None:
    small = load_protocol("cpu-small")
    path = _submission(default_runs, tmp_path, lambda run: run.update(protocol=small.record()))
    errors = "\n".join(validate_file(path).errors)
    assert "budget differs from protocol cpu-small" in errors
    steps = small.config["steps_per_task"]
    assert f"steps_per_task: 1 (protocol cpu-small: {steps})" in errors
    assert "model: 'tiny-random' (protocol cpu-small: 'smollm2-135m')" in errors


def test_a_submission_naming_a_changed_protocol_is_refused(default_runs, tmp_path) -> None:
    stale = {"name": "cpu-small", "version": 1, "hash": "0" * 16}
    path = _submission(default_runs, tmp_path, lambda run: run.update(protocol=stale))
    errors = "\n".join(validate_file(path).errors)
    protocol = load_protocol("cpu-small")
    assert f"the registered protocol is v{protocol.version} ({protocol.hash})" in errors


def test_a_submission_naming_an_unknown_protocol_is_refused(default_runs, tmp_path) -> None:
    stale = {"name": "nope", "version": 1, "hash": "0" * 16}
    path = _submission(default_runs, tmp_path, lambda run: run.update(protocol=stale))
    assert "unknown protocol 'nope'" in "\n".join(validate_file(path).errors)


@pytest.fixture
def default_budget(tmp_path, monkeypatch) -> dict:
    """The record of a user protocol that `default_runs` follow."""
    spec = {**PROTOCOL, "name": "default-budget", "sequences": ["default"], "seeds": [0, 1, 2]}
    spec["config"] = {"model": "tiny-random", "steps_per_task": 1, "max_test_examples": 8}
    write_protocol(tmp_path / "include", spec, "default-budget")
    monkeypatch.setenv("CLBENCH_INCLUDE_PATH", str(tmp_path / "include"))
    return load_protocol("default-budget").record()


def test_a_submission_mixing_protocols_is_refused(default_runs, tmp_path, default_budget) -> None:
    path = _submission(default_runs, tmp_path, lambda run: run.update(protocol=default_budget))
    assert validate_file(path).ok  # the runs follow its budget
    content = json.loads(path.read_text())
    content["runs"][0].pop("protocol")
    path.write_text(json.dumps(content))
    errors = "\n".join(validate_file(path).errors)
    assert "follow different protocols (default-budget, none)" in errors


@pytest.fixture(scope="module")
def tiny_model():
    loaded = load_model("tiny-random")
    return loaded.model, loaded.tokenizer


def test_generate_mode_scores_a_ranked_task_by_exact_match(tmp_path, tiny_model, monkeypatch):
    write_task(tmp_path, "t-pos", "positive", test=8)
    data = Task.from_yaml(tmp_path / "t-pos.yaml").load(None)
    golds = [e.target.strip() for e in data.test]
    # Half the answers spell the gold label, one spells the other label, the rest are noise.
    texts = [g if i % 2 == 0 else "maybe" for i, g in enumerate(golds)]
    texts[1] = "no" if golds[1] == "yes" else "yes"
    calls = []

    def fake_generate(model, tokenizer, prompts, *args, stop):
        calls.append(len(prompts))
        return texts[: len(prompts)]

    monkeypatch.setattr(evaluate, "generate", fake_generate)
    model, tokenizer = tiny_model
    scores = evaluate.evaluate_task(model, tokenizer, data, Accelerator(cpu=True), 8, 64, None)
    assert not calls  # "rank" never generates
    scores = evaluate.evaluate_task(
        model, tokenizer, data, Accelerator(cpu=True), 8, 64, None, mode="generate"
    )
    assert calls == [8]
    assert scores["accuracy"] == scores["exact_match"] == 0.5
    assert evaluate.evaluation_of(data.task, "generate") == "generate"
    assert evaluate.evaluation_of(data.task, "rank") == "rank"


def test_generate_mode_leaves_generation_tasks_as_they_are() -> None:
    task = registry.load_task("alpaca")
    assert evaluate.evaluation_of(task, "generate") == evaluate.evaluation_of(task, "rank")


def test_eval_mode_and_references_are_checked() -> None:
    with pytest.raises(ClbenchError, match="'eval_mode' must be rank or generate"):
        RunConfig.from_dict({"eval_mode": "vote"})
    with pytest.raises(ClbenchError, match="'references'"):
        RunConfig.from_dict({"references": ""})


def test_the_leaderboard_ranks_each_protocol_apart(default_runs, tmp_path, default_budget):
    root = tmp_path / "lb"
    submit([str(d) for d in default_runs], root, name="plain")
    (path,) = submit([str(d) for d in default_runs], root, name="budgeted")
    content = json.loads(path.read_text())
    for run in content["runs"]:
        run["protocol"] = default_budget
    path.write_text(json.dumps(content))
    build(root)
    readme = (root / "README.md").read_text()
    label = f"default [protocol default-budget v1 {default_budget['hash'][:8]}]"
    assert "## default\n" in readme and f"## {label}\n" in readme
    tables = readme.split("## ")[1:]
    assert [("plain" in t, "budgeted" in t) for t in tables] == [(True, False), (False, True)]


def test_cli_lists_protocols_and_refuses_an_unknown_one(capsys) -> None:
    from clbench.cli import main

    assert main(["list", "protocols"]) == 0
    listed = capsys.readouterr().out
    assert "cpu-small" in listed and "final" in listed and "paper" in listed
    assert main(["run", "--protocol", "nope", "--model", "tiny-random"]) == 2
    assert "unknown protocol 'nope'" in capsys.readouterr().err
