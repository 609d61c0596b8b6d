"""Statistics over runs: the 95% confidence interval of a mean (one function, used by the
tables and the figures alike), per-row aggregates, two-sample tests and Holm's correction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from clbench.errors import unknown_name
from clbench.results.compare import comparable_groups
from clbench.results.load import reported_metrics

CONFIDENCE = 0.95
BOOTSTRAP_MIN_N = 10  # below this many runs a Student t interval, from it on a bootstrap
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
WILCOXON_MIN_N = 6  # fewer pairs cannot reach p < 0.05 with the signed-rank test
ALPHA = 0.05
NO_SPREAD = 1e-9  # a spread this small is rounding noise of equal values
NA = "n/a"
ROW_KEYS = ["table_sequence", "model", "row"]
SUMMARY_COLUMNS = ["sequence", "model", "method", "row", "metric", "n", "mean", "std"]
SUMMARY_COLUMNS += ["ci_low", "ci_high", "ci_method"]
TEST_COLUMNS = ["sequence", "model", "method", "row", "baseline", "metric", "test"]
TEST_COLUMNS += ["n_method", "n_baseline", "mean_diff", "statistic", "p", "p_holm", "significant"]


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


def mean_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, CI low and CI high over the first axis of `values` (runs), each cell by
    `confidence_interval` with NaN left out; the bounds are NaN where fewer than 2 remain."""
    flat = values.reshape(len(values), -1)
    columns = [column[~np.isnan(column)] for column in flat.T]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no values is NaN
        mean = np.array([np.mean(column) for column in columns])
    bounds = np.array([confidence_interval(column)[:2] for column in columns]).reshape(-1, 2)
    shape = values.shape[1:]
    return mean.reshape(shape), bounds[:, 0].reshape(shape), bounds[:, 1].reshape(shape)


def aggregate(
    frame: pd.DataFrame, metrics: Sequence[str] | None = None, average_orders: bool = False
) -> pd.DataFrame:
    """Per table row and metric: n, mean, std (ddof=1), a 95% CI and `ci_method`.

    Long format, in fractions like results.json; a run whose metric is null does not count in
    that metric's n. n = 1 gives NaN std and CI. `metrics` defaults to `reported_metrics`.
    """
    grouped = comparable_groups(frame, average_orders)[0]
    metrics = reported_metrics(frame) if metrics is None else metrics
    return aggregate_grouped(grouped, metrics)


def aggregate_grouped(grouped: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """`aggregate` of runs that `comparable_groups` has labelled already."""
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


SPREAD_COLUMNS = ["sequence", "model", "row", "metric", "n_orders", "std_seeds", "std_orders"]


def order_spread(grouped: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per table row and metric of runs averaged over task orders, the spread over seeds apart
    from the spread over orders: `std_seeds`, the standard deviation over seeds within an order
    pooled over the orders (the root of the within-order variances, ddof=1, averaged with
    weights n_order - 1), and `std_orders`, the standard deviation (ddof=1) of the order means.
    NaN where no order has 2 runs, or fewer than 2 orders have runs."""
    records = []
    for (sequence, model, row), runs in grouped.groupby(ROW_KEYS, sort=True):
        for metric in metrics:
            values = runs[metric].dropna()
            by_order = values.groupby(runs.loc[values.index, "order"].fillna(0))
            dof = by_order.count() - 1
            squares = (by_order.var(ddof=1).fillna(0) * dof).sum()
            records.append(
                {
                    "sequence": sequence,
                    "model": model,
                    "row": row,
                    "metric": metric,
                    "n_orders": by_order.ngroups,
                    "std_seeds": math.sqrt(squares / dof.sum()) if dof.sum() > 0 else math.nan,
                    "std_orders": by_order.mean().std(ddof=1),
                }
            )
    return pd.DataFrame(records, columns=SPREAD_COLUMNS)


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
    metrics: Sequence[str] | None = None,
    average_orders: bool = False,
) -> pd.DataFrame:
    """Each method's row against the baseline method's row of the same table, per metric.

    Paired (same set of (seed, order) runs on both sides) or Welch, as `two_sample_test`; p is
    Holm-adjusted over every comparison of the result; `significant` means p_holm < 0.05.
    """
    grouped = comparable_groups(frame, average_orders)[0]
    return significance_grouped(
        grouped, baseline, reported_metrics(frame) if metrics is None else metrics
    )


def significance_grouped(
    grouped: pd.DataFrame, baseline: str, metrics: Sequence[str]
) -> pd.DataFrame:
    """`significance` of runs that `comparable_groups` has labelled already."""
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
                            **compare_runs(runs, base_runs, metric),
                        }
                    )
    result = pd.DataFrame(records, columns=TEST_COLUMNS)
    result["p_holm"] = holm(result["p"])
    result["significant"] = result["p_holm"] < ALPHA
    return result


def compare_runs(runs: pd.DataFrame, base: pd.DataFrame, metric: str) -> dict[str, Any]:
    """`two_sample_test` of the metric of `runs` against `base` (rows of `runs_frame`), paired
    by (seed, order) when both sides have the same set of runs."""
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
