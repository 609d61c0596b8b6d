"""Paper figures made from results files only (never from a live run).

Each plot function returns a matplotlib Figure, so it can be restyled before `save` writes it.
Runs are `Results` (`clbench.results.load.read_runs`) or results.json content. Several runs of
one method (seeds) are averaged; bands and error bars are the 95% CI of the mean that the
report's tables give (`clbench.results.stats.confidence_interval`). `save` removes dates from
PDF and SVG files, so the same runs give the same bytes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from clbench.errors import ClbenchError, unknown_name
from clbench.metrics import METRICS, score_unit
from clbench.results.compare import comparable_groups
from clbench.results.load import reported_metrics, runs_frame
from clbench.results.schema import Results, as_results
from clbench.results.stats import mean_ci

Run = Results | Mapping[str, Any]  # Results, or results.json content

KINDS = ("heatmap", "curves", "stages", "bars", "general", "cost", "loss-vs-tokens")
WIDTHS = {"single": 3.5, "double": 7.0}  # inches: one or both columns of a two-column paper
FORMATS = (".pdf", ".png", ".svg")
# Okabe & Ito (2008), colour-blind safe; yellow, faint on white, comes last.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DASHES = ("-", "--", ":", "-.")  # past 8 lines the colours repeat with another dash
HATCHES = ("", "///", "...", "xxx")  # the same for bars
STAGE_CURVES = {"aa_k": "AA$_k$", "aia_k": "AIA$_k$"}
# Forms of the stages and curves figures with several methods: "lines" draws every method in
# colour, "multiples" one small panel per method over the others in grey; "auto" picks
# multiples above MAX_LINES methods, where lines in colour can no longer be told apart.
STYLES = ("auto", "lines", "multiples")
MAX_LINES = 6
GREY = {"color": "0.82", "linewidth": 0.7, "zorder": 1}  # the methods not in focus
STYLE = {  # sizes are at print size: figures are made at the width they are printed
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "mathtext.default": "regular",
}
SAVE_STYLE = {
    "svg.hashsalt": "clbench",  # fixed ids instead of random ones
    "pdf.fonttype": 42,  # TrueType: text stays text in the PDF, as journals ask
}
METADATA = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}, ".png": {}}
ANNOTATION_PT = 7
CHAR_PT = 0.6 * ANNOTATION_PT  # rough width of one character at 7 pt, to plan space


def plot(
    runs: Sequence[Run],
    kind: str,
    width: str = "single",
    style: str = "auto",
    highlight: str | None = None,
) -> Figure:
    """The figure of one kind (see KINDS) for these runs; `style` (see STYLES) and `highlight`
    (one method in colour over the others in grey) apply to "curves" and "stages"."""
    if kind not in KINDS:
        raise unknown_name("plot kind", kind, KINDS)
    if kind in ("curves", "stages"):
        return {"curves": curves, "stages": stages}[kind](runs, width, style, highlight)
    if style != "auto" or highlight is not None:
        raise ClbenchError(f"--style and --highlight apply to curves and stages, not {kind}")
    kinds = {
        "heatmap": heatmap,
        "bars": bars,
        "general": general,
        "cost": cost,
        "loss-vs-tokens": loss_vs_tokens,
    }
    return kinds[kind](runs, width)


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PDF, PNG or SVG (by suffix); PDF and SVG bytes carry no date."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ClbenchError(f"{path}: unknown figure format {suffix!r}; use {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context(SAVE_STYLE):
        fig.savefig(path, format=suffix[1:], dpi=300, metadata=METADATA[suffix])
    return path


def heatmap(runs: Run | Sequence[Run], width: str = "single") -> Figure:
    """The annotated (T+1) x T matrix in percent (the mean matrix for several runs of one
    method); row 0 is the model before training, grey cells are missing."""
    runs = _results([runs] if isinstance(runs, (Results, Mapping)) else runs)
    tasks = _tasks(runs)
    groups = _by_method(runs)
    if len(groups) > 1:
        raise ClbenchError(
            f"a heatmap shows one method; these runs have {len(groups)} ({', '.join(groups)}): "
            "give the runs of one method, or plot curves, stages or bars"
        )
    [(method, group)] = groups.items()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell null in every run stays NaN
        matrix = np.nanmean([_shown(run) for run in group], axis=0)
    percent = _score_label(group) == "score (%)"
    longest = max(map(len, [*tasks, "before training"]))
    with rc_context(STYLE):
        fig = Figure(
            figsize=(_inches(width), 1.0 + 0.22 * (len(tasks) + 1) + CHAR_PT * longest / 72),
            layout="constrained",
        )
        ax = fig.add_subplot()
        image = ax.imshow(
            matrix,
            cmap=colormaps["viridis"].with_extremes(bad="0.85"),
            vmin=0 if percent else None,  # a loss has no fixed range
            vmax=100 if percent else None,
        )
        ax.set_aspect("auto")
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(tasks) + 1), ["before training", *tasks])
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        ax.axhline(0.5, color="white", linewidth=1.5)  # the base model above, the stages below
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training on")
        ax.set_title(f"{method} on {group[0].sequence.name}\n{_describe(group)}")
        fig.colorbar(image, ax=ax, label=_score_label(group), pad=0.02, fraction=0.06)
        _annotate(fig, ax, matrix)
    return fig


def _annotate(fig: Figure, ax: Axes, matrix: np.ndarray) -> None:
    """Print each cell's value at 7 pt, with one decimal, none, or (too narrow) not at all;
    stand the task names upright when cells are too narrow for them at 45 degrees."""
    fig.draw_without_rendering()  # lays the figure out, so the cell width is known
    cell_pt = ax.get_window_extent().width / fig.dpi * 72 / matrix.shape[1]
    if cell_pt < 2 * ANNOTATION_PT:
        ax.tick_params(axis="x", labelrotation=90)
    if cell_pt < 4 * CHAR_PT:  # room for "100" and a margin
        ax.set_xlabel("evaluated task (too narrow for values)")
        return
    decimals = 1 if cell_pt >= 6 * CHAR_PT else 0
    for (i, j), value in np.ndenumerate(matrix):
        text = "–" if np.isnan(value) else f"{value:.{decimals}f}"
        dark = np.isnan(value) or value > 60  # viridis is light above about 60
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=ANNOTATION_PT,
            color="black" if dark else "white",
        )


def curves(
    runs: Sequence[Run], width: str = "single", style: str = "auto", highlight: str | None = None
) -> Figure:
    """Each task's score after every stage 0..T, one line per task and one panel per method;
    a marker where the task was trained; with several runs, the mean and its 95% CI band.
    As small multiples the panels are smaller, several to a row; with `highlight`, one panel
    per task shows that method in colour over the other methods in grey."""
    runs = _results(runs)
    tasks = _tasks(runs)
    groups = _by_method(runs)
    stage = np.arange(len(tasks) + 1)
    form = _form(style, groups, highlight)
    if form == "highlight":
        labels = ("stage (0 = before training)", _score_label(runs))
        return _highlighted(groups, highlight, stage, tasks, width, lambda r: _shown(r).T, labels)
    small = form == "multiples"
    with rc_context(STYLE):
        fig, panels = _panels(
            len(groups),
            width,
            legend_entries=tasks,
            height=1.2 if small else 1.8,
            columns=_multiple_columns(width) if small else 0,
        )
        for ax, (method, group) in zip(panels, groups.items(), strict=True):
            mean, low, high = mean_ci(np.stack([_shown(run) for run in group]))
            for j, task in enumerate(tasks):
                color, dash = _look(j)
                ax.plot(
                    stage,
                    mean[:, j],
                    color=color,
                    linestyle=dash,
                    label=task,
                    marker="o",
                    markevery=[j + 1],
                )
                alone = _isolated(mean[:, j])  # a line cannot show a value between gaps
                ax.plot(stage[alone], mean[alone, j], ".", color=color)
                if len(group) > 1:
                    _band(ax, stage, low[:, j], high[:, j], color)
            ax.set_title(
                f"{method} ({_count(group)})" if small else f"{method} · {_describe(group)}"
            )
            ax.set_xticks(_ticks(stage))
        _label(panels, "stage (0 = before training)", _score_label(runs))
        _legend(fig, panels[0], "task (● = trained at this stage)")
    return fig


def stages(
    runs: Sequence[Run], width: str = "single", style: str = "auto", highlight: str | None = None
) -> Figure:
    """AA_k and AIA_k after each stage k, one line per method; CI bands over several runs.
    As small multiples, one panel per method (its AA_k and AIA_k over the other methods' AA_k
    in grey); with `highlight`, that method in colour over the others in grey."""
    runs = _results(runs)
    tasks = _tasks(runs)
    groups = _by_method(runs)
    k = np.arange(1, len(tasks) + 1)

    def both(run: Results) -> np.ndarray:
        return np.stack([_curve(run, key, len(tasks)) for key in STAGE_CURVES]) * 100

    form = _form(style, groups, highlight)
    if form == "highlight":
        names = list(STAGE_CURVES.values())
        return _highlighted(
            groups, highlight, k, names, width, both, ("tasks learned k", "score (%)")
        )
    if form == "multiples":
        return _stage_multiples(groups, k, width, both)
    labels = [f"{method} ({_count(group)})" for method, group in groups.items()]
    with rc_context(STYLE):
        fig, panels = _panels(2, width, legend_entries=labels, columns=2)
        for ax, (key, name) in zip(panels, STAGE_CURVES.items(), strict=True):
            _method_lines(ax, k, labels, groups, lambda run, key=key: _curve(run, key, len(tasks)))
            ax.set_title(name)
            ax.set_xticks(_ticks(k))
        _label(panels, "tasks learned k", "score (%)")
        _legend(fig, panels[0], "method")
    return fig


def _form(style: str, groups: dict[str, list[Results]], highlight: str | None) -> str:
    """ "lines", "multiples" or "highlight", from the style asked for and the methods."""
    if style not in STYLES:
        raise unknown_name("plot style", style, STYLES)
    if highlight is not None:
        if highlight not in groups:
            raise unknown_name("method to highlight", highlight, groups)
        return "highlight"
    if style == "auto":
        return "multiples" if len(groups) > MAX_LINES else "lines"
    return style


def _multiple_columns(width: str) -> int:
    return 2 if width == "single" else 4


def _stage_multiples(
    groups: dict[str, list[Results]],
    k: np.ndarray,
    width: str,
    both: Callable[[Results], np.ndarray],
) -> Figure:
    """One panel per method: its AA_k and AIA_k (mean, CI band) over every method's AA_k."""
    means = {m: mean_ci(np.stack([both(run) for run in g])) for m, g in groups.items()}
    entries = ["AA$_k$", "AIA$_k$", "AA$_k$ of the other methods"]
    with rc_context(STYLE):
        fig, panels = _panels(
            len(groups), width, entries, columns=_multiple_columns(width), height=1.1
        )
        for ax, (method, group) in zip(panels, groups.items(), strict=True):
            others = [m for m in groups if m != method]
            for i, other in enumerate(others):
                label = entries[2] if i == 0 else "_nolegend_"
                ax.plot(k, means[other][0][0], **GREY, label=label)
            mean, low, high = means[method]
            for row, (name, dash) in enumerate(zip(entries[:2], DASHES, strict=False)):
                ax.plot(k, mean[row], color=PALETTE[row], linestyle=dash, label=name)
                if len(group) > 1:
                    _band(ax, k, low[row], high[row], PALETTE[row])
            ax.set_title(f"{method} ({_count(group)})")
            ax.set_xticks(_ticks(k))
        _label(panels, "tasks learned k", "score (%)")
        _legend(fig, panels[0], "")
    return fig


