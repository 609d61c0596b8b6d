"""`clbench run`, `clbench list` and `clbench report` from the command line."""

import ast
from pathlib import Path

import clbench
from clbench.cli import main
from clbench.training.runner import run


def test_list(capsys, tiny_tasks):
    assert main(["list", "sequences"]) == 0
    assert "default" in capsys.readouterr().out
    assert main(["list", "tasks", "--include-path", str(tiny_tasks)]) == 0
    out = capsys.readouterr().out
    assert "review-positive" in out and "t-food" in out
    assert main(["list", "methods"]) == 0
    assert "replay" in capsys.readouterr().out
    assert main(["list", "models"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_report_formats(tiny_tasks, tiny_config, capsys):
    run_dir = run(tiny_config, include=(str(tiny_tasks),))
    assert main(["report", str(run_dir)]) == 0
    markdown = capsys.readouterr().out
    assert "| 0: before training" in markdown and "| 3: after t-neg" in markdown
    assert "average accuracy (aa)" in markdown and "n/a" in markdown  # fwd has no reference
    assert main(["report", str(run_dir), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "0: before training," in csv
    assert main(["report", str(run_dir), "--format", "latex"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out


def test_report_of_a_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_run_prints_the_report_and_draws_the_heatmap(tiny_tasks, tmp_path, capsys):
    args = ["run", "--sequence", "tiny", "--model", "tiny-random", "--steps-per-task", "1"]
    args += ["--include-path", str(tiny_tasks), "--output", str(tmp_path), "--run-id", "r"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| 3: after t-neg" in out and f"heatmap: {tmp_path / 'r' / 'matrix.png'}" in out
    assert (tmp_path / "r" / "matrix.png").read_bytes().startswith(b"\x89PNG")


def test_the_training_package_imports_no_reporting():
    for path in (Path(clbench.__file__).parent / "training").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [name for name in imported if name and "reporting" in name], path.name
