"""Logged predictions: one JSONL file per matrix cell, hashed in results.json, enough to
recompute every cell; kept whole across an interruption; shown by `clbench report --examples`."""

import json

import pytest

import clbench.training.runner
from clbench.cli import main
from clbench.data.registry import load_task
from clbench.errors import ClbenchError
from clbench.evaluation import predictions
from clbench.evaluation.scorers import SCORERS
from clbench.reporting.tables import examples
from clbench.results.io import read_json, read_results
from clbench.results.schema import Results, ResultsError
from clbench.training.runner import run


def _lines(run_dir, cell):
    return predictions.read(predictions.verified(run_dir, cell.path, cell.sha256))


def test_every_cell_is_recomputed_from_its_predictions(tiny_tasks, tiny_config):
    run_dir = run(tiny_config, include=(str(tiny_tasks),))
    results = read_results(run_dir)
    block = results.predictions
    assert block.format == predictions.FORMAT and len(block.files) == 4  # rows 0..3
    for k, row in enumerate(block.files):
        assert [cell.task for cell in row] == results.tasks
        for j, cell in enumerate(row):
            assert cell.path == f"predictions/row{k}/{results.tasks[j]}.jsonl"
            lines = _lines(run_dir, cell)
            assert [line["index"] for line in lines] == list(range(8))
            found = [line["prediction"] for line in lines]
            gold = [line["gold"] for line in lines]
            assert SCORERS["accuracy"](found, gold)["accuracy"] == results.matrix[k][j]
            for line in lines:  # ranked: the chosen option has the highest score
                scores = line["option_scores"]
                assert len(scores) == 2 and scores[line["prediction"]] == max(scores)
                assert line["score"] == float(line["prediction"] == line["gold"])
                assert line["option"] in (" yes", " no") and len(line["prompt_sha256"]) == 64
    assert not list(run_dir.rglob(".*.jsonl*"))  # no temporary file left


def test_no_predictions_keeps_none(tiny_tasks, tiny_config, capsys):
    tiny_config.predictions = False
    run_dir = run(tiny_config, include=(str(tiny_tasks),))
    assert read_results(run_dir).predictions is None
    assert not (run_dir / "predictions").exists()
    assert main(["report", str(run_dir), "--examples", "2"]) == 2
    assert "no predictions kept (made with --no-predictions" in capsys.readouterr().err


def test_an_interrupted_row_leaves_whole_files_and_resume_completes_it(
    tiny_tasks, tiny_config, tmp_path, monkeypatch
):
    include = (str(tiny_tasks),)
    whole = read_results(run(tiny_config, include=include)).predictions

    tiny_config.output = str(tmp_path / "interrupted")
    run_dir = run(tiny_config, include=include, stop_after=1)
    kept = {p: p.read_bytes() for p in run_dir.rglob("*.jsonl")}
    assert len(kept) == 6  # rows 0 and 1
    real, calls = clbench.training.runner.evaluate_task, []

    def failing(*args, **kwargs):  # interrupts the second task of row 2
        calls.append(args[2].task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(clbench.training.runner, "evaluate_task", failing)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config, include=include, resume=True)
    row2 = sorted(p.name for p in (run_dir / "predictions" / "row2").iterdir())
    assert row2 == ["t-pos.jsonl"]  # the first cell whole, nothing of the second
    monkeypatch.setattr(clbench.training.runner, "evaluate_task", real)

    resumed = read_results(run(tiny_config, include=include, resume=True)).predictions
    assert all(path.read_bytes() == content for path, content in kept.items())
    assert resumed.dump() == whole.dump()


def test_write_leaves_the_old_file_when_it_fails(tmp_path):
    path = tmp_path / "row1" / "t.jsonl"
    predictions.write(path, [{"index": 0}])

    def broken():
        yield {"index": 0}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        predictions.write(path, broken())
    assert predictions.read(path) == [{"index": 0}]
    assert [p.name for p in path.parent.iterdir()] == ["t.jsonl"]


def test_report_examples_marks_the_wrong_ones(tiny_tasks, tiny_config, capsys):
    run_dir = run(tiny_config, include=(str(tiny_tasks),))
    capsys.readouterr()
    assert main(["report", str(run_dir), "--examples", "3"]) == 0
    out = capsys.readouterr().out
    results = read_results(run_dir)
    for j, (task, cell) in enumerate(zip(results.tasks, results.predictions.files[3], strict=True)):
        lines = _lines(run_dir, cell)
        wrong = sum(line["gold"] != line["prediction"] for line in lines)
        assert f"{task}: {wrong} of 8 wrong" in out
        assert wrong == round(8 * (1 - results.matrix[3][j]))
        for line in lines[:3]:
            mark = "✓" if line["gold"] == line["prediction"] else "✗"
            shown = f"{mark} #{line['index']}: {line['option']!r}  gold {line['gold_option']!r}"
            assert shown in out

    shown = [line for line in out.splitlines() if line.startswith(("  ✓ #", "  ✗ #"))]
    assert len(shown) == 3 * 3  # three per task

    # A file changed after the run is refused, not shown.
    cell = results.predictions.files[3][0]
    (run_dir / cell.path).write_text("{}\n", encoding="utf-8")
    with pytest.raises(ClbenchError, match=r"changed since results\.json recorded it"):
        examples([results], 1)


def test_the_predictions_block_is_checked(tiny_tasks, tiny_config):
    content = read_json(run(tiny_config, include=(str(tiny_tasks),)) / "results.json")
    short = json.loads(json.dumps(content))
    short["predictions"]["files"].pop()
    with pytest.raises(ResultsError, match=r"predictions\.files.*expected 4 x 3"):
        Results.from_json(short)
    del content["predictions"]["files"][0][0]["sha256"]
    with pytest.raises(ResultsError, match=r"predictions.files\[0\]\[0\].sha256.*missing"):
        Results.from_json(content)


def test_a_ranked_task_scored_by_generation_keeps_texts(tiny_tasks):
    data = load_task(str(tiny_tasks / "t-pos.yaml")).load(max_test=2)
    golds = [e.target.strip() for e in data.test]
    samples = [{"prediction": golds[0]}, {"prediction": "maybe"}]
    lines = predictions.records(data, samples, "generate")
    assert [line["gold"] for line in lines] == golds
    assert [line["score"] for line in lines] == [1.0, 0.0]
    assert all("option" not in line and "option_scores" not in line for line in lines)
    ranked = predictions.records(data, [{"prediction": e.label} for e in data.test])
    assert [line["score"] for line in ranked] == [1.0, 1.0]
    assert [line["gold_option"] for line in ranked] == [data.options[e.label] for e in data.test]
