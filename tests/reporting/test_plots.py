"""`clbench.reporting.plots` and `clbench plot`: every kind renders, files are deterministic,
errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.text import Text

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.metrics import compute
from clbench.reporting import plots
from clbench.results.load import read_runs
from clbench.results.stats import confidence_interval

TASKS = ["dbpedia", "amazon", "yahoo", "agnews"]


def make_run(
    method: str = "replay",
    seed: int = 1,
    sequence: str = "standard-cl-order1",
    tasks: list[str] = TASKS,
) -> dict[str, Any]:
    """A small results dict with a made-up matrix that forgets; two cells are null."""
    rng = np.random.default_rng(seed + 100 * len(method))
    n = len(tasks)
    matrix: list[list[float | None]] = []
    for k in range(n + 1):
        row: list[float | None] = []
        for j in range(n):
            learned = 0.85 - 0.08 * (k - j - 1) if k > j else 0.3  # trained, then forgotten
            row.append(round(float(np.clip(learned + rng.normal(0, 0.03), 0, 1)), 4))
        matrix.append(row)
    matrix[1][n - 1] = None  # as in a published matrix without some zero-shot cells
    matrix[2][n - 1] = None
    metrics = compute(matrix)
    curves = {f"{key}_k": [] for key in metrics}
    for k in range(1, n + 1):
        for key, value in compute([row[:k] for row in matrix[: k + 1]]).items():
            curves[f"{key}_k"].append(value)
    return json.loads(
        json.dumps(
            {
                "schema_version": 2,
                "run_id": f"{method}-s{seed}",
                "sequence": {
                    "name": sequence,
                    "tasks": [{"name": t, "fingerprint": f"sha256:{t}"} for t in tasks],
                },
                "method": {"name": method, "hyperparameters": {}},
                "model": {"name": "smollm2-135m"},
                "seed": seed,
                "budget": {"steps_per_task": 8},
                "matrix": matrix,
                "metrics": metrics,
                "curves": curves,
            }
        ).replace("NaN", "null")  # as results.json stores them
    )


def write_runs(folder: Path, runs: list[dict[str, Any]]) -> list[Path]:
    paths = []
    for run in runs:
        path = folder / run["run_id"] / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(run), encoding="utf-8")
        paths.append(path.parent)
    return paths


ONE = [make_run()]
SEEDS = [make_run(seed=s) for s in (1, 2, 3)]
METHODS = SEEDS + [make_run("ewc", seed=s) for s in (1, 2, 3)]


def with_probes(run: dict[str, Any], names: tuple[str, ...] = ("arc_easy", "hellaswag")) -> dict:
    """`run` with a made-up probe matrix that declines, faster for longer method names."""
    rng = np.random.default_rng(run["seed"])
    slope = 0.01 * len(run["method"]["name"])
    stages = np.arange(len(TASKS) + 1)[:, None]
    rows = 0.6 - slope * stages + rng.normal(0, 0.01, (1, len(names)))
    return run | {
        "probes": {
            "names": list(names),
            "metrics": ["acc,none"] * len(names),
            "matrix": rows.round(4).tolist(),
        }
    }


STAGE_TOKENS, STEP_TOKENS = 1200, 200  # six steps a stage; points after steps 2 and 4


def pretraining(run: dict[str, Any]) -> dict[str, Any]:
    """`run` as continual pre-training: every task scored in bits per byte (3 - 2 x the
    fraction), the tokens trained in each stage, and two points within each stage
    (`--eval-every 2`), scored as the row before them."""
    n = len(run["sequence"]["tasks"])
    tasks = [
        t | {"evaluation": "loss", "metric": "bits_per_byte"} for t in run["sequence"]["tasks"]
    ]
    matrix = [[None if v is None else round(3 - 2 * v, 4) for v in row] for row in run["matrix"]]
    points = [
        {
            "stage": k,
            "step": step,
            "train_tokens": STAGE_TOKENS * (k - 1) + STEP_TOKENS * step,
            "scores": {
                t["name"]: {"bits_per_byte": v} for t, v in zip(tasks, matrix[k - 1], strict=True)
            },
        }
        for k in range(1, n + 1)
        for step in (2, 4)
    ]
    stages = [{"stage": 0}] + [{"stage": k, "train_tokens": STAGE_TOKENS} for k in range(1, n + 1)]
    return run | {
        "sequence": run["sequence"] | {"tasks": tasks},
        "matrix": matrix,
        "timings": {"stages": stages},
        "curves_in_stage": {"eval_every": 2, "tasks": [t["name"] for t in tasks], "points": points},
    }


def runs_for(kind: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs with probe results for the `general` kind, which plots only those, with a
    made-up cost for the `cost` kind, and as continual pre-training for `loss-vs-tokens`."""
    if kind == "loss-vs-tokens":
        return [pretraining(run) for run in runs]
    if kind == "cost":
        return [run | {"cost": {"train_tokens": 1000 * (run["seed"] + 1)}} for run in runs]
    return [with_probes(run) for run in runs] if kind == "general" else runs


