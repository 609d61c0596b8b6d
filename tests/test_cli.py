"""`clbench list` and `clbench report` from the command line."""

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
