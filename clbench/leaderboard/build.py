"""The leaderboard: a Markdown table per sequence and a static site, built from submissions.

    leaderboard/submissions/...   the input (clbench.leaderboard.submission)
    leaderboard/README.md         one table per sequence and protocol, ranked by AA: mean ± std, n
    leaderboard/site/             index.html, app.js, style.css: works from the file system

The output depends only on the submissions (no dates), so CI can rebuild and compare.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clbench import __version__
from clbench.errors import ClbenchError
from clbench.leaderboard.submission import Checked, validate_all
from clbench.metrics import METRICS, metrics_unit, score_unit
from clbench.results import compare
from clbench.results.io import write_text
from clbench.results.load import runs_frame
from clbench.results.schema import Results
from clbench.results.stats import aggregate

SITE_ASSETS = ("app.js", "style.css")
DATA_PLACEHOLDER = "__CLBENCH_DATA__"
RANK_BY = "aa"  # the metric that orders each table, best first


def build(root: Path, data_dir: str | None = None, check: bool = False) -> list[Path]:
    """Validate every submission, then write (or, with `check`, compare) README.md and site/.

    Raises if any submission is invalid: a leaderboard is never built from a partial set.
    """
    entries = leaderboard_entries(root, data_dir)
    files = {root / "README.md": readme(entries)}
    files |= {root / "site" / name: text for name, text in site_files(site_data(entries)).items()}
    if check:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
        if stale:
            names = ", ".join(str(p) for p in stale)
            raise ClbenchError(f"out of date: {names}; run `clbench leaderboard build`")
        return list(files)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    return list(files)


def leaderboard_entries(root: Path, data_dir: str | None = None) -> list[dict[str, Any]]:
    """One entry per valid submission, by table (sequence and protocol) then AA (best
    first)."""
    checked = validate_all(root, data_dir)
    errors = [error for result in checked for error in result.errors]
    if errors:
        raise ClbenchError("invalid submissions:\n  " + "\n  ".join(errors))
    entries = _flag_fewer_orders([_entry(result, root) for result in checked])
    shown = columns(entries)
    for entry in entries:
        entry["metrics"] = {key: entry["metrics"][key] for key in shown}
    return sorted(entries, key=lambda e: (e["table"], _rank(e), e["name"], e["model"]))


def columns(entries: list[dict[str, Any]]) -> list[str]:
    """The metric columns, in the order of the metric table: every "matrix" metric, and a
    "probes" metric (general forgetting) when some entry has it."""
    return [
        key
        for key, metric in METRICS.items()
        if metric.source == "matrix" or any(e["metrics"].get(key) for e in entries)
    ]


def _rank(entry: dict[str, Any]) -> float:
    """Sorts best first by RANK_BY, entries without it last."""
    value = entry["metrics"][RANK_BY]
    if value is None:
        return math.inf
    return -value["mean"] if METRICS[RANK_BY].higher_is_better else value["mean"]


def _entry(checked: Checked, root: Path) -> dict[str, Any]:
    sub, runs = checked.submission, checked.runs
    frame = runs_frame(runs)
    stats = aggregate(frame, list(METRICS), average_orders=True).set_index("metric")
    first = runs[0]
    return {
        "id": checked.path.relative_to(root / "submissions").with_suffix("").as_posix(),
        "name": sub["name"],
        "method": sub["method"],
        "model": sub["model"],
        "sequence": sub["sequence"],
        # Entries are ranked against those of the same sequence and protocol only.
        "protocol": frame["protocol"].iloc[0],
        "table": compare.table_sequence(frame, average_orders=True).iloc[0],
        "families": sorted({str(t.family) for run in runs for t in run.sequence.tasks}),
        "orders": sorted({int(o) for o in frame["order"].dropna()}),
        "n": len(runs),
        "seeds": sorted({run.seed for run in runs}),
        "metrics": {key: _stat(stats.loc[key]) for key in METRICS},
        **_units(first),
        "flags": checked.flags,
        "status": checked.status,
        "uses_task_id": bool(first.method.uses_task_id),
        "extra_memory": first.method.extra_memory,
        "paper": sub.get("paper"),
        "code": sub.get("code"),
        "submission": checked.path.relative_to(root).as_posix(),
        "details": {
            "hyper-parameters": first.method.hyperparameters,
            "budget": first.budget,
            "model source": first.model.source,
            "peft": first.model.peft,
            "clbench version": ", ".join(sorted({str(r.clbench_version) for r in runs})),
        },
        "matrices": _matrices(runs),
    }


def _flag_fewer_orders(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag the entries of a table that cover fewer of its task orders than others do: their
    mean is over other orders, so their rank is not like for like (docs/leaderboard.md)."""
    for table in {e["table"] for e in entries}:
        rows = [e for e in entries if e["table"] == table]
        covered = sorted({order for e in rows for order in e["orders"]})
        for entry in rows:
            if entry["orders"] and entry["orders"] != covered:
                orders, of = ", ".join(map(str, entry["orders"])), ", ".join(map(str, covered))
                entry["flags"] = [*entry["flags"], f"task orders {orders} of {of} in its table"]
    return entries