def test_fixture_has_null_cells_and_null_metrics():
    assert ONE[0]["matrix"][1][3] is None and ONE[0]["metrics"]["fwd"] is None
    assert ONE[0]["metrics"]["fwt"] is not None
    assert ONE[0]["curves"]["aa_k"][0] is not None


@pytest.mark.parametrize("kind", plots.KINDS)
@pytest.mark.parametrize("runs", [ONE, SEEDS], ids=["1 run", "3 seeds"])
def test_every_kind_writes_every_format(kind, runs, tmp_path):
    figure = plots.plot(runs_for(kind, runs), kind)
    assert isinstance(figure, Figure)
    assert figure.get_figwidth() == 3.5
    for suffix in plots.FORMATS:
        path = plots.save(figure, tmp_path / f"figure{suffix}")
        assert path.stat().st_size > 1000


@pytest.mark.parametrize("kind", ["curves", "stages", "bars"])
def test_several_methods(kind, tmp_path):
    figure = plots.plot(METHODS, kind, width="double")
    assert figure.get_figwidth() == 7.0
    legend_texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    if kind == "curves":
        assert [ax.get_title().split(" · ")[0] for ax in figure.axes] == ["replay", "ewc"]
    else:
        assert legend_texts == ["replay (n=3)", "ewc (n=3)"]


@pytest.mark.parametrize("kind", plots.KINDS)
@pytest.mark.parametrize("suffix", [".svg", ".pdf"])
def test_vector_files_are_byte_identical(kind, suffix, tmp_path):
    runs = runs_for(kind, SEEDS)
    first = plots.save(plots.plot(runs, kind), tmp_path / f"a{suffix}").read_bytes()
    second = plots.save(plots.plot(runs, kind), tmp_path / f"b{suffix}").read_bytes()
    assert first == second
    assert b"CreationDate" not in first and b"<dc:date>" not in first


@pytest.mark.parametrize("kind", plots.KINDS)
def test_text_is_readable_at_print_size(kind):
    figure = plots.plot(runs_for(kind, METHODS if kind != "heatmap" else SEEDS), kind)
    figure.draw_without_rendering()
    sizes = [t.get_fontsize() for t in figure.findobj(Text) if t.get_visible() and t.get_text()]
    assert sizes and min(sizes) >= 7


def bands(figure: Figure) -> int:
    return sum(isinstance(c, PolyCollection) for ax in figure.axes for c in ax.collections)


@pytest.mark.parametrize("kind", ["curves", "stages"])
def test_band_only_with_several_runs(kind):
    assert bands(plots.plot(ONE, kind)) == 0
    assert bands(plots.plot(SEEDS, kind)) > 0


def test_curves_band_is_the_t_interval():
    figure = plots.curves(SEEDS)
    band = figure.axes[0].collections[0].get_paths()[0].vertices  # task 0
    scores = np.array([[run["matrix"][k][0] for k in range(5)] for run in SEEDS]) * 100
    half = 4.302653 * scores.std(axis=0, ddof=1) / np.sqrt(3)  # t(0.975, 2) * sem
    top = scores.mean(axis=0) + half
    band_top = [band[band[:, 0] == stage, 1].max() for stage in range(5)]
    assert np.allclose(band_top, top, atol=1e-4)


def test_bands_are_the_confidence_interval_of_the_tables():
    runs = [make_run(seed=s) for s in range(1, 12)]  # 11 runs: a bootstrap, as in the report
    band = plots.curves(runs).axes[0].collections[0].get_paths()[0].vertices  # task 0
    low, high, kind = confidence_interval([run["matrix"][2][0] * 100 for run in runs])
    assert kind == "bootstrap"
    at_stage = band[band[:, 0] == 2, 1]
    assert (at_stage.min(), at_stage.max()) == pytest.approx((low, high))


