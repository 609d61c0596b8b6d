"""Which runs may be averaged together, and notes saying what was kept apart and why.

A row of a report is one sequence (or, with `average_orders`, one sequence group) under one
protocol, model name and method; its runs must also agree on the test data and the settings in
`COMPARED` (the budget among them, which holds the evaluation mode, `eval_mode`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from clbench.results.load import COMPARED, canonical

JSON_COLUMNS = frozenset({"budget", "hyperparameters"})


def comparable_groups(
    frame: pd.DataFrame, average_orders: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Label each run with the table row it is averaged in; notes say what was kept apart, why.

    A row is one sequence (or, with `average_orders`, one sequence group) under one protocol,
    model name and method: runs of different protocols go to different tables. Runs of a row
    that differ in test data, budget (the evaluation mode too), model source/revision/peft or
    method hyper-parameters are split into rows `method [1]`, `method [2]`, ... (the biggest
    first), or, when they differ in hyper-parameters alone, into rows named by the values that
    tell them apart: `cpt-rewarm (replay_fraction=0.01)`.
    Adds the columns `table_sequence`, `row` and `variant` (1, 2, ...).
    """
    frame = frame.copy()
    frame["table_sequence"] = table_sequence(frame, average_orders)
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
        labels = _variant_labels(method, parts, compared)
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


def table_sequence(frame: pd.DataFrame, average_orders: bool) -> pd.Series:
    """The sequence (group) a run is tabled under, with its protocol when it has one."""
    sequence = frame["sequence_group" if average_orders else "sequence"]
    protocol = frame.get("protocol", "none")
    return sequence.where(protocol == "none", sequence + " [protocol " + protocol + "]")


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


def _variant_labels(method: str, parts: list[pd.DataFrame], compared: list[str]) -> list[str]:
    """Row labels of the parts of one row: by the hyper-parameters that differ when nothing
    else does (a sweep over a method's settings), else numbered, the biggest part first."""
    firsts = [part.iloc[0] for part in parts]
    others = [column for column in compared if column != "hyperparameters"]
    if any(first[column] != firsts[0][column] for first in firsts for column in others):
        return [f"{method} [{i}]" for i in range(1, len(parts) + 1)]
    settings = [json.loads(first["hyperparameters"]) for first in firsts]
    keys = sorted(
        key for key in set().union(*settings) if len({_shown(d.get(key)) for d in settings}) > 1
    )
    # A setting a run does not record (older than the setting) is left out of its label.
    shown = [
        ", ".join(f"{k}={_shown(d[k])}" for k in keys if d.get(k) is not None) for d in settings
    ]
    labels = [f"{method} ({text})" if text else method for text in shown]
    if len(set(labels)) < len(labels):
        return [f"{method} [{i}]" for i in range(1, len(parts) + 1)]
    return labels


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
    return value if isinstance(value, str) else canonical(value)
