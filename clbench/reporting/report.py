"""Tables from results files, as Markdown, LaTeX (booktabs) or CSV.

One run: `report` prints its matrix and metrics. Several runs: `load_runs` reads them into one
frame (a row per run), `comparable_groups` decides which runs may be averaged together,
`aggregate` gives mean, std and a 95% CI per group, `significance` tests each method against a
baseline method, and `tables` renders all of it with notes on what was kept apart and why.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import numbers
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from clbench.errors import ClbenchError, unknown_name
from clbench.metrics import METRIC_KEYS, METRIC_NAMES
from clbench.results.io import load_results_file

FORMATS = ("md", "latex", "csv")
# The six matrix metrics, then general forgetting (mean over probes), for runs with probes.
REPORT_KEYS = (*METRIC_KEYS, "gf")
LOWER_IS_BETTER = frozenset({"fgt", "gf"})
CONFIDENCE = 0.95
BOOTSTRAP_MIN_N = 10  # below this many runs a Student t interval, from it on a bootstrap
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
WILCOXON_MIN_N = 6  # fewer pairs cannot reach p < 0.05 with the signed-rank test
ALPHA = 0.05
NO_SPREAD = 1e-9  # a spread this small is rounding noise of equal values
NA = "n/a"

# What must be equal for runs of one method to be averaged together, besides the test data
# (compared as the set of task fingerprints when orders are averaged: each order lists the same
# tasks in another order). Budget and hyper-parameters are canonical JSON, compared key by key.
COMPARED = ("budget", "model_source", "model_revision", "peft", "hyperparameters")
JSON_COLUMNS = frozenset({"budget", "hyperparameters"})
ROW_KEYS = ["table_sequence", "model", "row"]
SUMMARY_COLUMNS = ["sequence", "model", "method", "row", "metric", "n", "mean", "std"]
SUMMARY_COLUMNS += ["ci_low", "ci_high", "ci_method"]
TEST_COLUMNS = ["sequence", "model", "method", "row", "baseline", "metric", "test"]
TEST_COLUMNS += ["n_method", "n_baseline", "mean_diff", "statistic", "p", "p_holm", "significant"]
PERCENT_COLUMNS = ("mean", "std", "ci_low", "ci_high", "mean_diff")
TEST_NAMES = {
    "wilcoxon": "Wilcoxon signed-rank (paired, n >= 6)",
    "paired t": "paired t-test (paired, n < 6)",
    "welch t": "Welch's t-test (unpaired)",
}


# ---- one run ----------------------------------------------------------------------------------


def matrix_frame(results: dict[str, Any]) -> pd.DataFrame:
    """The (T+1) x T matrix in percent, rows named after the stage."""
    tasks = [t["name"] for t in results["sequence"]["tasks"]]
    index = ["0: before training"] + [f"{k}: after {name}" for k, name in enumerate(tasks, 1)]
    return pd.DataFrame(results["matrix"], index=index, columns=tasks, dtype=float) * 100


def metrics_frame(runs: list[dict[str, Any]], metrics: Sequence[str] = METRIC_KEYS) -> pd.DataFrame:
    """One row per run, one column per metric, in percent."""
    rows = {
        r["run_id"]: {METRIC_NAMES[k] + f" ({k})": run_metric(r, k) for k in metrics} for r in runs
    }
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float) * 100


def run_metric(results: dict[str, Any], key: str) -> float | None:
    """A metric of results.json; "gf" is the mean general forgetting over its probes."""
    if key != "gf":
        return results["metrics"].get(key)
    probes = results.get("probes")
    drops = probes.get("general_forgetting") if isinstance(probes, dict) else None
    if not isinstance(drops, list):
        return None
    drops = [d for d in drops if d is not None]
    if not all(isinstance(d, numbers.Real) and not isinstance(d, bool) for d in drops):
        raise ClbenchError(f"field 'probes.general_forgetting' is {drops!r}; expected numbers")
    return sum(drops) / len(drops) if drops else None


def probe_frame(results: dict[str, Any]) -> pd.DataFrame:
    """The (T+1) x P probe matrix and each probe's general forgetting, in percent."""
    probes = results["probes"]
    matrix = matrix_frame(results)
    columns = [f"{n} ({m})" for n, m in zip(probes["names"], probes["metrics"], strict=True)]
    frame = pd.DataFrame(probes["matrix"], index=matrix.index, columns=columns, dtype=float)
    frame.loc["general forgetting (row 0 - last)"] = [
        math.nan if d is None else d for d in probes["general_forgetting"]
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
    runs: list[dict[str, Any]],
    fmt: str = "md",
    metrics: Sequence[str] = METRIC_KEYS,
    decimals: int = 1,
) -> str:
    """Each run's matrix, then one table of every run's metrics (percent)."""
    _check_decimals(decimals)
    comment = {"md": "### ", "latex": "% ", "csv": "# "}[fmt]
    blank = "\n" if fmt == "md" else ""
    parts = []
    for results in runs:
        title = (
            f"{results['run_id']}: {results['sequence']['name']}, {results['method']['name']}, "
            f"{results['model']['name']}, seed {results['seed']}"
        )
        parts.append(f"{comment}{title}\n{blank}{render(matrix_frame(results), fmt, decimals)}")
        if results.get("probes"):
            probes = render(probe_frame(results), fmt, decimals)
            parts.append(f"{comment}general-ability probes (%)\n{blank}{probes}")
    metrics_table = render(metrics_frame(runs, metrics), fmt, decimals)
    parts.append(f"{comment}metrics (%)\n{blank}{metrics_table}")
    return "\n\n".join(parts) + "\n"