def test_curves_mark_the_training_stage_and_show_isolated_values():
    lines = {line.get_label(): line for line in plots.curves(ONE).axes[0].lines}
    assert lines["yahoo"].get_markevery() == [3]  # task 3 is trained at stage 3
    dots = [line for line in lines.values() if len(line.get_xdata()) == 1]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [0]  # agnews before training: the
    # cells after it are null, so its line alone would not show it


def test_bars_error_bars_and_missing_metrics():
    [ax] = plots.bars(ONE).axes
    assert all(c.errorbar is None for c in ax.containers if hasattr(c, "errorbar"))
    assert "FWD (all methods)" in ax.get_xlabel()  # fwd is null: a note, not a bar at 0
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    assert len(ax.patches) == 5  # aa, aia, fgt, bwt, fwt; no gf without probes
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["AA ↑", "AIA ↑", "FGT ↓", "BWT ↑", "FWD ↑", "FWT ↑"]
    [ax] = plots.bars([with_probes(run) for run in ONE]).axes
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "GF ↓"
    [ax] = plots.bars(SEEDS).axes
    assert any(getattr(c, "lines", None) for c in ax.containers)  # error bars over seeds


def test_heatmap_of_seeds_is_the_mean_matrix():
    figure = plots.heatmap(SEEDS)
    ax = figure.axes[0]
    assert "mean of 3 runs" in ax.get_title()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["before training", *TASKS]
    assert [t.get_text() for t in ax.get_xticklabels()] == TASKS
    mean = np.mean([run["matrix"][2][0] for run in SEEDS]) * 100
    cells = [t.get_text() for t in ax.texts]
    assert abs(float(cells[2 * 4 + 0]) - mean) <= 0.05 + 1e-9  # one decimal
    assert cells[1 * 4 + 3] == "–"  # the null cell


def test_heatmap_of_one_results_dict_keeps_the_runner_call():
    figure = plots.heatmap(ONE[0])
    assert "seed 1" in figure.axes[0].get_title()


def test_heatmap_of_many_tasks_drops_values_it_cannot_fit():
    tasks = [f"task-{i}" for i in range(15)]
    ax = plots.heatmap(make_run(tasks=tasks)).axes[0]
    assert not ax.texts and "too narrow" in ax.get_xlabel()
    assert ax.get_xticklabels()[0].get_rotation() == 90  # names too close for 45 degrees
    ax = plots.heatmap(make_run(tasks=tasks), width="double").axes[0]
    assert len(ax.texts) == 16 * 15


def test_errors():
    with pytest.raises(ClbenchError, match=r"unknown plot kind 'curve'.*'curves'"):
        plots.plot(ONE, "curve")
    with pytest.raises(ClbenchError, match="has no probe results; run it with --probes"):
        plots.plot(ONE, "general")
    with pytest.raises(ClbenchError, match=r"one method.*replay, ewc"):
        plots.heatmap(METHODS)
    other = make_run("ewc", sequence="default", tasks=["a", "b", "c"])
    with pytest.raises(ClbenchError, match=r"share a sequence.*replay-s1.*default.*ewc-s1"):
        plots.curves([*ONE, other])
    with pytest.raises(ClbenchError, match="figure width"):
        plots.bars(ONE, width="triple")
    with pytest.raises(ClbenchError, match=r"unknown figure format '\.jpg'"):
        plots.save(plots.bars(ONE), "x.jpg")
    broken = {**ONE[0], "matrix": [[0.5]]}
    with pytest.raises(ClbenchError, match=r"replay-s1: field 'matrix' is 1 x 1; expected 5 x 4"):
        plots.heatmap(broken)
    with pytest.raises(ClbenchError, match=r"no curves\.aa_k"):
        plots.stages([{**ONE[0], "curves": {}}])


