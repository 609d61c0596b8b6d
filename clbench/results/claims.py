"""Published orderings of methods, checked on runs: `replay>seq-ft`, `joint>=*`, `fgt:ewc<seq-ft`.

A claim is `[METRIC:]LEFT OP RIGHT`. LEFT and RIGHT are table rows (method names, or
`method [2]` for a variant that `comparable_groups` kept apart); `*` stands for every other
row of the table. OP compares the metric's values as numbers (`>`, `>=`, `<`, `<=`), whatever
the metric's direction: "EWC forgets less than seq-ft" is `fgt:ewc<seq-ft`. METRIC defaults to
AA.

Each pair is tested as `clbench report --baseline` tests a method (paired by seed and order
when both sides have the same runs, `two_sample_test`), in every table (sequence, protocol,
model) that holds both sides. Each claim is its own Holm family: a claim checks one published
hypothesis, and `joint>=*` is one claim of many comparisons. The verdict:

- a strict claim (`>`, `<`) **holds** when the difference has the claimed sign with
  p_holm < ALPHA, and is **reversed** when it has the other sign with p_holm < ALPHA; otherwise
  it is **not shown** (no difference the runs can tell apart from noise);
- a non-strict claim (`>=`, `<=`) **holds** unless the difference has the other sign with
  p_holm < ALPHA (**reversed**): the runs show no evidence against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from clbench.errors import ClbenchError, unknown_name
from clbench.metrics import METRICS
from clbench.results.compare import comparable_groups
from clbench.results.stats import ALPHA, compare_runs, holm

EVERY = "*"
OPERATORS = {">": (1, True), ">=": (1, False), "<": (-1, True), "<=": (-1, False)}
HOLDS, REVERSED, NOT_SHOWN = "holds", "reversed", "not shown"
COLUMNS = ["claim", "sequence", "model", "left", "right", "metric", "unit", "unit_factor"]
COLUMNS += ["mean_left", "mean_right", "mean_diff", "test", "n_left", "n_right", "p", "p_holm"]
COLUMNS += ["verdict"]
_CLAIM = re.compile(r"^\s*(?:(\w+)\s*:)?\s*(.+?)\s*(>=|<=|>|<)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Claim:
    text: str
    metric: str
    left: str
    operator: str
    right: str


def parse_claims(text: str) -> list[Claim]:
    """Comma-separated claims, each `[METRIC:]LEFT OP RIGHT`; one error names a bad one."""
    claims = []
    for part in (p for p in text.split(",") if p.strip()):
        match = _CLAIM.match(part)
        if match is None:
            raise ClbenchError(
                f"claim {part.strip()!r}: expected [METRIC:]LEFT OP RIGHT with OP one of "
                f"{', '.join(OPERATORS)}, e.g. 'replay>seq-ft' or 'fgt:ewc<seq-ft'"
            )
        metric, left, operator, right = match.groups()
        metric = (metric or "aa").lower()
        if metric not in METRICS:
            raise unknown_name(f"metric of claim {part.strip()!r}:", metric, list(METRICS))
        if left == right:
            raise ClbenchError(f"claim {part.strip()!r} compares a row with itself")
        claims.append(Claim(part.strip(), metric, left, operator, right))
    if not claims:
        raise ClbenchError("--claims: no claim given")
    return claims


def check_claims(
    frame: pd.DataFrame, claims: list[Claim], average_orders: bool = False
) -> pd.DataFrame:
    """One line per compared pair of rows (COLUMNS), each claim Holm-adjusted as one family.
    A claim whose rows no table holds is an error naming the rows there are."""
    grouped = comparable_groups(frame, average_orders)[0]
    parts = []
    for claim in claims:
        lines = [
            line
            for (sequence, model), block in grouped.groupby(["table_sequence", "model"])
            for line in _pairs(claim, sequence, model, block)
        ]
        if not lines:
            known = sorted(set(grouped["row"]))
            raise ClbenchError(
                f"claim {claim.text!r}: no table holds both sides; the rows are " + ", ".join(known)
            )
        part = pd.DataFrame(lines, columns=COLUMNS)
        part["p_holm"] = holm(part["p"])
        tested = zip(part["mean_diff"], part["p_holm"], strict=True)
        part["verdict"] = [_verdict(claim, diff, p) for diff, p in tested]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _pairs(claim: Claim, sequence: str, model: str, block: pd.DataFrame) -> list[dict]:
    rows = list(dict.fromkeys(block["row"]))
    lefts = [r for r in rows if r != claim.right] if claim.left == EVERY else [claim.left]
    rights = [r for r in rows if r != claim.left] if claim.right == EVERY else [claim.right]
    lines = []
    for left in (r for r in lefts if r in rows):
        for right in (r for r in rights if r in rows and r != left):
            a, b = block[block["row"] == left], block[block["row"] == right]
            tested = compare_runs(a, b, claim.metric)
            lines.append(
                {
                    "claim": claim.text,
                    "sequence": sequence,
                    "model": model,
                    "left": left,
                    "right": right,
                    "metric": claim.metric,
                    "unit": a["unit"].iloc[0],
                    "unit_factor": a["unit_factor"].iloc[0],
                    "mean_left": a[claim.metric].mean(),
                    "mean_right": b[claim.metric].mean(),
                    "mean_diff": tested["mean_diff"],
                    "test": tested["test"],
                    "n_left": tested["n_method"],
                    "n_right": tested["n_baseline"],
                    "p": tested["p"],
                }
            )
    return lines


def _verdict(claim: Claim, diff: float, p_holm: float) -> str:
    sign, strict = OPERATORS[claim.operator]
    shown = p_holm < ALPHA  # False for NaN: no test
    if shown and diff * sign < 0:
        return REVERSED
    if not strict or (shown and diff * sign > 0):
        return HOLDS
    return NOT_SHOWN