def _highlighted(
    groups: dict[str, list[Results]],
    highlight: str,
    x: np.ndarray,
    names: list[str],
    width: str,
    values: Callable[[Results], np.ndarray],
    axis_labels: tuple[str, str],
) -> Figure:
    """One panel per row of `values(run)` (named by `names`): the method `highlight` in
    colour, with its CI band, over every other method in grey."""
    stats = {m: mean_ci(np.stack([values(run) for run in g])) for m, g in groups.items()}
    focus = f"{highlight} ({_count(groups[highlight])})"
    entries = [focus, "other methods"]
    with rc_context(STYLE):
        columns = min(len(names), 2 if width == "single" else 4)
        fig, panels = _panels(len(names), width, entries, columns=columns, height=1.4)
        for j, (ax, name) in enumerate(zip(panels, names, strict=True)):
            for i, other in enumerate(m for m in groups if m != highlight):
                ax.plot(x, stats[other][0][j], **GREY, label=entries[1] if i == 0 else "_nolegend_")
            mean, low, high = stats[highlight]
            ax.plot(x, mean[j], color=PALETTE[0], marker="o", label=focus)
            if len(groups[highlight]) > 1:
                _band(ax, x, low[j], high[j], PALETTE[0])
            ax.set_title(name)
            ax.set_xticks(_ticks(x))
        _label(panels, *axis_labels)
        _legend(fig, panels[0], "")
    return fig