def _units(run: Results) -> dict[str, Any]:
    """For a sequence with loss-based tasks (bits per byte), the unit of the entry's metrics
    (the loss's, when every task is scored by it; else percent) and of each task's scores;
    nothing for a sequence of fractions, shown in percent."""
    scores = [task.metric for task in run.sequence.tasks]
    units = [score_unit(score)[1] for score in scores]
    if set(units) == {"%"}:
        return {}
    return {"unit": metrics_unit(scores)[1], "task_units": units}


def _stat(row: pd.Series) -> dict[str, float | int] | None:
    if row["n"] == 0:  # undefined for every run (FWD without single-task references)
        return None
    std = None if math.isnan(row["std"]) else float(row["std"])
    return {"mean": float(row["mean"]), "std": std, "n": int(row["n"])}


def _matrices(runs: list[Results]) -> list[dict[str, Any]]:
    """The mean matrix of each task order (validated submissions have no missing cell)."""
    by_sequence: dict[str, list[Results]] = {}
    for run in runs:
        by_sequence.setdefault(run.sequence.name, []).append(run)
    matrices = []
    for name, members in sorted(by_sequence.items()):
        tasks = members[0].tasks
        mean = np.mean([run.matrix for run in members], axis=0)
        matrices.append(
            {
                "sequence": name,
                "tasks": tasks,
                "rows": ["before training", *(f"after {task}" for task in tasks)],
                "mean": mean.round(6).tolist(),
                "n": len(members),
            }
        )
    return matrices


# ---- README.md --------------------------------------------------------------------------------


def readme(entries: list[dict[str, Any]]) -> str:
    """One Markdown table per sequence and protocol; every submitted string is
    HTML-escaped."""
    parts = [
        "# Leaderboard\n",
        "Generated by `clbench leaderboard build` from `submissions/`; do not edit by hand. "
        "Metrics are percentages, mean ± std over the n runs (seeds x task orders) of an entry. "
        "Status: verified (every cell recomputed from the submitted predictions and the "
        "data) or self-reported. "
        "Flags: fewer than 3 seeds, fewer task orders than other entries of the table, task "
        "identity used at inference, extra memory. "
        "The web version is `site/index.html`. How to submit: `docs/leaderboard.md`.\n",
    ]
    shown = columns(entries)
    for sequence in sorted({e["table"] for e in entries}):
        rows = [e for e in entries if e["table"] == sequence]
        table = pd.DataFrame(
            [
                {
                    "rank": rank,
                    "name": _md(e["name"]),
                    "model": _md(e["model"]),
                    **{METRICS[key].short: _cell(e["metrics"][key], e) for key in shown},
                    "n": e["n"],
                    "status": e["status"],
                    "flags": _md("; ".join(e["flags"])) or "",
                }
                for rank, e in enumerate(rows, 1)
            ]
        )
        units = sorted({e.get("unit", "%") for e in rows} - {"%"})
        note = (
            f"Metrics in {', '.join(units)}, computed on the negated losses, so each reads as it "
            "does in percent (docs/metrics.md#direction).\n\n"
            if units
            else ""
        )
        parts.append(f"## {_md(sequence)}\n\n{note}{table.to_markdown(index=False)}\n")
    if not entries:
        parts.append("No submissions yet.\n")
    return "\n".join(parts)


def _md(text: str) -> str:
    return html.escape(text).replace("|", "&#124;")


def _cell(stat: dict[str, Any] | None, entry: dict[str, Any]) -> str:
    if stat is None:
        return "n/a"
    # Percent with one decimal; a loss (bits per byte) as it is, with three.
    factor, decimals = (100, 1) if entry.get("unit", "%") == "%" else (1, 3)
    mean = f"{factor * stat['mean']:.{decimals}f}"
    return mean if stat["std"] is None else f"{mean} ± {factor * stat['std']:.{decimals}f}"


# ---- the site ---------------------------------------------------------------------------------


def site_data(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page shows: the entries, the metric columns with their direction (from the
    metric table), and the metric that ranks the entries."""
    return {
        "title": "clbench leaderboard",
        "clbench_version": __version__,
        "metrics": [
            {
                "key": key,
                "short": METRICS[key].short,
                "name": METRICS[key].name,
                "higher_is_better": METRICS[key].higher_is_better,
            }
            for key in columns(entries)
        ],
        "rank_by": RANK_BY,
        "entries": entries,
    }


def site_files(data: dict[str, Any]) -> dict[str, str]:
    """index.html with `data` embedded as JSON, plus its script and style sheet.

    The page reads the data from a `<script type="application/json">` element, so it works
    from the file system (browsers refuse fetch() of file:// URLs) with no network.
    """
    assets = resources.files("clbench.leaderboard") / "site"
    files = {name: (assets / name).read_text(encoding="utf-8") for name in SITE_ASSETS}
    # Escaped so that no string in the data can close the script element or open a comment.
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = (assets / "index.html").read_text(encoding="utf-8")
    files["index.html"] = template.replace(DATA_PLACEHOLDER, text)
    return files


def write_site(data: dict[str, Any], out_dir: Path) -> Path:
    """Write the site of `data` into `out_dir`; returns its index.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in site_files(data).items():
        write_text(out_dir / name, text)
    return out_dir / "index.html"
