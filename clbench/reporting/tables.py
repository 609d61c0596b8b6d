"""`clbench report` as text: one run's matrix, or tables over many runs, as Markdown, LaTeX
(booktabs) or CSV.

The runs come from `clbench.results.load`, their grouping from `clbench.results.compare` and
every number from `clbench.results.stats`; this module only lays them out. Names, order and
direction (↑/↓) of the metric columns come from the metric table, `clbench.metrics.METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from clbench.errors import ClbenchError, unknown_name
from clbench.metrics import METRICS, metrics_unit, score_unit
from clbench.results.compare import comparable_groups
from clbench.results.load import reported_metrics, runs_frame
from clbench.results.power import Criterion
from clbench.results.schema import Results, as_results
from clbench.results.stats import (
    ALPHA,
    BOOTSTRAP_MIN_N,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    NA,
    ROW_KEYS,
    aggregate_grouped,
    order_spread,
    significance_grouped,
)

FORMATS = ("md", "latex", "csv")
PERCENT_COLUMNS = ("mean", "std", "std_seeds", "std_orders", "ci_low", "ci_high", "mean_diff")
TEST_NAMES = {
    "wilcoxon": "Wilcoxon signed-rank (paired, n >= 6)",
    "paired t": "paired t-test (paired, n < 6)",
    "welch t": "Welch's t-test (unpaired)",
}


# ---- one run ----------------------------------------------------------------------------------


def matrix_frame(results: Results) -> pd.DataFrame:
    """The (T+1) x T matrix in percent, rows named after the stage; a loss-based task (bits per
    byte) in its own unit, named in its column with its direction."""
    index = ["0: before training"] + [f"{k}: after {t}" for k, t in enumerate(results.tasks, 1)]
    frame = pd.DataFrame(results.matrix, index=index, columns=results.tasks, dtype=float)
    columns = []
    for j, task in enumerate(results.sequence.tasks):
        factor, unit = score_unit(task.metric)
        frame.iloc[:, j] *= factor
        columns.append(task.name if unit == "%" else f"{task.name} ({unit} ↓)")
    frame.columns = columns
    return frame


def metrics_frame(runs: Sequence[Results], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run, one column per metric, in percent; a run whose tasks are all scored by
    a loss in that loss's unit (its metrics use the negated loss: docs/metrics.md#direction)."""
    rows = {
        run.run_id: {
            f"{METRICS[key].name} ({key})": run.metric(key) * _metrics_factor(run)
            for key in metrics
        }
        for run in runs
    }
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float)


def _metrics_factor(run: Results) -> float:
    return metrics_unit([task.metric for task in run.sequence.tasks])[0]


def probe_frame(results: Results) -> pd.DataFrame:
    """The (T+1) x P probe matrix and each probe's general forgetting, in percent."""
    probes = results.probes
    if probes is None:
        raise ClbenchError(f"{results.source}: no probe results; run it with --probes")
    index = matrix_frame(results).index
    frame = pd.DataFrame(probes.matrix, index=index, columns=probes.labels(), dtype=float)
    frame.loc["general forgetting (row 0 - last)"] = [
        math.nan if d is None else d for d in probes.general_forgetting or []
    ]
    return frame * 100


def render(frame: pd.DataFrame, fmt: str, decimals: int = 1) -> str:
    """A frame of numbers as a Markdown, LaTeX or CSV table; NaN shows as n/a."""
    if fmt == "md":
        # tabulate prints `missingval` for None only, so NaN cells become None first.
        cells = frame.astype(object).where(frame.notna(), None)
        return cells.to_markdown(floatfmt=f".{decimals}f", missingval=NA)
    if fmt == "latex":
        return frame.to_latex(float_format=f"%.{decimals}f", na_rep=NA, escape=True)
    return frame.to_csv(float_format=f"%.{decimals}f")


