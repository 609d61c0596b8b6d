"""Whether a protocol has power: the criteria a protocol's seq-ft, replay and joint runs must
meet for its results to tell methods apart (docs/protocols.md#checking-a-protocols-power).

Every number comes from `clbench.results.stats`, the functions `clbench report` uses: the
interval of seq-ft's BWT is its `confidence_interval`, and replay against seq-ft is its
`significance` test, Holm-adjusted over the one comparison that criterion makes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clbench.data.protocol import Protocol, load_protocol
from clbench.errors import ClbenchError
from clbench.metrics import higher_is_better
from clbench.results.compare import comparable_groups
from clbench.results.load import runs_frame
from clbench.results.schema import Results
from clbench.results.stats import ALPHA, confidence_interval, significance_grouped

LOWER, UPPER, JOINT = "seq-ft", "replay", "joint"  # the methods the criteria compare
MIN_LEARNED = 0.10  # own-stage score above zero-shot, as a fraction: 10 points
MIN_TEST_SIZE = 200  # one example is then at most 0.5 points of accuracy


@dataclass(frozen=True)
class Criterion:
    """One criterion: what must hold, what was measured (fractions, as in results.json, and
    as text in percent), and whether it holds."""

    name: str
    requirement: str
    numbers: dict[str, Any]
    measured: str
    passed: bool


def protocol_of(runs: Sequence[Results]) -> Protocol:
    """The registered protocol the runs name; an error if they name none or several."""
    records = _protocols(runs)
    if len(records) != 1:
        raise _mixed(records) if records else ClbenchError("no runs given")
    record = runs[0].protocol
    if record is None:
        raise ClbenchError("the runs have no protocol: a protocol's power is checked on its runs")
    return load_protocol(record.name)


def check_power(runs: Sequence[Results], protocol: Protocol) -> list[Criterion]:
    """The power criteria on the runs of one sequence (task order) of `protocol`, with a run
    of seq-ft, replay and joint for each of its seeds; runs of other methods are left out.

    Reads the runs' metrics as they hold them (`clbench report --power` computes them again
    from the matrices first). An error names what is missing or mixed.
    """
    by_method = _select(runs, protocol)
    return [
        _learned(by_method[LOWER]),
        _forgets(by_method[LOWER]),
        _replay_beats(by_method[LOWER] + by_method[UPPER]),
        _joint_holds(by_method[JOINT], by_method[UPPER]),
        _test_size(by_method[LOWER] + by_method[UPPER] + by_method[JOINT], protocol),
    ]


# ---- which runs -------------------------------------------------------------------------------


def _select(runs: Sequence[Results], protocol: Protocol) -> dict[str, list[Results]]:
    """The runs of each compared method, by seed, after every check that they fit together."""
    if not runs:
        raise ClbenchError("no runs given")
    records = _protocols(runs)
    if len(records) > 1:
        raise _mixed(records)
    if _shown(protocol.record()) not in records:
        raise ClbenchError(
            f"the runs were made under protocol {next(iter(records))}, not "
            f"{_shown(protocol.record())} ({protocol.origin})"
        )
    sequences = sorted({run.sequence.name for run in runs})
    if len(sequences) > 1:
        raise ClbenchError(
            f"runs of several sequences are mixed ({', '.join(sequences)}): the power is "
            f"checked on one task order, such as {protocol.sequences[0]}"
        )
    by_method = {}
    for method in (LOWER, UPPER, JOINT):
        mine = (run for run in runs if run.method.name == method and run.seed in protocol.seeds)
        found = sorted(mine, key=lambda run: run.seed)
        seeds = [run.seed for run in found]
        missing = [seed for seed in protocol.seeds if seed not in seeds]
        if missing:
            raise ClbenchError(
                f"no {method} run of {sequences[0]} for seed{'s' * (len(missing) > 1)} "
                f"{', '.join(map(str, missing))} "
                f"(protocol {protocol.name} needs seeds {', '.join(map(str, protocol.seeds))})"
            )
        twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if twice:
            ids = ", ".join(run.run_id for run in found if run.seed in twice)
            raise ClbenchError(f"{method} has several runs of seed {twice[0]}: {ids}")
        by_method[method] = found
    notes = comparable_groups(runs_frame([run for f in by_method.values() for run in f]))[1]
    if notes:
        raise ClbenchError("the runs cannot be compared: " + "; ".join(notes))
    return by_method


def _protocols(runs: Sequence[Results]) -> dict[str, list[str]]:
    """The run ids under each protocol (`name vVERSION HASH`, or "none")."""
    found: dict[str, list[str]] = {}
    for run in runs:
        shown = "none" if run.protocol is None else _shown(run.protocol.dump())
        found.setdefault(shown, []).append(run.run_id)
    return found


def _mixed(records: dict[str, list[str]]) -> ClbenchError:
    shown = "; ".join(f"{name}: {', '.join(ids)}" for name, ids in sorted(records.items()))
    return ClbenchError(f"runs of different protocols are mixed ({shown})")


def _shown(record: dict[str, Any]) -> str:
    """`name vVERSION HASH` of a protocol record (results.json's `protocol` block)."""
    return f"{record['name']} v{record['version']} {record['hash']}"


# ---- the criteria -----------------------------------------------------------------------------


def _learned(runs: list[Results]) -> Criterion:
    """Each task's own-stage score R[j][j] above its zero-shot score R[0][j], mean over seeds;
    a lower-is-better score counts its fall."""
    tasks = runs[0].sequence.tasks
    gains = np.array([[_gain(run, j) for j in range(1, len(tasks) + 1)] for run in runs])
    means = {task.name: float(gain) for task, gain in zip(tasks, gains.mean(axis=0), strict=True)}
    shown = ", ".join(f"{name} {_points(gain, sign=True)}" for name, gain in means.items())
    return Criterion(
        name="seq-ft learns every task",
        requirement=f"each task's own-stage score >= zero-shot + {MIN_LEARNED * 100:g} points",
        numbers={"gain": means, "seeds": len(runs)},
        measured=f"own-stage - zero-shot (points, mean of {len(runs)} seeds): {shown}",
        # the tolerance: 0.4 - 0.3 is 0.09999999999999998 in floating point
        passed=all(gain >= MIN_LEARNED - 1e-12 for gain in means.values()),
    )


def _gain(run: Results, j: int) -> float:
    """R[j][j] - R[0][j] of task j (from 1), negated for a lower-is-better score; NaN if a
    cell is missing."""
    cells = [run.matrix[j][j - 1], run.matrix[0][j - 1]]
    if None in cells:
        return math.nan
    sign = 1.0 if higher_is_better(run.sequence.tasks[j - 1].metric) else -1.0
    return sign * (cells[0] - cells[1])


def _forgets(runs: list[Results]) -> Criterion:
    values = [run.metric("bwt") for run in runs]
    mean = float(np.mean(values))
    low, high, kind = confidence_interval(values)
    return Criterion(
        name="seq-ft forgets",
        requirement="seq-ft's BWT < 0, its 95% CI below 0",
        numbers={"mean": mean, "ci_low": low, "ci_high": high, "ci_method": kind, "n": len(values)},
        measured=f"BWT {_points(mean)} [{_points(low)}, {_points(high)}] (95% CI, {kind}, "
        f"n = {len(values)})",
        passed=bool(mean < 0 and high < 0),
    )


def _replay_beats(runs: list[Results]) -> Criterion:
    """The one comparison of this criterion is its Holm family: p_holm equals p."""
    grouped = comparable_groups(runs_frame(runs))[0]
    test = significance_grouped(grouped, LOWER, ["aa"]).iloc[0]
    p, p_holm = float(test["p"]), float(test["p_holm"])
    means = {
        method: float(np.mean([run.metric("aa") for run in runs if run.method.name == method]))
        for method in (UPPER, LOWER)
    }
    return Criterion(
        name="replay beats seq-ft",
        requirement=f"replay's AA > seq-ft's, Holm-adjusted p < {ALPHA} (family: this test)",
        numbers={
            "replay": means[UPPER],
            "seq-ft": means[LOWER],
            "diff": float(test["mean_diff"]),
            "test": test["test"],
            "p": p,
            "p_holm": p_holm,
            "family": 1,
        },
        measured=f"AA {_points(means[UPPER])} vs {_points(means[LOWER])}, diff "
        f"{_points(test['mean_diff'], sign=True)}, {test['test']}, p_holm {_p(p_holm)}",
        passed=bool(test["mean_diff"] > 0 and p_holm < ALPHA),
    )


def _joint_holds(joint: list[Results], replay: list[Results]) -> Criterion:
    """Joint's AA minus replay's, paired by seed, at least minus one standard error of the
    mean difference."""
    diffs = np.array([a.metric("aa") - b.metric("aa") for a, b in zip(joint, replay, strict=True)])
    mean, se = float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(diffs)))
    return Criterion(
        name="joint holds up to replay",
        requirement="joint's AA >= replay's - 1 SE of the paired difference",
        numbers={
            "joint": float(np.mean([run.metric("aa") for run in joint])),
            "replay": float(np.mean([run.metric("aa") for run in replay])),
            "diff": mean,
            "se": se,
        },
        measured=f"AA joint - replay {_points(mean, sign=True)}, SE {_points(se)}",
        passed=bool(mean >= -se),
    )


