"""The metric table is the one place that defines a metric: its documentation, and that a
metric added to it reaches the report, the figures and the leaderboard with no other edit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from clbench import metrics
from clbench.leaderboard.build import build, leaderboard_entries, site_data
from clbench.leaderboard.submission import submit
from clbench.metrics import METRICS, Metric, Scores
from clbench.reporting import plots
from clbench.reporting.tables import parse_metrics, report, tables
from clbench.results.load import load_runs, read_runs, reported_metrics


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_every_metric_has_its_documented_formula_and_direction() -> None:
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    anchors = {slug(line.lstrip("#").strip()) for line in text.splitlines() if line[:3] == "###"}
    for key, metric in METRICS.items():
        assert metric.key == key
        path, anchor = metric.formula.split("#")
        assert path == "docs/metrics.md" and anchor in anchors, metric.formula
        arrow = "↑" if metric.higher_is_better else "↓"
        assert f"| `{key}` | {metric.name} | {arrow} |" in text


def test_the_table_states_each_direction_once() -> None:
    lower = {key for key, metric in METRICS.items() if not metric.higher_is_better}
    assert lower == {"fgt", "gf"}
    assert metrics.matrix_keys() == metrics.METRIC_KEYS
    assert METRICS["gf"].source == "probes" and "gf" not in metrics.METRIC_KEYS


def last_task(scores: Scores) -> float:
    """A made-up metric: the final score on the last task."""
    return float(scores.r[-1, -1])


@pytest.fixture
def added(monkeypatch: pytest.MonkeyPatch) -> Metric:
    """The table with one more metric, as a contributor would add it: one entry."""
    metric = Metric("ltf", "LTF", "last task final", True, "docs/metrics.md#ltf", last_task)
    monkeypatch.setitem(METRICS, metric.key, metric)
    return metric


def test_an_added_metric_is_computed_and_read(added: Metric, default_runs: list[Path]) -> None:
    matrix = [[0.1, 0.2], [0.8, 0.3], [0.6, 0.9]]
    assert metrics.compute(matrix)["ltf"] == 0.9
    assert metrics.curves(matrix)["ltf_k"] == [0.8, 0.9]
    # A results file written before the metric existed gets it from its own matrix.
    [run] = read_runs([default_runs[0]])
    assert run.metrics["ltf"] == pytest.approx(run.matrix[-1][-1])
    assert "ltf" in reported_metrics(load_runs(default_runs))
    assert parse_metrics("aa,ltf") == ("aa", "ltf")


def test_an_added_metric_reaches_report_figure_and_leaderboard(
    added: Metric, default_runs: list[Path], tmp_path: Path
) -> None:
    frame = load_runs(default_runs)
    markdown = tables(frame)
    assert "LTF ↑" in markdown
    assert "last task final (ltf)" in report(read_runs(default_runs[:1]))
    assert r"LTF $\uparrow$" in tables(frame, "latex")
    csv = tables(frame, "csv")
    assert any(line.split(",")[4] == "ltf" for line in csv.splitlines()[1:] if "," in line)

    bars = plots.bars(read_runs(default_runs))
    assert "LTF ↑" in [label.get_text() for label in bars.axes[0].get_xticklabels()]

    root = tmp_path / "lb"
    submit([str(d) for d in default_runs], root)
    build(root)
    assert "| LTF " in (root / "README.md").read_text(encoding="utf-8")
    entries = leaderboard_entries(root)
    expected = np.mean([run.matrix[-1][-1] for run in read_runs(default_runs)])
    assert entries[0]["metrics"]["ltf"]["mean"] == pytest.approx(expected)
    columns = {m["key"]: m for m in site_data(entries)["metrics"]}
    assert columns["ltf"] == {
        "key": "ltf",
        "short": "LTF",
        "name": "last task final",
        "higher_is_better": True,
    }
    submitted = json.loads(next((root / "submissions").rglob("*.json")).read_text())
    assert "ltf" in submitted["runs"][0]["metrics"]  # written, so a reader need not recompute


def test_a_lower_is_better_metric_ranks_the_other_way(
    monkeypatch: pytest.MonkeyPatch, default_runs: list[Path]
) -> None:
    """The best cell of a column follows the table's direction, nothing else."""
    frame = load_runs(default_runs)
    frame["method"] = ["a", "b", "c"]
    frame["aa"] = [0.5, 0.6, 0.7]
    assert "**70.0" in tables(frame, metrics=["aa"])
    lower = Metric("aa", "AA", "average accuracy", False, "docs/metrics.md#aa", last_task)
    monkeypatch.setitem(METRICS, "aa", lower)
    text = tables(frame, metrics=["aa"])
    assert "**50.0" in text and "AA ↓" in text and "higher is better except for aa" in text