def report(
    runs: Sequence[Results | dict],
    fmt: str = "md",
    metrics: Sequence[str] | None = None,
    decimals: int = 1,
) -> str:
    """Each run's matrix, then one table of every run's metrics (percent); `metrics` defaults
    to `reported_metrics`. Runs may be `Results` or results.json content."""
    _check_decimals(decimals)
    runs = [as_results(run) for run in runs]
    metrics = reported_metrics(runs_frame(runs)) if metrics is None else metrics
    comment = {"md": "### ", "latex": "% ", "csv": "# "}[fmt]
    blank = "\n" if fmt == "md" else ""
    parts = []
    for run in runs:
        title = (
            f"{run.run_id}: {run.sequence.name}, {run.method.name}, {run.model.name}, "
            f"seed {run.seed}"
        )
        parts.append(f"{comment}{title}\n{blank}{render(matrix_frame(run), fmt, decimals)}")
        if run.diverged:  # the loss guard's flag (clbench.training.guard)
            stages = ", ".join(map(str, run.diverged))
            note = {"md": "> ", "latex": "% ", "csv": "# "}[fmt]
            parts.append(
                f"{note}diverged: the training loss of stage {stages} ended above "
                "twice its first value"
            )
        if run.probes is not None:
            probes = render(probe_frame(run), fmt, decimals)
            parts.append(f"{comment}general-ability probes (%)\n{blank}{probes}")
    metrics_table = render(metrics_frame(runs, metrics), fmt, decimals)
    parts.append(f"{comment}metrics ({_metrics_unit(runs)})\n{blank}{metrics_table}")
    parts.append(cost_table(runs, [run.run_id for run in runs], fmt))
    return "\n\n".join(parts) + "\n"


# ---- cost -------------------------------------------------------------------------------------

# results.json's cost key -> (column, unit factor, decimals); docs/results-schema.md#cost
COST_COLUMNS = {
    "train_tokens": ("train tokens", 1, 0),
    "optimizer_steps": ("steps", 1, 0),
    "generated_tokens": ("generated", 1, 0),
    "extra_forward_passes": ("extra fwd", 1, 0),
    "extra_backward_passes": ("extra bwd", 1, 0),
    "train_seconds": ("train s", 1, 1),
    "eval_seconds": ("eval s", 1, 1),
    "method_seconds": ("method s", 1, 1),
    "peak_memory_mb": ("peak MB", 1, 0),
    "method_state_bytes": ("state MB", 2**-20, 2),
    "method_parameter_bytes": ("added MB", 2**-20, 2),
}
COST_NOTE = (
    "cost: mean over the runs of each row; tokens without padding; extra fwd/bwd: forward and "
    "backward passes beyond plain training; state: what the method keeps, added: parameters "
    "it adds to the model (docs/results-schema.md#cost)"
)


def cost_frame(runs: Sequence[Results], labels: Sequence[str]) -> pd.DataFrame:
    """The mean cost of the runs of each label (in order of first appearance), one column per
    entry of COST_COLUMNS as text; n/a where no run of the label recorded it."""
    values = pd.DataFrame(
        [{key: getattr(run.cost, key, None) for key in COST_COLUMNS} for run in runs],
        index=list(labels),
        dtype=float,
    )
    means = values.groupby(level=0, sort=False).mean()
    return pd.DataFrame(
        {
            name: means[key].map(
                lambda v, f=factor, d=digits: NA if pd.isna(v) else f"{v * f:,.{d}f}"
            )
            for key, (name, factor, digits) in COST_COLUMNS.items()
        },
        index=means.index,
    )


def cost_table(runs: Sequence[Results], labels: Sequence[str], fmt: str, axis: str = "run") -> str:
    """The cost of the runs grouped by `labels` (a run's id, or its table row: `axis`
    "method"), with its note."""
    comment = {"md": "### ", "latex": "% ", "csv": "# "}[fmt]
    blank = "\n" if fmt == "md" else ""
    frame = cost_frame(runs, labels).rename_axis(axis)
    align = ["left", *["right"] * len(COST_COLUMNS)]
    # Cells are text already: tabulate must not read "10.00" as a number and reformat it.
    table = (
        frame.to_markdown(disable_numparse=True, colalign=align)
        if fmt == "md"
        else render(frame, fmt)
    )
    return f"{comment}cost\n{blank}{table}\n{blank}{'' if fmt == 'md' else comment}{COST_NOTE}"