def test_read_runs_expands_folders_globs_and_files(tmp_path):
    folders = write_runs(tmp_path / "runs", SEEDS)
    by_folder = read_runs([tmp_path / "runs"])
    assert [r.run_id for r in by_folder] == ["replay-s1", "replay-s2", "replay-s3"]
    mixed = read_runs([str(tmp_path / "runs" / "*"), folders[0] / "results.json", folders[1]])
    assert len(mixed) == 3  # each file once
    assert plots.plot(mixed, "bars")  # figures take `Results` as well as results dicts
    with pytest.raises(ClbenchError, match=r"no results\.json matches"):
        read_runs([str(tmp_path / "nothing-*")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClbenchError, match=r"no results\.json at or under"):
        read_runs([tmp_path / "empty"])


def test_settings_of_one_method_are_lines_named_by_them_in_their_order():
    def with_share(run: dict[str, Any], share: float) -> dict[str, Any]:
        method = {**run["method"], "hyperparameters": {"replay_fraction": share}}
        return {**run, "run_id": f"{run['run_id']}-{share}", "method": method}

    runs = [with_share(SEEDS[0], 0.05), with_share(SEEDS[0], 0.0), with_share(SEEDS[1], 0.0)]
    fig = plots.stages([*runs, METHODS[3]])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "replay (replay_fraction=0.0) (n=2)",
        "replay (replay_fraction=0.05) (1 run)",
        "ewc (1 run)",
    ]


def test_runs_that_cannot_be_averaged_are_plotted_apart():
    longer = [{**run, "budget": {"steps_per_task": 16}} for run in SEEDS[:2]]
    fig = plots.stages([*SEEDS, *longer])
    labels = " ".join(t.get_text() for t in fig.findobj(Text))
    assert "replay [1] (n=3)" in labels and "replay [2] (n=2)" in labels