def _test_size(runs: list[Results], protocol: Protocol) -> Criterion:
    """The smallest test set of each task over the runs; unknown (null) fails. A protocol whose
    `small_test_sets` states why its evaluation cannot afford more (the issue's own exception)
    passes with smaller known sizes, and the reason is shown."""
    found: dict[str, list[int | None]] = {}
    for run in runs:
        for task in run.sequence.tasks:
            found.setdefault(task.name, []).append(task.test_size)
    sizes = {name: None if None in seen else min(seen) for name, seen in found.items()}
    shown = ", ".join(f"{name} {size or 'unknown'}" for name, size in sizes.items())
    known = all(size is not None for size in sizes.values())
    large = known and all(size >= MIN_TEST_SIZE for size in sizes.values())
    exempt = known and not large and protocol.small_test_sets is not None
    if exempt:
        shown += f"; below {MIN_TEST_SIZE} by the protocol's exemption: {protocol.small_test_sets}"
    return Criterion(
        name="test sets are large enough",
        requirement=(
            f"each task has >= {MIN_TEST_SIZE} test examples (1 example <= 0.5 points), unless "
            "the protocol states the evaluation cost that forbids it"
        ),
        numbers={"test_size": sizes, "exempted": exempt},
        measured=f"test examples: {shown}",
        passed=large or exempt,
    )


def _points(value: float, sign: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 100 + 0.0:{'+' if sign else ''}.1f}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"