def examples(runs: Sequence[Results], count: int) -> str:
    """For each run, the first `count` (prediction, gold) pairs of every task after the last
    stage, from its logged predictions; ✗ marks a prediction that is not a perfect match (its
    own score below 1), ✓ one that is."""
    from clbench.evaluation.predictions import read, verified
    from clbench.leaderboard.submission import predictions_folder

    if count < 1:
        raise ClbenchError(f"--examples must be >= 1, got {count}")
    parts = []
    for run in runs:
        if run.predictions is None:
            raise ClbenchError(
                f"{run.source}: no predictions kept (made with --no-predictions, by a clbench "
                "that did not keep them, or submitted without them)"
            )
        folder = predictions_folder(run)
        last = len(run.predictions.files) - 1
        parts.append(f"### examples of {run.run_id} after stage {last} (✗: wrong)")
        for cell in run.predictions.files[last]:
            lines = read(verified(folder, cell.path, cell.sha256))
            wrong = sum(line["score"] < 1 for line in lines)
            parts.append(f"{cell.task}: {wrong} of {len(lines)} wrong")
            for line in lines[:count]:
                mark = "✗" if line["score"] < 1 else "✓"
                shown = line.get("option", line["prediction"])
                gold = line.get("gold_option", line["gold"])
                parts.append(f"  {mark} #{line['index']}: {shown!r}  gold {gold!r}")
    return "\n".join(parts) + "\n"


def _metrics_unit(runs: Sequence[Results]) -> str:
    """The unit of `metrics_frame`: percent, unless a run is scored by losses only."""
    units = {metrics_unit([task.metric for task in run.sequence.tasks])[1] for run in runs}
    if units == {"%"}:
        return "%"
    return "%; runs of loss-based tasks: " + ", ".join(sorted(units - {"%"})) + ", negated"


def _check_decimals(decimals: int) -> None:
    if decimals < 0:
        raise ClbenchError(f"--decimals must be >= 0, got {decimals}")


