"""Bad input: one clear message from the CLI (exit code 2, no traceback), and no run folder."""

import json
from pathlib import Path

import pytest
import yaml

from clbench.cli import main


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def _tiny(tiny_tasks, tmp_path, *extra):
    return [
        "run",
        "--model",
        "tiny-random",
        "--include-path",
        str(tiny_tasks),
        "--output",
        str(tmp_path / "out"),
        "--steps-per-task",
        "1",
        *extra,
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sequence", "no-such-seq"], "unknown sequence 'no-such-seq'"),
        (["--sequence", "tiyn"], "Did you mean 'tiny'"),
        (["--sequence", "tiny", "--method", "no-such-method"], "unknown method 'no-such-method'"),
        (["--sequence", "tiny", "--model", "no-such-model"], "cannot load model 'no-such-model'"),
        (["--sequence", "tiny", "--lr", "-1"], "'lr' must be > 0"),
        (["--sequence", "tiny", "--peft", "adapters"], "'peft' must be null or 'lora'"),
        (["--sequence", "tiny", "--method-arg", "oops"], "expected KEY=VALUE"),
    ],
)
def test_bad_names_and_values(flags, message, tiny_tasks, tmp_path, capsys):
    code, err = _cli(_tiny(tiny_tasks, tmp_path, *flags), capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def _bad_task(tiny_tasks, change):
    spec = yaml.safe_load((tiny_tasks / "t-pos.yaml").read_text())
    change(spec)
    (tiny_tasks / "t-pos.yaml").write_text(yaml.safe_dump(spec))
    return tiny_tasks / "t-pos.yaml"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("prompt"), "missing required field 'prompt'"),
        (lambda s: s.update(family="poetry"), "field 'family' is 'poetry'"),
        (lambda s: s.update(labels="yes"), "field 'labels' must be a list of strings"),
        (lambda s: s.update(colour="red"), "unknown task field(s) colour"),
        (lambda s: s.update(prompt="{txt}\nAnswer:"), "field 'prompt' uses {txt}, which is"),
        (lambda s: s.update(prompt="{text\nAnswer:"), "field 'prompt' is not a valid template"),
        (lambda s: s.update(metric_args={"tokenize": "zh"}), "field 'metric_args': metric"),
        (lambda s: s.update(labels=["positive", "negative"]), "label 'yes' is not one of"),
    ],
)
def test_bad_task_yaml(change, message, tiny_tasks, tmp_path, capsys):
    path = _bad_task(tiny_tasks, change)
    code, err = _cli(_tiny(tiny_tasks, tmp_path, "--sequence", "tiny"), capsys)
    assert code == 2 and message in err
    assert str(path) in err
    assert not (tmp_path / "out").exists()


def test_template_typo_names_the_task_file_and_the_variable(tiny_tasks, tmp_path, capsys):
    _mirror(tmp_path, [json.dumps({"text": "a", "label": "x"})])
    code, err = _run_mini(tiny_tasks, tmp_path, capsys, "{text}\nTopic: {titel}\nAnswer:")
    assert code == 2
    assert f"error: {tiny_tasks / 'mini.yaml'}: field 'prompt' uses {{titel}}" in err
    assert "(label, text)" in err and ".jsonl" not in err


def test_yaml_syntax_error_names_file_and_line(tiny_tasks, tmp_path, capsys):
    path = tiny_tasks / "t-pos.yaml"
    path.write_text("name: t-pos\nfamily: text_classification\nprompt: [unclosed\n")
    code, err = _cli(_tiny(tiny_tasks, tmp_path, "--sequence", "tiny"), capsys)
    assert code == 2 and f"{path}:4: not valid YAML" in err