def test_cli_writes_the_file(tmp_path, capsys):
    write_runs(tmp_path / "runs", METHODS)
    out = tmp_path / "figs" / "bars.pdf"
    assert main(["plot", str(tmp_path / "runs"), "--kind", "bars", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF") and str(out) in capsys.readouterr().out
    svg = tmp_path / "heat.svg"
    args = ["plot", str(tmp_path / "runs" / "replay-*"), "--out", str(svg), "--width", "double"]
    assert main(args) == 0  # heatmap is the default kind
    assert svg.read_text(encoding="utf-8").startswith("<?xml")


@pytest.mark.parametrize(
    "args, message",
    [
        (["{runs}", "--kind", "heatmap"], "one method"),
        (["{runs}", "--kind", "general"], "has no probe results"),
        (["{missing}"], "no results.json"),
    ],
)
def test_cli_exits_2_on_bad_input(args, message, tmp_path, capsys):
    write_runs(tmp_path / "runs", METHODS)
    names = {"runs": str(tmp_path / "runs"), "missing": str(tmp_path / "missing")}
    out = tmp_path / "figure.png"
    argv = ["plot", *[a.format(**names) for a in args], "--out", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_general_draws_each_probe_per_method():
    runs = [with_probes(make_run(m, seed)) for m in ("replay", "ewc") for seed in (1, 2, 3)]
    fig = plots.plot(runs, "general", width="double")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["arc_easy (acc,none)", "hellaswag (acc,none)"]
    lines = panels[0].get_lines()
    assert len(lines) == 2  # one line per method, mean of its 3 seeds
    expected = np.mean([r["probes"]["matrix"] for r in runs[:3]], axis=0)[:, 0] * 100
    assert np.allclose(lines[0].get_ydata(), expected)
    assert len(panels[0].collections) == 2  # a CI band per method
    other = with_probes(make_run("lwf", 1), names=("mmlu",))
    with pytest.raises(ClbenchError, match="must share their probes"):
        plots.general([*runs, other])


MANY = [make_run(f"method-{i}", seed=s) for i in range(plots.MAX_LINES + 1) for s in (1, 2)]


def _visible(figure: Figure) -> list:
    return [ax for ax in figure.axes if ax.get_visible()]


def _grey_lines(ax) -> int:
    return sum(line.get_color() == plots.GREY["color"] for line in ax.get_lines())


@pytest.mark.parametrize("kind", ["stages", "curves"])
def test_many_methods_become_small_multiples(kind):
    methods = [f"method-{i}" for i in range(plots.MAX_LINES + 1)]
    figure = plots.plot(MANY, kind, width="double")
    panels = _visible(figure)
    assert [ax.get_title() for ax in panels] == [f"{m} (n=2)" for m in methods]
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 2  # four to a row
    if kind == "stages":  # each panel: the others' AA_k in grey, its own two curves in colour
        assert all(_grey_lines(ax) == len(methods) - 1 for ax in panels)
        assert all(len(ax.get_lines()) == len(methods) + 1 for ax in panels)
    lines = plots.plot(MANY, kind, width="double", style="lines")
    assert len(_visible(lines)) == (2 if kind == "stages" else len(methods))
    assert len(_visible(plots.plot(METHODS, "stages", style="multiples"))) == 2  # two methods


@pytest.mark.parametrize("kind, panels", [("stages", 2), ("curves", len(TASKS))])
def test_highlight_draws_one_method_over_the_others_in_grey(kind, panels):
    figure = plots.plot(MANY, kind, width="double", highlight="method-3")
    axes = _visible(figure)
    assert len(axes) == panels
    for ax in axes:
        coloured = [line for line in ax.get_lines() if line.get_color() != plots.GREY["color"]]
        assert _grey_lines(ax) == plots.MAX_LINES and len(coloured) == 1
    legend_texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert legend_texts == ["other methods", "method-3 (n=2)"]
    highlighted = axes[0].get_lines()[-1].get_ydata()
    expected = np.mean([r["curves"]["aa_k"] for r in MANY if r["method"]["name"] == "method-3"], 0)
    if kind == "stages":
        assert np.allclose(highlighted, expected * 100)


def test_style_and_highlight_errors(tmp_path, capsys):
    with pytest.raises(ClbenchError, match="unknown method to highlight 'sgd'"):
        plots.plot(METHODS, "stages", highlight="sgd")
    with pytest.raises(ClbenchError, match="apply to curves and stages, not bars"):
        plots.plot(METHODS, "bars", highlight="ewc")
    with pytest.raises(ClbenchError, match="unknown plot style 'grid'"):
        plots.plot(METHODS, "curves", style="grid")
    write_runs(tmp_path / "runs", METHODS)
    out = tmp_path / "stages.png"
    args = ["plot", str(tmp_path / "runs"), "--kind", "stages", "--out", str(out)]
    assert main([*args, "--highlight", "ewc"]) == 0 and out.is_file()
    assert main([*args, "--highlight", "sgd"]) == 2 and "sgd" in capsys.readouterr().err


def test_loss_vs_tokens_draws_the_results_points():
    seeds = runs_for("loss-vs-tokens", SEEDS)
    methods = seeds + runs_for("loss-vs-tokens", [make_run("ewc", seed=1)])
    lines = plots.token_curves(methods)
    assert list(lines) == TASKS and list(lines["amazon"]) == ["replay (n=3)", "ewc (1 run)"]
    # Row 0, then per stage two points within it and its end row: 1 + 3 x 4 points.
    line = lines["amazon"]["replay (n=3)"]
    stage_ends = [STAGE_TOKENS * k for k in range(5)]
    inside = [STAGE_TOKENS * (k - 1) + STEP_TOKENS * s for k in range(1, 5) for s in (2, 4)]
    assert sorted(line.tokens.tolist()) == sorted(stage_ends + inside)
    assert line.tokens[line.row].tolist() == stage_ends
    # Its values are the mean over the seeds of the matrix (rows) and of the points' scores.
    rows = np.array([run["matrix"] for run in seeds], dtype=float)[:, :, 1]
    assert np.allclose(line.values[line.row], np.nanmean(rows, axis=0), equal_nan=True)
    scores = [
        [p["scores"]["amazon"]["bits_per_byte"] for p in run["curves_in_stage"]["points"]]
        for run in seeds
    ]
    inner = np.array(scores, dtype=float)
    assert np.allclose(line.values[~line.row], np.nanmean(inner, axis=0), equal_nan=True)
    figure = plots.plot(methods, "loss-vs-tokens")
    drawn = figure.axes[1].get_lines()[0]  # amazon's panel, replay
    assert np.array_equal(drawn.get_xdata(), line.tokens)
    assert figure.axes[0].get_ylabel() == "bits/byte ↓" and figure.axes[1].get_title() == "amazon"
    # The stage boundaries all methods share are dotted lines.
    dotted = [ln.get_xdata()[0] for ln in figure.axes[0].get_lines() if ln.get_linestyle() == ":"]
    assert dotted == stage_ends[1:-1]


def test_loss_vs_tokens_errors():
    with pytest.raises(ClbenchError, match="has no language-modelling task"):
        plots.plot(SEEDS, "loss-vs-tokens")
    old = pretraining(make_run()) | {"timings": None}
    with pytest.raises(ClbenchError, match="do not give the tokens trained in each stage"):
        plots.plot([old], "loss-vs-tokens")
    fewer = pretraining(make_run(seed=2))
    fewer["curves_in_stage"]["points"] = fewer["curves_in_stage"]["points"][1:]
    with pytest.raises(ClbenchError, match="scored at different points"):
        plots.plot([pretraining(make_run()), fewer], "loss-vs-tokens")