def parse_metrics(text: str) -> tuple[str, ...]:
    """`aa,bwt` -> ("aa", "bwt"), every name checked against the metric table."""
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    if not names:
        raise ClbenchError(f"--metrics {text!r}: give at least one of {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise unknown_name("metric", name, METRICS)
    return names


# ---- a protocol's power -----------------------------------------------------------------------


def power_table(criteria: Sequence[Criterion], fmt: str = "md") -> str:
    """The power criteria (`clbench.results.power.check_power`): one line each with what was
    measured and PASS or FAIL, then a line naming those that fail."""
    frame = pd.DataFrame(
        {
            "criterion": [c.name for c in criteria],
            "requires": [c.requirement for c in criteria],
            "measured": [c.measured for c in criteria],
            "result": ["PASS" if c.passed else "FAIL" for c in criteria],
        }
    )
    failed = [c.name for c in criteria if not c.passed]
    verdict = f"FAIL: {'; '.join(failed)}" if failed else f"all {len(criteria)} criteria hold"
    if fmt == "md":
        return f"{frame.to_markdown(index=False)}\n\n{verdict}\n"
    if fmt == "latex":
        rows = [[_latex_text(cell) for cell in line] for line in frame.itertuples(index=False)]
        header = ["Criterion", "Requires", "Measured", "Result"]
        table = _booktabs(_latex_text(f"Power criteria. {verdict}."), "llll", header, rows)
        return table + "\n"
    return frame.to_csv(index=False) + f"# {verdict}\n"


# ---- published claims -------------------------------------------------------------------------


CLAIMS_NOTE = (
    "Each claim is its own Holm family; a strict claim (>, <) holds when its sign is shown with "
    "p_holm < 0.05, a non-strict one (>=, <=) unless the opposite sign is (docs/reports.md#claims)."
)


def claims_table(checked: pd.DataFrame, fmt: str = "md", decimals: int = 1) -> str:
    """`clbench.results.claims.check_claims`'s lines: the means and their difference in percent
    points (or in the loss unit of a loss-scored table, named after it), the test, p, p_holm
    and the verdict; CSV keeps every number as a fraction (or a loss)."""
    _check_decimals(decimals)
    if fmt == "csv":
        return checked.to_csv(index=False) + f"# {CLAIMS_NOTE}\n"
    means, factors = (
        zip(checked["mean_left"], checked["mean_right"], strict=True),
        checked["unit_factor"],
    )
    units = checked["unit"].map(lambda unit: "" if unit == "%" else f", in {unit}")
    frame = pd.DataFrame(
        {
            "claim": checked["claim"],
            "table": checked["sequence"] + ", " + checked["model"] + units,
            "compared": checked["left"] + " vs " + checked["right"],
            "metric": checked["metric"].map(lambda key: METRICS[key].short),
            "means": [
                f"{_scaled(a, decimals, factor=f)} vs {_scaled(b, decimals, factor=f)}"
                for (a, b), f in zip(means, factors, strict=True)
            ],
            "diff": [
                _scaled(v, decimals, factor=f)
                for v, f in zip(checked["mean_diff"], factors, strict=True)
            ],
            "test": [
                f"{test}, n = {a}/{b}"
                for test, a, b in checked[["test", "n_left", "n_right"]].itertuples(index=False)
            ],
            "p": checked["p"].map(_p_value),
            "p_holm": checked["p_holm"].map(_p_value),
            "verdict": checked["verdict"],
        }
    )
    if fmt == "md":
        return f"{frame.to_markdown(index=False, disable_numparse=True)}\n\n{CLAIMS_NOTE}\n"
    rows = [[_latex_text(str(cell)) for cell in line] for line in frame.itertuples(index=False)]
    header = [_latex_text(name) for name in frame.columns]
    return _booktabs(_latex_text(f"Published claims. {CLAIMS_NOTE}"), "l" * 10, header, rows) + "\n"


# ---- tables -----------------------------------------------------------------------------------


def tables(
    frame: pd.DataFrame,
    fmt: str = "md",
    *,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    average_orders: bool = False,
    decimals: int = 1,
    interval: str = "std",
    results: Sequence[Results] | None = None,
) -> str:
    """The comparison of many runs: a table per sequence and model, the tests, and notes;
    `metrics` defaults to `reported_metrics`. With `results` (the runs of `frame`, in its
    order), Markdown and LaTeX end with the cost of each row, means without statistics.

    Cells are means in percent with the standard deviation (`interval="std"`) or the 95% CI
    (`"ci"`). CSV has every number instead: one line per table row and metric (and baseline).
    """
    if fmt not in FORMATS:
        raise ClbenchError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if interval not in ("std", "ci"):
        raise ClbenchError(f"unknown interval {interval!r}; expected 'std' or 'ci'")
    _check_decimals(decimals)
    grouped, cautions = comparable_groups(frame, average_orders)
    metrics = reported_metrics(frame) if metrics is None else metrics
    summary = aggregate_grouped(grouped, metrics)
    spread = order_spread(grouped, metrics) if average_orders else None
    tests = significance_grouped(grouped, baseline, metrics) if baseline else None
    if tests is not None:
        cautions += _untested(grouped, baseline)
    units = _table_units(grouped)
    legend = _legend(summary, tests, baseline, interval, average_orders, fmt) + _loss_note(units)
    if fmt == "csv":
        return _csv(summary, spread, tests, legend + cautions, decimals, units)
    tabled = _Tables(grouped, summary, tests, metrics, decimals, interval, baseline, units, spread)
    text = tabled.latex(legend, cautions) if fmt == "latex" else tabled.markdown(legend + cautions)
    if results is None:
        return text
    blocks = grouped.groupby(["table_sequence", "model"], sort=True).groups.items()
    costs = [
        cost_table(
            [results[i] for i in index], list(grouped.loc[index, "row"]), fmt, "method"
        ).replace("cost", f"cost on {sequence}, {model}", 1)
        for (sequence, model), index in blocks
    ]
    return text + "\n" + "\n\n".join(costs) + "\n"


def _untested(grouped: pd.DataFrame, baseline: str) -> list[str]:
    has_baseline = (
        (grouped["method"] == baseline).groupby([grouped["table_sequence"], grouped["model"]]).any()
    )
    return [
        f"no tests on {sequence} with {model}: it has no {baseline} runs"
        for (sequence, model), found in has_baseline.items()
        if not found
    ]


def _legend(
    summary: pd.DataFrame,
    tests: pd.DataFrame | None,
    baseline: str | None,
    interval: str,
    average_orders: bool,
    fmt: str,
) -> list[str]:
    """What the cells hold, and which CI methods and tests made them."""
    shown = dict.fromkeys(summary["metric"])
    lower = " and ".join(key for key in shown if not METRICS[key].higher_is_better)
    direction = f"higher is better except for {lower}" if lower else "higher is better"
    legend = [CELLS[fmt if fmt == "csv" else interval] + f"; {direction}"]
    if fmt != "csv":
        legend[0] += "; best mean of a column in bold" + (
            ", second underlined" if fmt == "latex" else ""
        )
    if average_orders:
        legend.append("the task orders of a sequence are averaged: n counts seeds x orders")
        legend.append(SPREAD[fmt == "csv"])
    used = set(summary["ci_method"])
    ci = [text for kind, text in CI_NAMES.items() if kind in used]
    if ci:
        legend.append(f"95% CI of the mean: {', '.join(ci)}")
    if tests is not None:
        names = [text for kind, text in TEST_NAMES.items() if kind in set(tests["test"])]
        legend.append(
            f"tests against {baseline}: {', '.join(names) or 'none possible'}; "
            f"two-sided, p Holm-adjusted over {int(tests['p'].notna().sum())} comparisons; "
            f"† = p_holm < {ALPHA}"
        )
    return legend


CELLS = {
    "std": "mean ± std (ddof=1) over n runs, in percent",
    "ci": "mean [95% CI] over n runs, in percent",
    "csv": "mean, std (ddof=1), 95% CI and mean_diff in percent",
}
SPREAD_HEADING = "Spread (%): over seeds within an order (pooled) / over orders"
SPREAD = {
    False: "spread (under each table, in percent): the standard deviation over seeds within a "
    "task order, pooled over the orders / the standard deviation of the order means",
    True: "std_seeds: the standard deviation over seeds within a task order, pooled over the "
    "orders; std_orders: the standard deviation of the order means; n_orders: the orders",
}
CI_NAMES = {
    "t": f"Student t (n < {BOOTSTRAP_MIN_N})",
    "bootstrap": f"percentile bootstrap over runs, {BOOTSTRAP_RESAMPLES:,} resamples, seed "
    f"{BOOTSTRAP_SEED} (n >= {BOOTSTRAP_MIN_N})",
}


def _scaled(value: float, decimals: int, missing: str = NA, factor: float = 100.0) -> str:
    """`value` (a fraction, or a loss for `factor` 1) as shown, with `decimals` decimals."""
    if pd.isna(value):
        return missing
    return f"{round(value * factor, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.0"


def _table_units(grouped: pd.DataFrame) -> dict[tuple[str, str], tuple[float, str]]:
    """(factor, unit) of each table (sequence, model): percent, or the loss unit of sequences
    scored by one loss only (their metrics are of the negated loss: docs/metrics.md#direction)."""
    firsts = grouped.groupby(["table_sequence", "model"], sort=True)[["unit_factor", "unit"]]
    return {key: (float(row["unit_factor"]), row["unit"]) for key, row in firsts.first().iterrows()}


def _loss_note(units: dict[tuple[str, str], tuple[float, str]]) -> list[str]:
    """The legend line for tables in a loss unit instead of percent, if the report has any."""
    lossy = sorted({unit for _, unit in units.values()} - {"%"})
    if not lossy:
        return []
    return [
        f"tables titled with {' or '.join(lossy)} hold that unit instead of percent: their "
        "tasks are scored by a loss, and the metrics read it negated (docs/metrics.md#direction)"
    ]


def _p_value(p: float, missing: str = NA) -> str:
    return missing if pd.isna(p) else f"{p:.3g}"


def _ranks(means: pd.Series, metric: str, decimals: int, factor: float) -> pd.Series:
    """1 for the best shown mean of a column, 2 for the second (ties share), by the metric's
    direction; a best needs 2 values to rank and a second 3, else 0."""
    shown = (means * factor).round(decimals)
    count = int(shown.notna().sum())
    lower_is_better = not METRICS[metric].higher_is_better
    ranks = shown.rank(method="dense", ascending=lower_is_better).fillna(0).astype(int)
    return ranks.where((ranks == 1) & (count >= 2) | (ranks == 2) & (count >= 3), 0)


class _Tables:
    """Markdown and LaTeX tables: one per sequence and model, rows are methods."""

    def __init__(
        self,
        grouped: pd.DataFrame,
        summary: pd.DataFrame,
        tests: pd.DataFrame | None,
        metrics: Sequence[str],
        decimals: int,
        interval: str,
        baseline: str | None,
        units: dict[tuple[str, str], tuple[float, str]],
        spread: pd.DataFrame | None = None,
    ) -> None:
        self.grouped, self.tests, self.metrics, self.spread = grouped, tests, metrics, spread
        self.decimals, self.interval, self.baseline = decimals, interval, baseline
        self.sizes = grouped.groupby(ROW_KEYS).size()
        self.units = units  # (factor, unit) of each table: `_table_units`
        self.blocks = [block for _, block in summary.groupby(["sequence", "model"], sort=True)]
        significant = tests[tests["significant"]] if tests is not None else summary.iloc[:0]
        self.test_lines = _test_table(tests, decimals, self.units)
        self.marked = set(
            zip(*(significant[k] for k in ("sequence", "model", "row", "metric")), strict=True)
        )

    def rows(self, block: pd.DataFrame) -> list[str]:
        """Baseline rows first, then the others by name."""
        method_of = dict(zip(block["row"], block["method"], strict=True))
        return sorted(method_of, key=lambda label: (method_of[label] != self.baseline, label))

    def title(self, block: pd.DataFrame) -> str:
        sequence, model = block["sequence"].iloc[0], block["model"].iloc[0]
        runs = self.grouped[
            (self.grouped["table_sequence"] == sequence) & (self.grouped["model"] == model)
        ]
        names = sorted(set(runs["sequence"]))
        shown = sequence if len(names) == 1 else f"{sequence} (averaged: {', '.join(names)})"
        unit = self.units[(sequence, model)][1]
        return f"{shown}, {model}" + ("" if unit == "%" else f", in {unit}")

    def factor(self, sequence: str, model: str) -> float:
        return self.units[(sequence, model)][0]

    def cells(self, block: pd.DataFrame, latex: bool) -> pd.DataFrame:
        """Formatted cells: one line per row label, one column per metric, best/second marked."""
        labels = self.rows(block)
        factor = self.factor(block["sequence"].iloc[0], block["model"].iloc[0])
        columns = {}
        for metric in self.metrics:
            part = block[block["metric"] == metric].set_index("row").loc[labels]
            ranks = _ranks(part["mean"], metric, self.decimals, factor)
            columns[metric] = [
                self.emphasis(self.cell(record, latex), rank, latex)
                for (_, record), rank in zip(part.iterrows(), ranks, strict=True)
            ]
        frame = pd.DataFrame(columns, index=labels)
        sequence, model = block["sequence"].iloc[0], block["model"].iloc[0]
        frame.insert(0, "n", [int(self.sizes[(sequence, model, label)]) for label in labels])
        return frame

    def cell(self, record: pd.Series, latex: bool) -> str:
        factor = self.factor(record["sequence"], record["model"])
        mean = _scaled(record["mean"], self.decimals, factor=factor)
        if mean == NA:
            return NA
        if self.interval == "std":
            spread = _scaled(record["std"], self.decimals, factor=factor)
            plus_minus = r"\pm" if latex else "±"
            text = mean if spread == NA else f"{mean} {plus_minus} {spread}"
        else:
            low, high = (
                _scaled(record[key], self.decimals, factor=factor) for key in ("ci_low", "ci_high")
            )
            text = mean if low == NA else f"{mean} [{low}, {high}]"
        key = (record["sequence"], record["model"], record.name, record["metric"])
        if key in self.marked:
            text += r"^{\dagger}" if latex else " †"
        return f"${text}$" if latex else text

    def spread_cells(self, block: pd.DataFrame) -> pd.DataFrame:
        """`std over seeds / std over orders` per row label and metric, with the orders."""
        labels = self.rows(block)
        keys = (block["sequence"].iloc[0], block["model"].iloc[0])
        factor = self.factor(*keys)
        mine = self.spread[(self.spread["sequence"] == keys[0]) & (self.spread["model"] == keys[1])]
        columns = {"orders": mine.groupby("row")["n_orders"].max().loc[labels].tolist()}
        for metric in self.metrics:
            part = mine[mine["metric"] == metric].set_index("row").loc[labels]
            seeds, orders = (
                part[key].map(lambda v: _scaled(v, self.decimals, factor=factor))
                for key in ("std_seeds", "std_orders")
            )
            columns[metric] = [f"{a} / {b}" for a, b in zip(seeds, orders, strict=True)]
        return pd.DataFrame(columns, index=labels)

    @staticmethod
    def emphasis(text: str, rank: int, latex: bool) -> str:
        if latex and rank == 1:
            return rf"\textbf{{\boldmath{text}}}"  # \boldmath: the digits are in math mode
        if latex and rank == 2:
            return rf"\underline{{{text}}}"
        return f"**{text}**" if rank == 1 else text

    def header(self, key: str, latex: bool) -> str:
        metric = METRICS[key]
        if latex:
            return metric.short + (r" $\uparrow$" if metric.higher_is_better else r" $\downarrow$")
        return f"{metric.short} {metric.arrow}"

    def markdown(self, notes: list[str]) -> str:
        parts = []
        for block in self.blocks:
            cells = self.cells(block, latex=False)
            cells.columns = ["n", *(self.header(m, latex=False) for m in self.metrics)]
            align = ["left", "right", *["center"] * len(self.metrics)]
            table = cells.rename_axis("method").to_markdown(colalign=align)
            parts.append(f"### {self.title(block)}\n\n{table}")
            if self.spread is not None:
                spread = self.spread_cells(block)
                spread.columns = ["orders", *cells.columns[1:]]
                table = spread.rename_axis("method").to_markdown(colalign=align)
                parts.append(f"{SPREAD_HEADING}\n\n{table}")
        if len(self.test_lines):
            table = self.test_lines.to_markdown(index=False)
            parts.append(f"### Tests against {self.baseline}\n\n{table}")
        parts.append("Notes:\n\n" + "\n".join(f"- {note}" for note in notes))
        return "\n\n".join(parts) + "\n"

    def latex(self, legend: list[str], cautions: list[str]) -> str:
        # The legend goes into each caption; cautions stay comments for the author.
        parts = ["\n".join(f"% {caution}" for caution in cautions)] if cautions else []
        caption = _latex_text(" ".join(f"{note[0].upper()}{note[1:]}." for note in legend))
        for block in self.blocks:
            cells = self.cells(block, latex=True)
            header = ["Method", "$n$", *(self.header(m, latex=True) for m in self.metrics)]
            rows = [[latex_escape(label), *map(str, line)] for label, line in cells.iterrows()]
            title = f"{_latex_text(self.title(block))}. {caption}"
            parts.append(_booktabs(title, f"lr{'c' * len(self.metrics)}", header, rows))
            if self.spread is not None:
                spread = self.spread_cells(block)
                rows = [[latex_escape(label), *map(str, line)] for label, line in spread.iterrows()]
                title = (
                    f"{_latex_text(self.title(block))}: standard deviation over seeds "
                    "within a task order, pooled over the orders / over the order means."
                )
                header = ["Method", "Orders", *header[2:]]
                parts.append(_booktabs(title, f"lr{'c' * len(self.metrics)}", header, rows))
        if len(self.test_lines):
            parts.append(_latex_tests(self.test_lines, self.baseline))
        return "\n\n".join(parts) + "\n"


def _test_table(
    tests: pd.DataFrame | None, decimals: int, units: dict[tuple[str, str], tuple[float, str]]
) -> pd.DataFrame:
    """The tests as text, one line per comparison of a metric that both sides have; sequence
    and model only when the report has several (the table titles name them otherwise). The
    difference is in its table's unit ("diff (%)" when every table is in percent)."""
    if tests is None:
        return pd.DataFrame()
    tests = tests[(tests["n_method"] > 0) & (tests["n_baseline"] > 0)]
    factors = [units[key][0] for key in zip(tests["sequence"], tests["model"], strict=True)]
    diff = "diff (%)" if {unit for _, unit in units.values()} == {"%"} else "diff"
    table = pd.DataFrame(
        {
            "sequence": tests["sequence"],
            "model": tests["model"],
            "method": tests["row"],
            "baseline": tests["baseline"],
            "metric": tests["metric"],
            "test": tests["test"],
            "n": tests["n_method"].astype(str) + " / " + tests["n_baseline"].astype(str),
            diff: [
                _scaled(v, decimals, factor=f)
                for v, f in zip(tests["mean_diff"], factors, strict=True)
            ],
            "p": tests["p"].map(_p_value),
            "p_holm": tests["p_holm"].map(_p_value),
            "significant": tests["significant"].map({True: "yes", False: "no"}),
        }
    )
    return table.drop(columns=[c for c in ("sequence", "model") if table[c].nunique() == 1])


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: each special character escaped."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in str(text))


def _latex_text(text: str) -> str:
    """Escaped, with the signs of the notes in math mode (text-mode < and > print as ¡ and ¿)."""
    signs = {">=": r"$\geq$", "<": "$<$", ">": "$>$", "±": r"$\pm$", "†": r"$^\dagger$"}
    text = latex_escape(text)
    for sign, math_mode in signs.items():
        text = text.replace(sign, math_mode)
    return text


LATEX_TEST_HEADERS = {
    "sequence": ("l", "Sequence"),
    "model": ("l", "Model"),
    "method": ("l", "Method"),
    "baseline": ("l", "Baseline"),
    "metric": ("l", "Metric"),
    "test": ("l", "Test"),
    "n": ("c", "$n$"),
    "diff (%)": ("r", r"$\Delta$ (\%)"),
    "diff": ("r", r"$\Delta$"),
    "p": ("r", "$p$"),
    "p_holm": ("r", r"$p_\mathrm{Holm}$"),
    "significant": ("l", "Sig."),
}


def _latex_tests(table: pd.DataFrame, baseline: str | None) -> str:
    align, header = zip(*(LATEX_TEST_HEADERS[column] for column in table.columns), strict=True)
    caption = (
        rf"Tests against {latex_escape(baseline)}: $\Delta$ is the difference of the means, $p$ "
        "two-sided and Holm-adjusted over all comparisons."
    )
    rows = [
        [latex_escape(line[column]) for column in table.columns] for _, line in table.iterrows()
    ]
    return _booktabs(caption, "".join(align), list(header), rows, minus=True)


def _booktabs(
    caption: str, align: str, header: list[str], rows: list[list[str]], minus: bool = False
) -> str:
    """A `table` float with a booktabs `tabular`; `minus` sets " -" as a math minus."""
    lines = [" & ".join(row) for row in rows]
    if minus:
        lines = [line.replace(" -", " $-$") for line in lines]
    return "\n".join(
        [
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            " & ".join(header) + r" \\",
            r"\midrule",
            *(line + r" \\" for line in lines),
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def _csv(
    summary: pd.DataFrame,
    spread: pd.DataFrame | None,
    tests: pd.DataFrame | None,
    notes: list[str],
    decimals: int,
    units: dict[tuple[str, str], tuple[float, str]],
) -> str:
    """Every number: percent (or its table's loss unit, in the column `unit`) with `decimals`
    decimals, p-values with 3 significant digits."""
    table = summary
    if spread is not None:
        table = table.merge(spread, on=["sequence", "model", "row", "metric"], how="left")
    if tests is not None:
        keys = ["sequence", "model", "row", "metric"]
        table = table.merge(tests.drop(columns=["method"]), on=keys, how="left")
    table = table.copy()
    for column in ("n_method", "n_baseline"):  # the merge made them float (NaN for baselines)
        if column in table:
            table[column] = table[column].astype("Int64")
    keys = list(zip(table["sequence"], table["model"], strict=True))
    table.insert(table.columns.get_loc("metric") + 1, "unit", [units[key][1] for key in keys])
    for column in PERCENT_COLUMNS:
        if column in table:
            table[column] = [
                _scaled(v, decimals, missing="", factor=units[key][0])
                for v, key in zip(table[column], keys, strict=True)
            ]
    for column in ("statistic", "p", "p_holm"):
        if column in table:
            table[column] = table[column].map(lambda v: _p_value(v, missing=""))
    return table.to_csv(index=False) + "".join(f"# {note}\n" for note in notes)