def test_config_syntax_error_names_file_and_line(tiny_tasks, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("sequence: tiny\nbatch_size: 8\n  lr: 0.1\n")
    code, err = _cli(_tiny(tiny_tasks, tmp_path, "--config", str(config)), capsys)
    assert code == 2 and f"{config}:3: not valid YAML" in err


def test_bad_config_file(tiny_tasks, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("sequence: tiny\nbatch_size: eight\n")
    code, err = _cli(_tiny(tiny_tasks, tmp_path, "--config", str(config)), capsys)
    assert code == 2 and str(config) in err and "'batch_size' must be int" in err


def _run_mini(tiny_tasks, tmp_path, capsys, prompt):
    """Run the sequence `mini-seq` of the one task `mini`, read from the mirror of `_mirror`."""
    spec = {
        "name": "mini",
        "family": "text_classification",
        "source": {"dataset": "mini"},
        "prompt": prompt,
        "target": " {label}",
    }
    (tiny_tasks / "mini.yaml").write_text(yaml.safe_dump(spec))
    (tiny_tasks / "mini-seq.yaml").write_text(
        yaml.safe_dump({"name": "mini-seq", "tasks": ["mini"]})
    )
    flags = ["--sequence", "mini-seq", "--data-dir", str(tmp_path / "mirror")]
    return _cli(_tiny(tiny_tasks, tmp_path, *flags), capsys)


def _mirror(tmp_path: Path, train_lines: list[str]) -> Path:
    folder = tmp_path / "mirror" / "text_classification" / "mini"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(line + "\n" for line in train_lines))
    (folder / "test.jsonl").write_text(json.dumps({"text": "a", "label": "x"}) + "\n")
    (folder / "labels.json").write_text('["x", "y"]')
    return folder


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "train.jsonl: the split is empty"),
        (['{"text": "a"}'], "train.jsonl:1: missing field(s) label"),
        (['{"text": "a", "label": "x"}', "{oops"], "train.jsonl:2: not valid JSON"),
    ],
)
def test_bad_mirror_data(lines, message, tiny_tasks, tmp_path, capsys):
    _mirror(tmp_path, lines)
    code, err = _run_mini(tiny_tasks, tmp_path, capsys, "{text}\nAnswer:")
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_output_folder_of_another_run(tiny_tasks, tmp_path, capsys):
    args = _tiny(tiny_tasks, tmp_path, "--sequence", "tiny", "--run-id", "mine")
    assert _cli(args, capsys)[0] == 0
    results = (tmp_path / "out" / "mine" / "results.json").read_bytes()
    code, err = _cli([*args, "--seed", "7"], capsys)
    assert code == 2 and "already holds a different run (differs in: seed)" in err
    code, err = _cli(args, capsys)  # the same run again: its results, not a new run
    assert code == 0 and "holds this run, finished" in err
    assert (tmp_path / "out" / "mine" / "results.json").read_bytes() == results  # untouched


def test_stray_folder_and_nothing_to_resume(tiny_tasks, tmp_path, capsys):
    stray = tmp_path / "out" / "mine"
    stray.mkdir(parents=True)
    (stray / "notes.txt").write_text("mine")
    args = _tiny(tiny_tasks, tmp_path, "--sequence", "tiny", "--run-id", "mine")
    code, err = _cli(args, capsys)
    assert code == 2 and "is not a clbench run folder" in err
    code, err = _cli([*args[:-2], "--run-id", "other", "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err


def test_resume_by_run_dir_and_unfinished_run(tiny_tasks, tmp_path, capsys):
    args = _tiny(tiny_tasks, tmp_path, "--sequence", "tiny", "--run-id", "r")
    assert _cli([*args, "--stop-after", "1"], capsys)[0] == 0
    code, err = _cli([*args, "--stop-after", "1"], capsys)
    assert code == 0 and "continuing the unfinished run" in err
    code, err = _cli(["run", "--resume", str(tmp_path / "out" / "r"), "--seed", "3"], capsys)
    assert code == 2 and "give no other settings" in err
    code, _ = _cli(
        ["run", "--resume", str(tmp_path / "out" / "r"), "--include-path", str(tiny_tasks)], capsys
    )
    assert code == 0 and (tmp_path / "out" / "r" / "results.json").is_file()
