"""Tables and statistics over many runs: loading, grouping, CIs, tests, formats and the CLI.

Every run here is a small results.json written by `write_run`; no model is trained.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.reporting.tables import latex_escape, tables
from clbench.results.compare import comparable_groups
from clbench.results.load import load_runs
from clbench.results.stats import (
    BOOTSTRAP_RESAMPLES,
    aggregate,
    confidence_interval,
    holm,
    order_spread,
    significance,
    two_sample_test,
)

FINGERPRINTS = ("fp-a", "fp-b", "fp-c")


def results(
    run_id: str,
    *,
    sequence: str = "standard-cl-order1",
    method: str = "seq-ft",
    seed: int = 0,
    aa: float = 0.5,
    fgt: float = 0.1,
    fingerprints: tuple[str, ...] = FINGERPRINTS,
    steps: int = 100,
    hyperparameters: dict[str, Any] | None = None,
    model: str = "smollm2-135m",
    revision: str | None = None,
    peft: dict[str, Any] | None = None,
    task_metric: str = "accuracy",
) -> dict[str, Any]:
    """A results.json with the fields the report reads; metrics other than aa/fgt are fixed."""
    tasks = [
        {"name": f"task-{fp}", "family": "text_classification", "metric": task_metric}
        | {"train_size": 8, "test_size": 4, "fingerprint": fp, "train_fingerprint": "t" + fp}
        for fp in fingerprints
    ]
    return {
        "schema_version": 1,
        "run_id": run_id,
        "created_at": f"2025-01-01T00:00:00 {run_id}",
        "sequence": {"name": sequence, "tasks": tasks},
        "method": {
            "name": method,
            "hyperparameters": hyperparameters or {},
            "uses_task_id": False,
            "extra_memory": None,
        },
        "model": {"name": model, "source": "test", "revision": revision, "peft": peft},
        "seed": seed,
        "budget": {"steps_per_task": steps, "batch_size": 4},
        "matrix": [[0.3, 0.3, 0.3], [0.6, 0.4, 0.3], [0.5, 0.6, 0.4], [0.5, 0.5, 0.6]],
        "metrics": {"aa": aa, "aia": 0.5, "fgt": fgt, "bwt": -fgt, "fwd": None, "fwt": 0.02},
    }


def write_run(root: Path, run_id: str, **fields: Any) -> Path:
    folder = root / run_id
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results(run_id, **fields)), encoding="utf-8")
    return folder


def write_methods(root: Path, values: dict[str, list[float]], **fields: Any) -> None:
    """One run per seed of each method, with the given aa values (fgt = 1 - aa)."""
    for method, aas in values.items():
        for seed, aa in enumerate(aas):
            write_run(
                root, f"{method}-s{seed}", method=method, seed=seed, aa=aa, fgt=1 - aa, **fields
            )


# ---- loading ----------------------------------------------------------------------------------


def test_load_runs_from_folders_globs_and_files(tmp_path):
    write_run(tmp_path / "runs", "a", seed=0)
    write_run(tmp_path / "runs", "b", seed=1, method="ewc", hyperparameters={"ewc_lambda": 100})
    other = tmp_path / "board" / "standard-cl-order2.json"  # a results file under another name
    other.parent.mkdir()
    run = results("c", sequence="standard-cl-order2", fingerprints=("fp-b", "fp-c", "fp-a"))
    other.write_text(json.dumps(run), encoding="utf-8")

    frame = load_runs([tmp_path / "runs", str(tmp_path / "runs" / "*"), other])
    assert list(frame["run_id"]) == ["a", "b", "c"]  # a run named twice counts once
    assert list(frame["sequence_group"]) == ["standard-cl"] * 3
    assert list(frame["order"]) == [1, 1, 2]
    assert frame.loc[1, "method"] == "ewc"
    assert json.loads(frame.loc[1, "hyperparameters"]) == {"ewc_lambda": 100}
    assert json.loads(frame.loc[0, "budget"])["steps_per_task"] == 100
    assert frame.loc[0, "aa"] == 0.5 and math.isnan(frame.loc[0, "fwd"])
    assert frame.loc[0, "model_revision"] == "none" and frame.loc[0, "peft"] == "none"
    assert not frame.loc[0, "uses_task_id"]
    # the key is shared by runs that may be averaged: not by another method, but by another seed
    assert frame.loc[0, "comparability_key"] != frame.loc[1, "comparability_key"]
    write_run(tmp_path / "more", "a-seed-5", seed=5)
    assert (
        load_runs([tmp_path / "more"]).loc[0, "comparability_key"]
        == frame.loc[0, "comparability_key"]
    )
    assert frame.loc[0, "test_data"] != frame.loc[2, "test_data"]  # the order differs...
    assert frame.loc[0, "test_data_set"] == frame.loc[2, "test_data_set"]  # ...not the set

    assert len(load_runs([str(tmp_path / "**" / "results.json")])) == 3


def test_a_sequence_without_orders_has_no_order(tmp_path):
    write_run(tmp_path, "a", sequence="default")
    frame = load_runs([tmp_path])
    assert frame.loc[0, "sequence_group"] == "default" and pd.isna(frame.loc[0, "order"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"some": "json"}', "not a clbench results file"),
        ("not json at all", "not valid JSON"),
        (json.dumps({k: v for k, v in results("x").items() if k != "budget"}), "'budget'"),
        (json.dumps(results("x") | {"seed": "one"}), "'seed'"),
        (json.dumps(results("x") | {"metrics": {"aa": "high"}}), "metrics.aa"),
    ],
)
def test_bad_files_name_the_path_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ClbenchError, match=message) as caught:
        load_runs([path])
    assert str(path) in str(caught.value)


def test_missing_runs_are_errors(tmp_path):
    with pytest.raises(ClbenchError, match=r"no results.json at or under"):
        load_runs([tmp_path / "nothing-here"])
    with pytest.raises(ClbenchError, match=r"no results.json matches"):
        load_runs([str(tmp_path / "runs-*")])


def test_a_glob_leaves_out_unfinished_runs_and_says_so(tmp_path, capsys):
    write_run(tmp_path / "runs", "done")
    (tmp_path / "runs" / "running").mkdir()  # a sweep's cell in progress: no results.json yet
    with pytest.warns(UserWarning, match="left out 1 folder") as caught:
        assert main(["report", str(tmp_path / "runs" / "*")]) == 0
    assert "### done:" in capsys.readouterr().out
    shown = warnings.formatwarning(caught[0].message, UserWarning, caught[0].filename, 1)
    assert shown == f"clbench: warning: {caught[0].message}\n"  # as the command line prints it
    assert str(tmp_path / "runs" / "running") in shown
    with pytest.raises(ClbenchError, match=r"no results.json at or under"):  # named: an error
        load_runs([tmp_path / "runs" / "running"])
    with pytest.raises(ClbenchError, match=r"no results.json in the 1 folder\(s\) matched"):
        load_runs([str(tmp_path / "runs" / "run*")])


def test_the_same_run_twice_is_an_error(tmp_path):
    write_run(tmp_path / "runs", "a")
    shutil.copytree(tmp_path / "runs", tmp_path / "copy")
    with pytest.raises(ClbenchError, match="given twice"):
        load_runs([tmp_path / "runs", tmp_path / "copy"])


# ---- grouping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fingerprints": ("fp-a", "fp-b", "fp-other")}, "test_data"),
        ({"fingerprints": ("fp-b", "fp-a", "fp-c")}, "test_data"),  # same tasks, other order
        ({"steps": 200}, "budget.steps_per_task"),
        ({"revision": "v2"}, "model_revision"),
        ({"peft": {"type": "lora", "r": 8}}, "peft"),
    ],
)
def test_runs_that_differ_are_kept_apart_and_the_note_says_why(tmp_path, change, field):
    base = {"method": "ewc", "hyperparameters": {"ewc_lambda": 100}}
    write_run(tmp_path, "same-0", seed=0, aa=0.4, **base)
    write_run(tmp_path, "same-1", seed=1, aa=0.6, **base)
    write_run(tmp_path, "odd", seed=2, aa=0.9, **(base | change))

    grouped, notes = comparable_groups(load_runs([tmp_path]))
    rows = dict(zip(grouped["run_id"], grouped["row"], strict=True))
    assert rows["same-0"] == rows["same-1"] == "ewc [1]" and rows["odd"] == "ewc [2]"
    (note,) = notes  # one method: no note comparing methods
    assert note.startswith("not comparable, kept apart: ewc on standard-cl-order1")
    assert "same-0, same-1" in note and "ewc [2] = odd" in note and field in note

    summary = aggregate(load_runs([tmp_path]), metrics=["aa"]).set_index("row")
    assert summary.loc["ewc [1]", "n"] == 2 and summary.loc["ewc [1]", "mean"] == pytest.approx(0.5)
    assert summary.loc["ewc [2]", "n"] == 1


def test_runs_that_differ_in_settings_alone_are_rows_named_by_them(tmp_path):
    base = {"method": "ewc", "hyperparameters": {"ewc_lambda": 100, "gamma": 1.0}}
    write_run(tmp_path, "same-0", seed=0, aa=0.4, **base)
    write_run(tmp_path, "same-1", seed=1, aa=0.6, **base)
    write_run(
        tmp_path, "odd", seed=2, method="ewc", hyperparameters={"ewc_lambda": 10, "gamma": 1.0}
    )
    write_run(tmp_path, "longer", seed=0, steps=200, **base)
    grouped, notes = comparable_groups(load_runs([tmp_path]))
    rows = dict(zip(grouped["run_id"], grouped["row"], strict=True))
    # Settings alone tell "odd" apart; "longer" differs in its budget too: numbered.
    assert rows["same-0"] == rows["same-1"] == "ewc [1]" and rows["longer"] == "ewc [2]"
    assert rows["odd"] == "ewc [3]"
    settings = comparable_groups(load_runs([tmp_path / "same-0", tmp_path / "odd"]))[0]
    assert list(settings["row"]) == ["ewc (ewc_lambda=100)", "ewc (ewc_lambda=10)"]
    # A setting that older runs do not record is left out of their labels.
    newer = {"ewc_lambda": 100, "gamma": 1.0, "online": True}
    write_run(tmp_path, "newer", seed=3, method="ewc", hyperparameters=newer)
    three = comparable_groups(load_runs([tmp_path / n for n in ("same-0", "odd", "newer")]))[0]
    assert list(three["row"]) == [
        "ewc (ewc_lambda=100)",
        "ewc (ewc_lambda=10)",
        "ewc (ewc_lambda=100, online=true)",
    ]
    assert "hyperparameters.ewc_lambda" in notes[0]


def test_comparable_runs_make_one_row_without_notes(tmp_path):
    write_methods(tmp_path, {"seq-ft": [0.4, 0.5], "ewc": [0.6, 0.7]})
    grouped, notes = comparable_groups(load_runs([tmp_path]))
    assert sorted(set(grouped["row"])) == ["ewc", "seq-ft"] and notes == []


def test_methods_on_different_budgets_are_flagged(tmp_path):
    write_run(tmp_path, "a", method="seq-ft")
    write_run(tmp_path, "b", method="ewc", steps=50)
    grouped, notes = comparable_groups(load_runs([tmp_path]))
    assert set(grouped["row"]) == {"seq-ft", "ewc"}  # different methods: rows anyway
    assert any("budget.steps_per_task: 50 (ewc); 100 (seq-ft)" in note for note in notes)


def test_average_orders_groups_the_orders_of_a_sequence(tmp_path):
    orders = {1: ("fp-a", "fp-b", "fp-c"), 2: ("fp-b", "fp-c", "fp-a"), 3: ("fp-c", "fp-a", "fp-b")}
    for order, fingerprints in orders.items():
        for seed in range(2):
            write_run(
                tmp_path,
                f"o{order}-s{seed}",
                sequence=f"standard-cl-order{order}",
                seed=seed,
                aa=0.1 * order,
                fingerprints=fingerprints,
            )
    frame = load_runs([tmp_path])

    per_order = aggregate(frame, metrics=["aa"])
    assert list(per_order["sequence"]) == [f"standard-cl-order{k}" for k in (1, 2, 3)]
    assert list(per_order["n"]) == [2, 2, 2]

    averaged = aggregate(frame, metrics=["aa"], average_orders=True)
    assert list(averaged["sequence"]) == ["standard-cl"]
    assert averaged.loc[0, "n"] == 6 and averaged.loc[0, "mean"] == pytest.approx(0.2)
    assert comparable_groups(frame, average_orders=True)[1] == []


def test_average_orders_keeps_apart_an_order_on_other_tasks(tmp_path):
    write_run(tmp_path, "o1", sequence="standard-cl-order1")
    write_run(tmp_path, "o2", sequence="standard-cl-order2", fingerprints=("fp-a", "fp-x", "fp-c"))
    grouped, notes = comparable_groups(load_runs([tmp_path]), average_orders=True)
    assert sorted(grouped["row"]) == ["seq-ft [1]", "seq-ft [2]"]
    assert any("test_data_set" in note for note in notes)


# ---- statistics -------------------------------------------------------------------------------


def test_aggregate_mean_std_and_t_interval_by_hand(tmp_path):
    values = [0.50, 0.52, 0.57]
    write_methods(tmp_path, {"seq-ft": values})
    row = aggregate(load_runs([tmp_path]), metrics=["aa"]).iloc[0]

    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    assert row["n"] == 3 and row["ci_method"] == "t"
    assert row["mean"] == pytest.approx(mean) and row["std"] == pytest.approx(std)
    assert row["ci_low"] == pytest.approx(mean - half) and row["ci_high"] == pytest.approx(
        mean + half
    )


def test_aggregate_of_one_run_and_of_a_null_metric_is_nan(tmp_path):
    write_run(tmp_path, "only")
    summary = aggregate(load_runs([tmp_path]), metrics=["aa", "fwd"]).set_index("metric")
    assert summary.loc["aa", "n"] == 1 and summary.loc["aa", "mean"] == 0.5
    for column in ("std", "ci_low", "ci_high"):
        assert math.isnan(summary.loc["aa", column])  # unknown, not 0
    assert summary.loc["fwd", "n"] == 0 and math.isnan(summary.loc["fwd", "mean"])


def test_ten_runs_or_more_get_a_seeded_percentile_bootstrap(tmp_path):
    values = [0.40, 0.45, 0.43, 0.50, 0.52, 0.38, 0.47, 0.49, 0.41, 0.55, 0.44]
    write_methods(tmp_path, {"seq-ft": values})
    row = aggregate(load_runs([tmp_path]), metrics=["aa"]).iloc[0]
    expected = stats.bootstrap(
        (np.sort(values),),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert row["ci_method"] == "bootstrap" and row["n"] == 11
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert confidence_interval(values) == confidence_interval(values)  # reproducible


def test_identical_runs_give_a_zero_width_interval():
    assert confidence_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, "t")


def test_two_sample_tests_equal_scipy():
    x = [0.51, 0.55, 0.60, 0.58, 0.62, 0.57, 0.66]
    y = [0.50, 0.50, 0.52, 0.55, 0.51, 0.58, 0.60]
    assert two_sample_test(x, y, paired=True) == pytest.approx(("wilcoxon", *stats.wilcoxon(x, y)))
    assert two_sample_test(x[:4], y[:4], paired=True) == pytest.approx(
        ("paired t", *stats.ttest_rel(x[:4], y[:4]))
    )
    welch = stats.ttest_ind(x, y[:5], equal_var=False)
    assert two_sample_test(x, y[:5], paired=False) == pytest.approx(
        ("welch t", welch.statistic, welch.pvalue)
    )
    test, statistic, p = two_sample_test([0.5], y, paired=False)
    assert test == "n/a" and math.isnan(statistic) and math.isnan(p)


def test_a_constant_difference_is_no_evidence():
    """Scores on 16 test examples move in steps of 1/16: a method can differ from the baseline
    by the same amount in every pair, to rounding; scipy's t is then huge, and p about 0."""
    base = [0.28125, 0.34375, 0.296875]
    shifted = [b + 0.0208333333 + e for b, e in zip(base, [0, 1e-12, -1e-12], strict=True)]
    assert stats.ttest_rel(shifted, base).pvalue < 1e-20  # what scipy alone would report
    test, statistic, p = two_sample_test(shifted, base, paired=True)
    assert test == "paired t" and math.isnan(statistic) and math.isnan(p)
    test, statistic, p = two_sample_test([0.5, 0.5], [0.25, 0.25 + 1e-12], paired=False)
    assert test == "welch t" and math.isnan(p)


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, max(0.04 * 1, 0.06) = 0.06
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert adjusted[[0, 1, 2, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[3])
    assert list(holm([0.5, 0.6])) == [1.0, 1.0]  # capped at 1


def test_significance_pairs_runs_by_seed_else_welch(tmp_path):
    base = [0.40, 0.42, 0.45, 0.41]
    paired = [0.48, 0.47, 0.55, 0.50]
    write_methods(tmp_path, {"seq-ft": base})
    for seed, aa in enumerate(paired):  # read in the reverse seed order: paired by seed
        write_run(tmp_path, f"replay-{9 - seed}", method="replay", seed=seed, aa=aa, fgt=1 - aa)
    unpaired = [0.6, 0.62, 0.65, 0.61]
    for seed, aa in zip((7, 8, 9, 10), unpaired, strict=True):  # as many runs, other seeds
        write_run(tmp_path, f"ewc-s{seed}", method="ewc", seed=seed, aa=aa, fgt=1 - aa)
    write_run(tmp_path, "lwf-s0", method="lwf", aa=0.5)  # one run: no test, no crash

    tests = significance(load_runs([tmp_path]), "seq-ft", metrics=["aa", "fgt"])
    found = tests.set_index(["method", "metric"])
    expected = stats.ttest_rel(paired, base)
    assert found.loc[("replay", "aa"), "test"] == "paired t"
    assert found.loc[("replay", "aa"), "p"] == pytest.approx(expected.pvalue)
    assert found.loc[("replay", "aa"), "mean_diff"] == pytest.approx(
        np.mean(paired) - np.mean(base)
    )
    welch = stats.ttest_ind(unpaired, base, equal_var=False)
    assert found.loc[("ewc", "aa"), "test"] == "welch t"
    assert found.loc[("ewc", "aa"), "p"] == pytest.approx(welch.pvalue)
    assert found.loc[("lwf", "aa"), "test"] == "n/a" and math.isnan(found.loc[("lwf", "aa"), "p"])
    assert list(tests["p_holm"].fillna(-1)) == pytest.approx(
        list(pd.Series(holm(tests["p"])).fillna(-1))
    )
    assert list(tests["significant"]) == list(tests["p_holm"] < 0.05)


def test_tables_without_the_baseline_say_they_have_no_tests(tmp_path):
    write_methods(tmp_path, {"seq-ft": [0.4, 0.5], "ewc": [0.6, 0.7]})
    write_run(tmp_path, "other-model", method="ewc", model="qwen")
    text = tables(load_runs([tmp_path]), baseline="seq-ft", metrics=["aa"])
    assert "no tests on standard-cl-order1 with qwen: it has no seq-ft runs" in text
    assert "with smollm2-135m: it has no" not in text


def test_significance_with_an_unknown_baseline_names_it(tmp_path):
    write_methods(tmp_path, {"seq-ft": [0.4, 0.5]})
    with pytest.raises(ClbenchError, match=r"unknown baseline method 'sq-ft'.*seq-ft"):
        significance(load_runs([tmp_path]), "sq-ft")


# ---- formats ----------------------------------------------------------------------------------


def three_methods(root: Path) -> pd.DataFrame:
    """aa: ewc 52.0 ± 2.0 (best), replay 50.0, seq-ft 40.0; fgt = 1 - aa, so seq-ft is worst."""
    write_methods(
        root,
        {
            "seq-ft": [0.41, 0.40, 0.39],
            "replay": [0.49, 0.50, 0.51],
            "my_method&co%#": [0.50, 0.52, 0.54],
        },
    )
    return load_runs([root])


def test_latex_is_booktabs_with_best_bold_and_second_underlined(tmp_path):
    text = tables(three_methods(tmp_path), "latex", metrics=["aa", "fgt"], baseline="seq-ft")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\caption{"):
        assert rule in text
    assert r"my\_method\&co\%\#" in text and "my_method" not in text
    assert r"AA $\uparrow$" in text and r"FGT $\downarrow$" in text
    table = text.split(r"\end{table}")[0]  # the metrics; the tests follow
    lines = {
        line.split(" & ")[0]: line.split(" & ") for line in table.splitlines() if " & " in line
    }
    ewc, replay, seq_ft = (lines[name] for name in (r"my\_method\&co\%\#", "replay", "seq-ft"))
    assert ewc[1] == "3"  # n
    assert ewc[2].startswith(r"\textbf{\boldmath$52.0 \pm 2.0") and ewc[2].endswith("$}")
    assert replay[2].startswith(r"\underline{$50.0 \pm 1.0")
    assert seq_ft[2] == r"$40.0 \pm 1.0$"  # the worst: plain, and the baseline is not tested
    # fgt: lower is better, so the same method wins again
    assert ewc[3].startswith(r"\textbf{\boldmath$48.0 \pm 2.0")
    assert replay[3].startswith(r"\underline{$50.0 \pm 1.0")
    assert "Student t" in text and "paired t-test" in text and "Holm" in text


def test_two_rows_get_a_best_but_no_second(tmp_path):
    write_methods(tmp_path, {"seq-ft": [0.4, 0.5], "ewc": [0.6, 0.7]})
    text = tables(load_runs([tmp_path]), "latex", metrics=["aa"])
    assert r"\textbf{" in text and r"\underline{" not in text


def test_decimals_and_interval(tmp_path):
    frame = three_methods(tmp_path)
    assert r"$40.00 \pm 1.00$" in tables(frame, "latex", metrics=["aa"], decimals=2)
    lo, hi = confidence_interval([0.39, 0.40, 0.41])[:2]
    assert f"40.0 [{lo * 100:.1f}, {hi * 100:.1f}]" in tables(frame, metrics=["aa"], interval="ci")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles_in_a_plain_article(tmp_path):
    body = tables(three_methods(tmp_path / "runs"), "latex", baseline="seq-ft")
    document = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
    (tmp_path / "doc.tex").write_text(document + body + "\\end{document}\n", encoding="utf-8")
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_latex_escape():
    assert latex_escape("a_b & 50% #1 $x ~^{}\\") == (
        r"a\_b \& 50\% \#1 \$x \textasciitilde{}\textasciicircum{}\{\}\textbackslash{}"
    )


def test_markdown_table_and_notes(tmp_path):
    text = tables(three_methods(tmp_path), metrics=["aa", "fgt"], baseline="seq-ft")
    assert "### standard-cl-order1, smollm2-135m" in text
    assert "| method" in text and "AA ↑" in text and "FGT ↓" in text
    assert "**52.0 ± 2.0" in text
    assert text.index("| seq-ft") < text.index("| my_method") < text.index("| replay")
    assert "### Tests against seq-ft" in text and "paired t" in text
    assert "Student t (n < 10)" in text and "Holm-adjusted over 4 comparisons" in text


def test_csv_has_every_number_in_percent(tmp_path):
    text = tables(three_methods(tmp_path), "csv", metrics=["aa"], baseline="seq-ft", decimals=2)
    frame = pd.read_csv(__import__("io").StringIO(text), comment="#").set_index("row")
    assert frame.loc["replay", "mean"] == 50.0 and frame.loc["replay", "std"] == 1.0
    assert frame.loc["replay", "ci_method"] == "t" and frame.loc["replay", "test"] == "paired t"
    assert frame.loc["replay", "n_method"] == 3
    assert "# 95% CI of the mean: Student t" in text


def test_tables_of_loss_scored_runs_are_in_the_loss_unit(tmp_path):
    # The metrics of bits-per-byte tasks are negated losses (-1.55 = 1.55 bits per byte on
    # average after the last stage): shown as they are, not as percent, in every format.
    loss = {"task_metric": "bits_per_byte", "sequence": "cpt-en-de"}
    write_methods(tmp_path, {"seq-ft": [-1.55, -1.60], "cpt-rewarm": [-1.88, -1.90]}, **loss)
    for seed, aa in enumerate([0.50, 0.52]):
        write_run(tmp_path, f"classification-s{seed}", seed=seed, aa=aa)
    frame = load_runs([str(tmp_path)])
    text = tables(frame, metrics=["aa"], baseline="seq-ft", decimals=3)
    assert "### cpt-en-de, smollm2-135m, in bits/byte" in text
    assert "### standard-cl-order1, smollm2-135m\n" in text
    assert "**-1.575 ± 0.035**" in text and "-1.890 ± 0.014" in text and "51.000 ± 1.414" in text
    assert "tables titled with bits/byte hold that unit instead of percent" in text
    assert "|   diff |" in text and "-0.315" in text  # the tests' column is in the table's unit
    csv = pd.read_csv(io.StringIO(tables(frame, "csv", metrics=["aa"], decimals=3)), comment="#")
    assert sorted(zip(csv["unit"], csv["mean"], strict=True)) == [
        ("%", 51.0),
        ("bits/byte", -1.89),
        ("bits/byte", -1.575),
    ]
    only_accuracy = tables(frame[frame["unit"] == "%"], metrics=["aa"], baseline="seq-ft")
    assert "in bits/byte" not in only_accuracy and "hold that unit" not in only_accuracy


ORDERS = {1: ("fp-a", "fp-b", "fp-c"), 2: ("fp-b", "fp-c", "fp-a")}


def two_orders(root: Path) -> pd.DataFrame:
    """seq-ft on orders 1 and 2, 3 seeds each: aa 0.40, 0.42, 0.44 (sd 0.02) and 0.50, 0.54,
    0.58 (sd 0.04); pooled within-order sd sqrt((2 * 0.02² + 2 * 0.04²) / 4) = 0.0316, and the
    sd of the order means 0.42 and 0.54 is 0.12 / sqrt(2) = 0.0849. Replay on order 1 only."""
    values = {1: [0.40, 0.42, 0.44], 2: [0.50, 0.54, 0.58]}
    for order, aas in values.items():
        for seed, aa in enumerate(aas):
            sequence, fingerprints = f"standard-cl-order{order}", ORDERS[order]
            options = dict(sequence=sequence, seed=seed, aa=aa, fingerprints=fingerprints)
            write_run(root, f"seq-ft-o{order}-s{seed}", **options)
            if order == 1:
                write_run(root, f"replay-o1-s{seed}", method="replay", **options)
    return load_runs([root])


def test_order_spread_separates_seeds_from_orders(tmp_path):
    grouped = comparable_groups(two_orders(tmp_path), average_orders=True)[0]
    spread = order_spread(grouped, ["aa"]).set_index("row")
    assert spread.loc["seq-ft", "n_orders"] == 2
    assert spread.loc["seq-ft", "std_seeds"] == pytest.approx(math.sqrt(0.001))
    assert spread.loc["seq-ft", "std_orders"] == pytest.approx(0.12 / math.sqrt(2))
    assert spread.loc["replay", "std_seeds"] == pytest.approx(0.02)  # one order: its own sd
    assert math.isnan(spread.loc["replay", "std_orders"])  # one order mean has no spread


def test_averaged_orders_show_the_spread_over_seeds_and_over_orders(tmp_path):
    frame = two_orders(tmp_path)
    text = tables(frame, metrics=["aa"], average_orders=True)
    spread = text.split("Spread (%): over seeds within an order (pooled) / over orders")[1]
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in spread.splitlines()]
    rows = {line[0]: line[1:] for line in cells if line}
    assert rows["method"] == ["orders", "AA ↑"]
    assert rows["seq-ft"] == ["2", "3.2 / 8.5"] and rows["replay"] == ["1", "2.0 / n/a"]
    assert "pooled over the orders / the standard deviation of the order means" in text
    assert "Spread (%)" not in tables(frame, metrics=["aa"])  # orders apart: no spread

    csv = tables(frame, "csv", metrics=["aa"], average_orders=True, decimals=2)
    rows = pd.read_csv(io.StringIO(csv), comment="#").set_index("row")
    assert rows.loc["seq-ft", "std_seeds"] == 3.16 and rows.loc["seq-ft", "std_orders"] == 8.49
    assert rows.loc["seq-ft", "n_orders"] == 2 and rows.loc["seq-ft", "std"] != 3.16

    latex = tables(frame, "latex", metrics=["aa"], average_orders=True)
    assert latex.count(r"\begin{table}") == 2
    assert "seq-ft & 2 & 3.2 / 8.5" in latex


# ---- command line -----------------------------------------------------------------------------


def test_cli_report_of_a_folder_of_runs(tmp_path, capsys):
    three_methods(tmp_path / "runs")
    assert main(["report", str(tmp_path / "runs"), "--baseline", "seq-ft", "--metrics", "aa"]) == 0
    out = capsys.readouterr().out
    assert "| replay" in out and "### Tests against seq-ft" in out

    glob = str(tmp_path / "runs" / "*")
    assert main(["report", glob, "--format", "latex", "--average-orders", "--decimals", "2"]) == 0
    assert r"\toprule" in capsys.readouterr().out


def test_cli_report_of_one_run_prints_its_matrix(tmp_path, capsys):
    run = write_run(tmp_path, "only")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| 0: before training" in out and "average accuracy (aa)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics", "aa,acc"], "unknown metric 'acc'"),
        (["--baseline", "nobody"], "unknown baseline method 'nobody'"),
        (["--decimals", "-1"], "--decimals must be >= 0"),
    ],
)
def test_cli_report_bad_options_exit_2(tmp_path, capsys, argv, message):
    three_methods(tmp_path / "runs")
    assert main(["report", str(tmp_path / "runs"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_report_of_a_file_that_is_no_results_exits_2(tmp_path, capsys):
    three_methods(tmp_path / "runs")
    notes = tmp_path / "notes.txt"
    notes.write_text("not results", encoding="utf-8")
    assert main(["report", str(tmp_path / "runs"), str(notes)]) == 2
    assert str(notes) in capsys.readouterr().err


def with_probes(folder: Path, drops: list[float]) -> None:
    """Add a probe matrix to the run in `folder` whose probes drop by `drops`."""
    path = folder / "results.json"
    run = json.loads(path.read_text(encoding="utf-8"))
    before = [0.6] * len(drops)
    after = [0.6 - d for d in drops]
    run["probes"] = {
        "names": [f"probe{j}" for j in range(len(drops))],
        "metrics": ["acc,none"] * len(drops),
        "matrix": [before, before, before, after],
        "general_forgetting": drops,
    }
    path.write_text(json.dumps(run), encoding="utf-8")


def test_general_forgetting_is_reported_next_to_aa_for_runs_with_probes(tmp_path, capsys):
    for seed, drops in enumerate([[0.1, 0.3], [0.2, 0.2], [0.3, 0.1]]):
        with_probes(write_run(tmp_path / "runs", f"lwf-s{seed}", method="lwf", seed=seed), drops)
    write_run(tmp_path / "runs", "seq-ft-s0", method="seq-ft")  # no probes: gf is n/a
    frame = load_runs([tmp_path / "runs"])
    assert sorted(frame["gf"].round(6).dropna()) == [0.2, 0.2, 0.2]
    assert main(["report", str(tmp_path / "runs"), "--format", "csv"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out), comment="#")
    gf = rows[(rows["metric"] == "gf") & (rows["method"] == "lwf")]
    assert gf["mean"].iloc[0] == pytest.approx(20.0)
    assert main(["report", str(tmp_path / "runs"), "--metrics", "aa,bwt"]) == 0
    assert "gf" not in capsys.readouterr().out.lower().split("notes")[0]


def test_one_run_report_shows_its_probe_matrix(tmp_path, capsys):
    run = write_run(tmp_path, "only")
    with_probes(run, [0.25])
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "general-ability probes" in out and "probe0 (acc,none)" in out
    assert "| general forgetting (row 0 - last) |" in out and "25.0" in out