def general(runs: Sequence[Run], width: str = "single") -> Figure:
    """Each general-ability probe's score after every stage 0..T (`--probes`), one panel per
    probe and one line per method; CI bands over several runs."""
    runs = _results(runs)
    tasks = _tasks(runs)
    probes = _probes(runs)
    groups = _by_method(runs)
    stage = np.arange(len(tasks) + 1)
    labels = [f"{method} ({_count(group)})" for method, group in groups.items()]
    with rc_context(STYLE):
        fig, panels = _panels(len(probes), width, legend_entries=labels)
        for j, (ax, probe) in enumerate(zip(panels, probes, strict=True)):

            def column(run: Results, j: int = j) -> np.ndarray:
                return np.array(run.probes.matrix, dtype=float)[:, j]  # null -> NaN

            _method_lines(ax, stage, labels, groups, column)
            ax.set_title(probe)
            ax.set_xticks(_ticks(stage))
        _label(panels, "stage (0 = before training)", "probe score (×100)")
        _legend(fig, panels[0], "method")
    return fig


def _method_lines(
    ax: Axes,
    x: np.ndarray,
    labels: list[str],
    groups: dict[str, list[Results]],
    values: Callable[[Results], np.ndarray],
) -> None:
    """One line per method: the mean of `values` over its runs, in percent, with a CI band."""
    for i, (label, group) in enumerate(zip(labels, groups.values(), strict=True)):
        mean, low, high = mean_ci(np.stack([values(run) for run in group]) * 100)
        color, dash = _look(i)
        ax.plot(x, mean, color=color, linestyle=dash, marker="o", label=label)
        if len(group) > 1:
            _band(ax, x, low, high, color)