def _check_decimals(decimals: int) -> None:
    if decimals < 0:
        raise ClbenchError(f"--decimals must be >= 0, got {decimals}")


# ---- loading runs -----------------------------------------------------------------------------


def results_paths(paths_or_globs: Iterable[str | Path]) -> list[Path]:
    """The results files named: a results file, a run folder, a folder of runs, or a glob."""
    found: dict[Path, Path] = {}  # resolved -> as given, so a file named twice counts once
    for item in paths_or_globs:
        text = str(item)
        matches = sorted(glob.glob(text, recursive=True)) if _is_glob(text) else [text]
        if not matches:
            raise ClbenchError(f"no results.json matches {text!r}")
        for match in matches:
            for path in _results_files(Path(match)):
                found.setdefault(path.resolve(), path)
    if not found:
        raise ClbenchError("no runs given")
    return list(found.values())


def _is_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def _results_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.rglob("results.json")) if path.is_dir() else []
    if not files:
        raise ClbenchError(
            f"no results.json at or under {path} (is the run finished? results files under "
            "other names are read when named, or by a glob such as 'DIR/*.json')"
        )
    return files


def load_runs(paths_or_globs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: its metrics (fractions, as in results.json) and what it was run with.

    Columns: run_id, path, sequence, sequence_group and order (`standard-cl-order2` is group
    `standard-cl`, order 2; other sequences have no order), method, model, model_source,
    model_revision, peft, seed, budget and hyperparameters (canonical JSON), uses_task_id,
    extra_memory, test_data and test_data_set (hashes of the test fingerprints in order and as
    a set), comparability_key (equal for runs that may be averaged within one sequence), and
    one column per metric.
    """
    rows = [
        run_row(results, path)
        for path in results_paths(paths_or_globs)
        for results in load_results_file(path)
    ]
    frame = pd.DataFrame(rows)
    frame["order"] = frame["order"].astype("Int64")
    copies = frame[frame["created_at"].notna()].duplicated(["run_id", "created_at"], keep=False)
    if copies.any():
        paths = ", ".join(frame.loc[copies[copies].index, "path"])
        raise ClbenchError(f"the same run is given twice (same run_id and created_at): {paths}")
    return frame


def run_row(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """One row of `load_runs` for one results dict read from `path`."""

    def need(*keys: str | int) -> Any:
        value: Any = results
        for depth, key in enumerate(keys, 1):
            inside = isinstance(value, dict) or (isinstance(key, int) and isinstance(value, list))
            if not inside or (isinstance(value, dict) and key not in value):
                raise ClbenchError(f"{path}: missing field {'.'.join(map(str, keys[:depth]))!r}")
            value = value[key]
        return value

    sequence = str(need("sequence", "name"))
    named = re.fullmatch(r"(.+)-order(\d+)", sequence)
    tasks = need("sequence", "tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ClbenchError(f"{path}: field 'sequence.tasks' must be a non-empty list")
    fingerprints = [str(need("sequence", "tasks", i, "fingerprint")) for i in range(len(tasks))]
    seed = need("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ClbenchError(f"{path}: field 'seed' is {seed!r}; expected an integer")
    method_name, model_name = str(need("method", "name")), str(need("model", "name"))
    model, method, budget = need("model"), need("method"), need("budget")
    hyperparameters = method.get("hyperparameters", {})
    for name, value in [("budget", budget), ("method.hyperparameters", hyperparameters)]:
        if not isinstance(value, dict):  # compared key by key
            raise ClbenchError(f"{path}: field {name!r} is {value!r}; expected an object")
    row = {
        "run_id": str(need("run_id")),
        "path": str(path),
        "created_at": results.get("created_at"),
        "sequence": sequence,
        "sequence_group": named.group(1) if named else sequence,
        "order": int(named.group(2)) if named else None,
        "method": method_name,
        "model": model_name,
        "model_source": _text(model.get("source")),
        "model_revision": _text(model.get("revision")),
        "peft": _text(model.get("peft")),
        "seed": seed,
        "budget": _canonical(budget),
        "hyperparameters": _canonical(hyperparameters),
        "uses_task_id": method.get("uses_task_id"),
        "extra_memory": method.get("extra_memory"),
        "test_data": _digest(fingerprints),
        "test_data_set": _digest(sorted(set(fingerprints))),
    }
    row["comparability_key"] = _digest(
        [row[key] for key in ("sequence", "test_data", "model", "method", *COMPARED)]
    )
    metrics = need("metrics")
    for key in METRIC_KEYS:
        row[key] = _metric(metrics.get(key), f"{path}: field 'metrics.{key}'")
    row["gf"] = _metric(run_metric(results, "gf"), f"{path}: field 'probes.general_forgetting'")
    return row


def _text(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else _canonical(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:12]


def _metric(value: Any, where: str) -> float:
    if value is None:  # JSON null: the metric is undefined for this run
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ClbenchError(f"{where} is {value!r}; expected a number or null")
    return float(value)


def parse_metrics(text: str) -> tuple[str, ...]:
    """`aa,bwt` -> ("aa", "bwt"), every name checked."""
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    if not names:
        raise ClbenchError(f"--metrics {text!r}: give at least one of {', '.join(REPORT_KEYS)}")
    for name in names:
        if name not in REPORT_KEYS:
            raise unknown_name("metric", name, REPORT_KEYS)
    return names


# ---- which runs may be averaged ---------------------------------------------------------------


def comparable_groups(
    frame: pd.DataFrame, average_orders: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Label each run with the table row it is averaged in; notes say what was kept apart, why.

    A row is one sequence (or, with `average_orders`, one sequence group), model name and
    method. Runs of a row that differ in test data, budget, model source/revision/peft or method
    hyper-parameters are split into rows `method [1]`, `method [2]`, ... (the biggest first).
    Adds the columns `table_sequence`, `row` and `variant` (1, 2, ...).
    """
    frame = frame.copy()
    frame["table_sequence"] = frame["sequence_group" if average_orders else "sequence"]
    frame["row"] = frame["method"]
    frame["variant"] = 1
    compared = [_data_column(average_orders), *COMPARED]
    notes = []
    for (sequence, model, method), runs in frame.groupby(
        ["table_sequence", "model", "method"], sort=True
    ):
        # the biggest variant first: [1] is the main one whatever the runs are named
        parts = sorted(
            (part for _, part in runs.groupby(compared, sort=False)), key=lambda p: -len(p)
        )
        if len(parts) == 1:
            continue
        labels = [f"{method} [{i}]" for i in range(1, len(parts) + 1)]
        for variant, (label, part) in enumerate(zip(labels, parts, strict=True), 1):
            frame.loc[part.index, ["row", "variant"]] = [label, variant]
        members = "; ".join(
            f"{label} = {', '.join(part['run_id'])}"
            for label, part in zip(labels, parts, strict=True)
        )
        firsts = {label: part.iloc[0] for label, part in zip(labels, parts, strict=True)}
        notes.append(
            f"not comparable, kept apart: {method} on {sequence} with {model}: {members}; "
            f"they differ in {'; '.join(_differences(firsts, compared))}"
        )
    return frame, notes + _block_notes(frame, average_orders)


def _data_column(average_orders: bool) -> str:
    return "test_data_set" if average_orders else "test_data"


def _block_notes(frame: pd.DataFrame, average_orders: bool) -> list[str]:
    """Methods of one table that were run on different test data, budgets or task orders
    (compared on each method's main variant: the others have their own note)."""
    columns = [_data_column(average_orders), "budget"] + (["orders"] if average_orders else [])
    notes = []
    main = frame[frame["variant"] == 1]
    for (sequence, model), block in main.groupby(["table_sequence", "model"], sort=True):
        rows = {}
        for label, runs in block.groupby("row", sort=True):
            rows[label] = {**runs.iloc[0], "orders": _orders(runs["order"])}
        differences = _differences(rows, columns) if len(rows) > 1 else []
        if differences:
            notes.append(
                f"rows of {sequence} with {model} differ in {'; '.join(differences)}: "
                "their comparison is not like for like"
            )
    return notes


def _orders(orders: pd.Series) -> str:
    return ", ".join(map(str, sorted(orders.dropna().unique()))) or "none"


def _differences(rows: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """`field: value (labels); value (labels)` for each field whose value differs between rows."""
    found = []
    for column in columns:
        values = {label: row[column] for label, row in rows.items()}
        if column in JSON_COLUMNS:
            dicts = {label: json.loads(value) for label, value in values.items()}
            keys = sorted(set().union(*dicts.values()))
            fields = {f"{column}.{key}": {k: d.get(key) for k, d in dicts.items()} for key in keys}
        else:
            fields = {column: values}
        for name, by_label in fields.items():
            labels_of: dict[str, list[str]] = {}
            for label, value in by_label.items():
                labels_of.setdefault(_shown(value), []).append(label)
            if len(labels_of) > 1:
                shown = "; ".join(f"{v} ({', '.join(labels)})" for v, labels in labels_of.items())
                found.append(f"{name}: {shown}")
    return found


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)


# ---- statistics -------------------------------------------------------------------------------


def confidence_interval(values: Sequence[float]) -> tuple[float, float, str]:
    """95% CI of the mean and how it was made: "t" (n < 10), "bootstrap" (n >= 10), or "n/a".

    The bootstrap is a percentile bootstrap over runs with a fixed seed, so a report is
    reproducible. Runs that all scored the same give a zero-width interval (scipy gives NaN).
    """
    x = np.sort(np.asarray(values, dtype=float))  # the same CI in whatever order runs are read
    if len(x) < 2:
        return math.nan, math.nan, NA
    kind = "t" if len(x) < BOOTSTRAP_MIN_N else "bootstrap"
    if np.all(x == x[0]):
        return float(x[0]), float(x[0]), kind
    if kind == "t":
        low, high = stats.t.interval(CONFIDENCE, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        return float(low), float(high), kind
    result = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high), kind


def aggregate(
    frame: pd.DataFrame, metrics: Sequence[str] = METRIC_KEYS, average_orders: bool = False
) -> pd.DataFrame:
    """Per table row and metric: n, mean, std (ddof=1), a 95% CI and `ci_method`.

    Long format, in fractions like results.json; a run whose metric is null does not count in
    that metric's n. n = 1 gives NaN std and CI.
    """
    return _aggregate(comparable_groups(frame, average_orders)[0], metrics)


def _aggregate(grouped: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    records = []
    for (sequence, model, row), runs in grouped.groupby(ROW_KEYS, sort=True):
        for metric in metrics:
            values = runs[metric].dropna()
            low, high, kind = confidence_interval(values)
            records.append(
                {
                    "sequence": sequence,
                    "model": model,
                    "method": runs["method"].iloc[0],
                    "row": row,
                    "metric": metric,
                    "n": len(values),
                    "mean": values.mean(),
                    "std": values.std(ddof=1),
                    "ci_low": low,
                    "ci_high": high,
                    "ci_method": kind,
                }
            )
    return pd.DataFrame(records, columns=SUMMARY_COLUMNS)


def two_sample_test(
    x: Sequence[float], y: Sequence[float], paired: bool
) -> tuple[str, float, float]:
    """(test, statistic, p), two-sided: Wilcoxon signed-rank for n >= 6 pairs, a paired t-test
    for fewer, Welch's t-test when unpaired; ("n/a", NaN, NaN) with fewer than 2 runs a side."""
    if min(len(x), len(y)) < 2:
        return NA, math.nan, math.nan
    # t is a difference over its spread: with none (differences equal in every pair, as
    # scores on small test sets often are, to rounding) it is x / 0, not evidence.
    if paired and len(x) < WILCOXON_MIN_N and np.ptp(np.subtract(x, y)) <= NO_SPREAD:
        return "paired t", math.nan, math.nan
    if not paired and max(np.ptp(x), np.ptp(y)) <= NO_SPREAD:
        return "welch t", math.nan, math.nan
    with warnings.catch_warnings():
        # Identical runs make scipy warn and answer NaN (or p = 1): a valid, if dull, result.
        warnings.simplefilter("ignore", RuntimeWarning)
        if paired and len(x) >= WILCOXON_MIN_N:
            test, result = "wilcoxon", stats.wilcoxon(x, y)
        elif paired:
            test, result = "paired t", stats.ttest_rel(x, y)
        else:
            test, result = "welch t", stats.ttest_ind(x, y, equal_var=False)
    return test, float(result.statistic), float(result.pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values; NaN (no test) stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    steps = (len(order) - np.arange(len(order))) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def significance(
    frame: pd.DataFrame,
    baseline: str,
    metrics: Sequence[str] = METRIC_KEYS,
    average_orders: bool = False,
) -> pd.DataFrame:
    """Each method's row against the baseline method's row of the same table, per metric.

    Paired (same set of (seed, order) runs on both sides) or Welch, as `two_sample_test`; p is
    Holm-adjusted over every comparison of the result; `significant` means p_holm < 0.05.
    """
    return _significance(comparable_groups(frame, average_orders)[0], baseline, metrics)


def _significance(grouped: pd.DataFrame, baseline: str, metrics: Sequence[str]) -> pd.DataFrame:
    if baseline not in set(grouped["method"]):
        raise unknown_name("baseline method", baseline, set(grouped["method"]))
    records = []
    for (sequence, model), block in grouped.groupby(["table_sequence", "model"], sort=True):
        is_base = block["method"] == baseline
        for base_row, base_runs in block[is_base].groupby("row", sort=True):
            for row, runs in block[~is_base].groupby("row", sort=True):
                for metric in metrics:
                    records.append(
                        {
                            "sequence": sequence,
                            "model": model,
                            "method": runs["method"].iloc[0],
                            "row": row,
                            "baseline": base_row,
                            "metric": metric,
                            **_compare(runs, base_runs, metric),
                        }
                    )
    result = pd.DataFrame(records, columns=TEST_COLUMNS)
    result["p_holm"] = holm(result["p"])
    result["significant"] = result["p_holm"] < ALPHA
    return result


def _compare(runs: pd.DataFrame, base: pd.DataFrame, metric: str) -> dict[str, Any]:
    a, b = _by_run(runs, metric), _by_run(base, metric)
    paired = a.index.is_unique and b.index.is_unique and set(a.index) == set(b.index)
    b = b.loc[a.index] if paired else b
    test, statistic, p = two_sample_test(a.to_numpy(), b.to_numpy(), paired)
    return {
        "test": test,
        "n_method": len(a),
        "n_baseline": len(b),
        "mean_diff": a.mean() - b.mean(),
        "statistic": statistic,
        "p": p,
    }


def _by_run(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The metric's values indexed by (seed, order), the key that pairs runs of two methods."""
    values = runs[[metric, "seed", "order"]].dropna(subset=[metric])
    index = pd.MultiIndex.from_arrays([values["seed"], values["order"].fillna(0)])
    return pd.Series(values[metric].to_numpy(dtype=float), index=index)


# ---- tables -----------------------------------------------------------------------------------


def tables(
    frame: pd.DataFrame,
    fmt: str = "md",
    *,
    baseline: str | None = None,
    metrics: Sequence[str] = METRIC_KEYS,
    average_orders: bool = False,
    decimals: int = 1,
    interval: str = "std",
) -> str:
    """The comparison of many runs: a table per sequence and model, the tests, and notes.

    Cells are means in percent with the standard deviation (`interval="std"`) or the 95% CI
    (`"ci"`). CSV has every number instead: one line per table row and metric (and baseline).
    """
    if fmt not in FORMATS:
        raise ClbenchError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if interval not in ("std", "ci"):
        raise ClbenchError(f"unknown interval {interval!r}; expected 'std' or 'ci'")
    _check_decimals(decimals)
    grouped, cautions = comparable_groups(frame, average_orders)
    summary = _aggregate(grouped, metrics)
    tests = _significance(grouped, baseline, metrics) if baseline else None
    if tests is not None:
        cautions += _untested(grouped, baseline)
    legend = _legend(summary, tests, baseline, interval, average_orders, fmt)
    if fmt == "csv":
        return _csv(summary, tests, legend + cautions, decimals)
    tabled = _Tables(grouped, summary, tests, metrics, decimals, interval, baseline)
    if fmt == "latex":
        return tabled.latex(legend, cautions)
    return tabled.markdown(legend + cautions)


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
    lower = " and ".join(sorted(LOWER_IS_BETTER & set(summary["metric"])))
    direction = f"higher is better except for {lower}" if lower else "higher is better"
    legend = [CELLS[fmt if fmt == "csv" else interval] + f"; {direction}"]
    if fmt != "csv":
        legend[0] += "; best mean of a column in bold" + (
            ", second underlined" if fmt == "latex" else ""
        )
    if average_orders:
        legend.append("the task orders of a sequence are averaged: n counts seeds x orders")
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
CI_NAMES = {
    "t": f"Student t (n < {BOOTSTRAP_MIN_N})",
    "bootstrap": f"percentile bootstrap over runs, {BOOTSTRAP_RESAMPLES:,} resamples, seed "
    f"{BOOTSTRAP_SEED} (n >= {BOOTSTRAP_MIN_N})",
}


def _percent(value: float, decimals: int, missing: str = NA) -> str:
    if pd.isna(value):
        return missing
    return f"{round(value * 100, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.0"


def _p_value(p: float, missing: str = NA) -> str:
    return missing if pd.isna(p) else f"{p:.3g}"


def _ranks(means: pd.Series, metric: str, decimals: int) -> pd.Series:
    """1 for the best shown mean of a column, 2 for the second (ties share), by the metric's
    direction; a best needs 2 values to rank and a second 3, else 0."""
    shown = (means * 100).round(decimals)
    count = int(shown.notna().sum())
    ranks = shown.rank(method="dense", ascending=metric in LOWER_IS_BETTER).fillna(0).astype(int)
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
    ) -> None:
        self.grouped, self.tests, self.metrics = grouped, tests, metrics
        self.decimals, self.interval, self.baseline = decimals, interval, baseline
        self.sizes = grouped.groupby(ROW_KEYS).size()
        self.blocks = [block for _, block in summary.groupby(["sequence", "model"], sort=True)]
        significant = tests[tests["significant"]] if tests is not None else summary.iloc[:0]
        self.test_lines = _test_table(tests, decimals)
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
        shown = sequence if names == [sequence] else f"{sequence} (averaged: {', '.join(names)})"
        return f"{shown}, {model}"

    def cells(self, block: pd.DataFrame, latex: bool) -> pd.DataFrame:
        """Formatted cells: one line per row label, one column per metric, best/second marked."""
        labels = self.rows(block)
        columns = {}
        for metric in self.metrics:
            part = block[block["metric"] == metric].set_index("row").loc[labels]
            ranks = _ranks(part["mean"], metric, self.decimals)
            columns[metric] = [
                self.emphasis(self.cell(record, latex), rank, latex)
                for (_, record), rank in zip(part.iterrows(), ranks, strict=True)
            ]
        frame = pd.DataFrame(columns, index=labels)
        sequence, model = block["sequence"].iloc[0], block["model"].iloc[0]
        frame.insert(0, "n", [int(self.sizes[(sequence, model, label)]) for label in labels])
        return frame

    def cell(self, record: pd.Series, latex: bool) -> str:
        mean = _percent(record["mean"], self.decimals)
        if mean == NA:
            return NA
        if self.interval == "std":
            spread = _percent(record["std"], self.decimals)
            plus_minus = r"\pm" if latex else "±"
            text = mean if spread == NA else f"{mean} {plus_minus} {spread}"
        else:
            low, high = (_percent(record[key], self.decimals) for key in ("ci_low", "ci_high"))
            text = mean if low == NA else f"{mean} [{low}, {high}]"
        key = (record["sequence"], record["model"], record.name, record["metric"])
        if key in self.marked:
            text += r"^{\dagger}" if latex else " †"
        return f"${text}$" if latex else text

    @staticmethod
    def emphasis(text: str, rank: int, latex: bool) -> str:
        if latex and rank == 1:
            return rf"\textbf{{\boldmath{text}}}"  # \boldmath: the digits are in math mode
        if latex and rank == 2:
            return rf"\underline{{{text}}}"
        return f"**{text}**" if rank == 1 else text

    def header(self, metric: str, latex: bool) -> str:
        lower = metric in LOWER_IS_BETTER
        if latex:
            return metric.upper() + (r" $\downarrow$" if lower else r" $\uparrow$")
        return metric.upper() + (" ↓" if lower else " ↑")

    def markdown(self, notes: list[str]) -> str:
        parts = []
        for block in self.blocks:
            cells = self.cells(block, latex=False)
            cells.columns = ["n", *(self.header(m, latex=False) for m in self.metrics)]
            align = ["left", "right", *["center"] * len(self.metrics)]
            table = cells.rename_axis("method").to_markdown(colalign=align)
            parts.append(f"### {self.title(block)}\n\n{table}")
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
            lines = [
                r"\begin{table}[ht]",
                r"\centering",
                rf"\caption{{{_latex_text(self.title(block))}. {caption}}}",
                rf"\begin{{tabular}}{{lr{'c' * len(self.metrics)}}}",
                r"\toprule",
                " & ".join(header) + r" \\",
                r"\midrule",
            ]
            for label, line in cells.iterrows():
                lines.append(" & ".join([latex_escape(label), *map(str, line)]) + r" \\")
            lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
            parts.append("\n".join(lines))
        if len(self.test_lines):
            parts.append(_latex_tests(self.test_lines, self.baseline))
        return "\n\n".join(parts) + "\n"


def _test_table(tests: pd.DataFrame | None, decimals: int) -> pd.DataFrame:
    """The tests as text, one line per comparison of a metric that both sides have; sequence
    and model only when the report has several (the table titles name them otherwise)."""
    if tests is None:
        return pd.DataFrame()
    tests = tests[(tests["n_method"] > 0) & (tests["n_baseline"] > 0)]
    table = pd.DataFrame(
        {
            "sequence": tests["sequence"],
            "model": tests["model"],
            "method": tests["row"],
            "baseline": tests["baseline"],
            "metric": tests["metric"],
            "test": tests["test"],
            "n": tests["n_method"].astype(str) + " / " + tests["n_baseline"].astype(str),
            "diff (%)": tests["mean_diff"].map(lambda v: _percent(v, decimals)),
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
    "p": ("r", "$p$"),
    "p_holm": ("r", r"$p_\mathrm{Holm}$"),
    "significant": ("l", "Sig."),
}


def _latex_tests(table: pd.DataFrame, baseline: str | None) -> str:
    align, header = zip(*(LATEX_TEST_HEADERS[column] for column in table.columns), strict=True)
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{Tests against {latex_escape(baseline)}: $\Delta$ is the difference of the "
        r"means, $p$ two-sided and Holm-adjusted over all comparisons.}",
        rf"\begin{{tabular}}{{{''.join(align)}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for _, line in table.iterrows():
        cells = [latex_escape(line[column]) for column in table.columns]
        lines.append(" & ".join(cells).replace(" -", " $-$") + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _csv(summary: pd.DataFrame, tests: pd.DataFrame | None, notes: list[str], decimals: int) -> str:
    """Every number: percent with `decimals` decimals, p-values with 3 significant digits."""
    table = summary
    if tests is not None:
        keys = ["sequence", "model", "row", "metric"]
        table = table.merge(tests.drop(columns=["method"]), on=keys, how="left")
    table = table.copy()
    for column in ("n_method", "n_baseline"):  # the merge made them float (NaN for baselines)
        if column in table:
            table[column] = table[column].astype("Int64")
    for column in PERCENT_COLUMNS:
        if column in table:
            table[column] = table[column].map(lambda v: _percent(v, decimals, missing=""))
    for column in ("statistic", "p", "p_holm"):
        if column in table:
            table[column] = table[column].map(lambda v: _p_value(v, missing=""))
    return table.to_csv(index=False) + "".join(f"# {note}\n" for note in notes)