def bars(runs: Sequence[Run], width: str = "single") -> Figure:
    """Every metric of the metric table per method (grouped bars; a probe metric only for runs
    with probes) with 95% CI error bars over runs; undefined (null) metrics are marked n/a,
    never drawn as 0."""
    runs = _results(runs)
    _tasks(runs)
    groups = _by_method(runs)
    labels = [f"{method} ({_count(group)})" for method, group in groups.items()]
    keys = reported_metrics(runs_frame(runs))
    x = np.arange(len(keys))
    bar = 0.8 / len(groups)
    means = []
    with rc_context(STYLE):
        fig, [ax] = _panels(1, width, legend_entries=labels, height=1.9)
        for i, (label, group) in enumerate(zip(labels, groups.values(), strict=True)):
            values = np.array([[run.metric(key) for key in keys] for run in group])
            mean, low, high = mean_ci(values * 100)
            means.append(mean)
            where = x - 0.4 + bar * (i + 0.5)
            shown = ~np.isnan(mean)
            color, _ = _look(i)
            ax.bar(
                where[shown],
                mean[shown],
                bar,
                color=color,
                label=label,
                hatch=HATCHES[i // len(PALETTE) % len(HATCHES)],
                edgecolor="white",
                linewidth=0.3,
                yerr=np.stack([mean - low, high - mean])[:, shown] if len(group) > 1 else None,
                capsize=1.5,
                error_kw={"elinewidth": 0.8, "capthick": 0.8},
            )
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, [f"{METRICS[key].short} {METRICS[key].arrow}" for key in keys])
        ax.set_ylabel("value (%)")
        missing = np.isnan(np.array(means))  # methods x metrics
        if missing.any():
            _mark_missing(ax, missing, x, bar)
            ax.set_xlabel(_missing_note(missing, keys, list(groups)), fontsize=ANNOTATION_PT)
        _legend(fig, ax, "method")
    return fig


def _mark_missing(ax: Axes, missing: np.ndarray, x: np.ndarray, bar: float) -> None:
    """'n/a' where a bar would be: once per metric if no method has it, else per bar."""
    for m, column in enumerate(missing.T):
        if column.all():
            spots, rotation = [x[m]], 0
        else:
            spots, rotation = x[m] - 0.4 + bar * (np.flatnonzero(column) + 0.5), 90
        for spot in spots:
            ax.text(
                spot,
                0,
                "n/a",
                rotation=rotation,
                ha="center",
                va="bottom",
                fontsize=ANNOTATION_PT,
                color="0.35",
            )


def _missing_note(missing: np.ndarray, keys: Sequence[str], methods: list[str]) -> str:
    parts = [
        f"{METRICS[key].short} "
        f"({'all methods' if column.all() else ', '.join(np.array(methods)[column])})"
        for key, column in zip(keys, missing.T, strict=True)
        if column.any()
    ]
    return "n/a: undefined (null): " + "; ".join(parts)


COST_AXIS = "tokens processed (training + method)"


def cost(runs: Sequence[Run], width: str = "single") -> Figure:
    """AA against compute, one point per method: the mean over its runs with 95% CI error
    bars on both axes. Compute is `cost.compute_tokens`: the tokens trained on, plus those of
    the method's extra forward and backward passes and of the tokens it generated
    (docs/results-schema.md#cost), on a log scale since methods differ by orders."""
    runs = _results(runs)
    _tasks(runs)
    groups = _by_method(runs)
    missing = [run.run_id for run in runs if run.cost is None or not run.cost.compute_tokens]
    if missing:
        raise ClbenchError(
            f"runs without a cost block (made before clbench counted it): {', '.join(missing)}"
        )
    labels = [f"{method} ({_count(group)})" for method, group in groups.items()]
    with rc_context(STYLE):
        fig, [ax] = _panels(1, width, legend_entries=labels, height=2.2)
        for i, (label, group) in enumerate(zip(labels, groups.values(), strict=True)):
            values = np.array([[r.cost.compute_tokens, r.metric("aa") * 100] for r in group])
            mean, low, high = mean_ci(values.astype(float))
            spread = np.nan_to_num(np.stack([mean - low, high - mean]))  # one run: no bars
            color, _ = _look(i)
            marker = "osD^v<>P"[i // len(PALETTE) % 8]
            ax.errorbar(
                mean[0],
                mean[1],
                xerr=spread[:, :1],
                yerr=spread[:, 1:],
                fmt=marker,
                color=color,
                label=label,
                capsize=1.5,
                elinewidth=0.8,
            )
        ax.set_xscale("log")
        # 1-2-5 ticks labelled 200k, 500k, 1M: runs that span less than a decade get labels too
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
        ax.grid(axis="x", color="0.9", linewidth=0.5)
        ax.set_xlabel(COST_AXIS)
        ax.set_ylabel("AA (%)")
        _legend(fig, ax, "method")
    return fig


@dataclass
class TokenCurve:
    """One line of the loss-against-tokens figure: the tokens trained on so far in the run,
    the task's score at each in its unit (bits per byte), and which points are rows of the
    matrix (row 0, then the end of each stage) rather than points within a stage."""

    tokens: np.ndarray
    values: np.ndarray
    row: np.ndarray  # bool


def token_curves(runs: Sequence[Run]) -> dict[str, dict[str, TokenCurve]]:
    """The lines of `loss_vs_tokens`: by language-modelling task, by method (its legend label),
    the mean over the method's runs of row 0, the points scored within each stage
    (`--eval-every`) and each stage's end row."""
    runs = _results(runs)
    tasks = _tasks(runs)
    groups = _by_method(runs)
    modelled = [j for j, t in enumerate(runs[0].sequence.tasks) if t.evaluation == "loss"]
    if not modelled:
        raise ClbenchError(
            f"the runs' sequence {runs[0].sequence.name} has no language-modelling task, "
            "whose loss this figure draws; plot curves instead"
        )
    found: dict[str, dict[str, TokenCurve]] = {tasks[j]: {} for j in modelled}
    for method, group in groups.items():
        label = f"{method} ({_count(group)})"
        for j in modelled:
            lines = [_token_points(run, j) for run in group]
            if len({(len(x), tuple(row)) for x, _, row in lines}) > 1:
                raise ClbenchError(
                    f"the runs of {method} were scored at different points within their "
                    f"stages (--eval-every or steps differ), so they cannot be averaged: "
                    f"{', '.join(run.run_id for run in group)}"
                )
            tokens, values, row = (np.stack(part) for part in zip(*lines, strict=True))
            found[tasks[j]][label] = TokenCurve(tokens.mean(axis=0), mean_ci(values)[0], row[0])
    return found


def _token_points(run: Results, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens, scores (in the task's unit) and the row mask of task j's points in one run."""
    task = run.sequence.tasks[j]
    stages = (run.timings or {}).get("stages") or []
    trained = [record.get("train_tokens") for record in stages[1:]]
    if len(trained) != len(run.tasks) or None in trained:
        raise ClbenchError(
            f"run {run.run_id}: timings.stages do not give the tokens trained in each stage "
            "(the run was made before clbench recorded them)"
        )
    ends = np.cumsum([0, *trained])
    inside = run.curves_in_stage.points if run.curves_in_stage else []
    matrix = _matrix(run)
    points = [(0, matrix[0, j], True)]
    for k in range(1, len(run.tasks) + 1):
        for p in (p for p in inside if p.stage == k):
            value = p.scores.get(task.name, {}).get(task.metric)
            points.append((p.train_tokens, math.nan if value is None else value, False))
        points.append((ends[k], matrix[k, j], True))
    tokens, values, row = (np.array(part) for part in zip(*points, strict=True))
    return tokens.astype(float), values.astype(float) * score_unit(task.metric)[0], row


def loss_vs_tokens(runs: Sequence[Run], width: str = "single") -> Figure:
    """Each language-modelling task's validation score (bits per byte, lower is better)
    against the tokens trained on, one panel per task and one line per method, as Ibrahim et
    al. (2024) draw continual pre-training: row 0, the points scored within each stage
    (`--eval-every`) and each stage's end, marked with a dot. A dotted vertical line marks a
    stage boundary that every method shares (a method that re-trains on the union trains
    more tokens per stage)."""
    lines = token_curves(runs)
    runs = _results(runs)
    labels = list(next(iter(lines.values())))
    metric = next(t.metric for t in runs[0].sequence.tasks if t.evaluation == "loss")
    with rc_context(STYLE):
        fig, panels = _panels(len(lines), width, legend_entries=labels, height=1.7)
        for ax, (task, curves) in zip(panels, lines.items(), strict=True):
            shared = None
            for i, (label, curve) in enumerate(curves.items()):
                color, dash = _look(i)
                ends = np.flatnonzero(curve.row)
                ax.plot(
                    curve.tokens,
                    curve.values,
                    color=color,
                    linestyle=dash,
                    marker="o",
                    markevery=list(ends),
                    label=label,
                )
                boundaries = set(curve.tokens[ends[1:-1]])
                shared = boundaries if shared is None else shared & boundaries
            for x in sorted(shared or ()):
                ax.axvline(x, color="0.6", linestyle=":", linewidth=0.7, zorder=0)
            ax.set_title(task)
        _label(panels, "training tokens", f"{score_unit(metric)[1]} ↓")
        _legend(fig, panels[0], "method (● = a stage's end)")
    return fig


# ---- reading runs ----------------------------------------------------------------------------


def _results(runs: Sequence[Run]) -> list[Results]:
    return [as_results(run) for run in runs]


def _tasks(runs: Sequence[Results]) -> list[str]:
    """The task names all runs share; a ClbenchError naming the runs if they differ."""
    if not runs:
        raise ClbenchError("no runs to plot")
    sequences: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for run in runs:
        sequences.setdefault((run.sequence.name, tuple(run.tasks)), []).append(run.run_id)
    if len(sequences) > 1:
        listing = "; ".join(
            f"{name} ({', '.join(tasks)}): {', '.join(ids)}"
            for (name, tasks), ids in sequences.items()
        )
        raise ClbenchError(f"the runs of one plot must share a sequence; got {listing}")
    [(_, tasks)] = sequences
    return list(tasks)


def _probes(runs: Sequence[Results]) -> list[str]:
    """'name (metric)' of the probes all runs share; a ClbenchError if any has none or others."""
    found: dict[tuple[str, ...], list[str]] = {}
    for run in runs:
        if run.probes is None:
            raise ClbenchError(f"run {run.run_id} has no probe results; run it with --probes")
        found.setdefault(tuple(run.probes.labels()), []).append(run.run_id)
    if len(found) > 1:
        listing = "; ".join(f"{', '.join(k)}: {', '.join(ids)}" for k, ids in found.items())
        raise ClbenchError(f"the runs of one plot must share their probes; got {listing}")
    return list(next(iter(found)))


def _by_method(runs: Sequence[Results]) -> dict[str, list[Results]]:
    """Runs by method, each group sorted by run id. Runs of one method that `clbench report`
    would not average (other test data, budget, model or hyper-parameters) form groups of
    their own, `method [1]`, `method [2]` or `method (setting=value)`, as in its tables; the
    variants of a method in the order of their labels."""
    labelled, _ = comparable_groups(runs_frame(runs))
    groups: dict[str, list[Results]] = {}
    for run, label in zip(runs, labelled["row"], strict=True):
        groups.setdefault(label, []).append(run)
    methods = list(dict.fromkeys(run.method.name for run in runs))  # first appearance
    order = sorted(groups, key=lambda name: (methods.index(groups[name][0].method.name), name))
    return {name: sorted(groups[name], key=lambda r: r.run_id) for name in order}


def _matrix(run: Results) -> np.ndarray:
    return np.array(run.matrix, dtype=float)  # null -> NaN; the shape is the schema's


def _shown(run: Results) -> np.ndarray:
    """The matrix in the units it is shown in: percent, or a loss's own unit (bits per byte)."""
    factors = [score_unit(task.metric)[0] for task in run.sequence.tasks]
    return _matrix(run) * np.array(factors)


def _score_label(runs: Sequence[Results]) -> str:
    """The axis label of task scores: "score (%)", or with the units of loss-based tasks."""
    units = {score_unit(task.metric)[1] for run in runs for task in run.sequence.tasks}
    lower = sorted(units - {"%"})
    return "score (%)" if not lower else f"score ({', '.join(['%'] * ('%' in units) + lower)} ↓)"


def _curve(run: Results, key: str, n_tasks: int) -> np.ndarray:
    values = (run.curves or {}).get(key)
    if values is None:
        raise ClbenchError(f"run {run.run_id}: results have no curves.{key}")
    if len(values) != n_tasks:
        raise ClbenchError(
            f"run {run.run_id}: curves.{key} has {len(values)} values, expected {n_tasks}"
        )
    return np.array(values, dtype=float)


def _count(group: list[Results]) -> str:
    return "1 run" if len(group) == 1 else f"n={len(group)}"


def _describe(group: list[Results]) -> str:
    """The model and which runs: 'model, seed 3' or 'model, mean of 3 runs'."""
    models = ", ".join(dict.fromkeys(run.model.name for run in group))
    if len(group) == 1:
        return f"{models}, seed {group[0].seed}"
    return f"{models}, mean of {len(group)} runs"


# ---- layout ----------------------------------------------------------------------------------


def _inches(width: str) -> float:
    if width not in WIDTHS:
        raise unknown_name("figure width", width, WIDTHS)
    return WIDTHS[width]


def _look(i: int) -> tuple[str, str]:
    """Colour and dash of the i-th line: 8 colours, then the colours again with a new dash."""
    return PALETTE[i % len(PALETTE)], DASHES[i // len(PALETTE) % len(DASHES)]


def _panels(
    count: int, width: str, legend_entries: list[str], columns: int = 0, height: float = 1.6
) -> tuple[Figure, list[Axes]]:
    """A figure of `count` panels that share axes, with room below them for a legend."""
    inches = _inches(width)
    columns = columns or (1 if width == "single" else min(count, 2))
    rows = math.ceil(count / columns)
    legend_rows = math.ceil(len(legend_entries) / _legend_columns(inches, legend_entries))
    fig = Figure(figsize=(inches, rows * height + 0.25 + legend_rows * 0.15), layout="constrained")
    grid = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in grid[count:]:
        ax.set_visible(False)
    for ax in grid[:count]:
        ax.grid(axis="y", color="0.9", linewidth=0.5)
        ax.set_axisbelow(True)
    return fig, list(grid[:count])


def _legend_columns(inches: float, entries: list[str]) -> int:
    entry_pt = CHAR_PT * max(map(len, entries)) + 30  # the text, its line sample and a gap
    return max(1, min(len(entries), int(inches * 72 // entry_pt)))


def _legend(fig: Figure, ax: Axes, title: str) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        title=title,
        ncols=_legend_columns(fig.get_figwidth(), labels),
    )


def _label(panels: list[Axes], xlabel: str, ylabel: str) -> None:
    """Axis labels on the outer panels only (the panels share their axes)."""
    for i, ax in enumerate(panels):
        columns = ax.get_subplotspec().get_gridspec().ncols
        if i + columns >= len(panels):  # no panel below it
            ax.set_xlabel(xlabel)
            ax.xaxis.set_tick_params(labelbottom=True)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)


def _ticks(x: np.ndarray) -> np.ndarray:
    return x if len(x) <= 11 else x[:: math.ceil(len(x) / 11)]  # keep the labels apart


def _isolated(values: np.ndarray) -> np.ndarray:
    """Where a value has missing neighbours on both sides, so no line segment shows it."""
    gap = np.pad(np.isnan(values), 1, constant_values=True)
    return ~gap[1:-1] & gap[:-2] & gap[2:]


def _band(ax: Axes, x: np.ndarray, low: np.ndarray, high: np.ndarray, color: str) -> None:
    ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
