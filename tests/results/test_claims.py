"""`clbench report --claims`: published orderings checked with a test and a verdict, each claim
its own Holm family."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from test_report import results, write_methods

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.reporting.tables import claims_table
from clbench.results.claims import HOLDS, NOT_SHOWN, REVERSED, check_claims, parse_claims
from clbench.results.load import load_runs
from clbench.results.stats import holm

# Paired by seed: replay is clearly above seq-ft, ewc level with it, joint above both.
AA = {
    "seq-ft": [0.40, 0.42, 0.45],
    "replay": [0.55, 0.58, 0.59],
    "ewc": [0.41, 0.40, 0.47],
    "joint": [0.60, 0.61, 0.66],
}


@pytest.fixture
def runs(tmp_path):
    write_methods(tmp_path, AA)  # fgt = 1 - aa
    return load_runs([tmp_path])


def test_strict_claims_hold_are_reversed_or_not_shown(runs):
    checked = check_claims(runs, parse_claims("replay>seq-ft, seq-ft>replay, ewc>seq-ft"))
    assert list(checked["verdict"]) == [HOLDS, REVERSED, NOT_SHOWN]
    first = checked.iloc[0]
    expected = stats.ttest_rel(AA["replay"], AA["seq-ft"])
    assert first["test"] == "paired t" and first["p"] == pytest.approx(expected.pvalue)
    assert first["p_holm"] == first["p"]  # a claim of one comparison is its own family
    assert first["mean_diff"] == pytest.approx(np.mean(AA["replay"]) - np.mean(AA["seq-ft"]))
    assert (first["n_left"], first["n_right"]) == (3, 3)


def test_every_other_method_is_one_holm_family(runs):
    checked = check_claims(runs, parse_claims("joint>=*"))
    assert list(checked["right"]) == ["ewc", "replay", "seq-ft"]  # the table's row order
    assert list(checked["p_holm"]) == pytest.approx(list(holm(checked["p"])))
    assert set(checked["verdict"]) == {HOLDS}
    # Against a method that is better, a non-strict claim is reversed once that is shown.
    reversed_ = check_claims(runs, parse_claims("seq-ft>=joint"))
    assert list(reversed_["verdict"]) == [REVERSED]


def test_a_metric_is_compared_as_numbers(runs):
    # fgt = 1 - aa: replay forgets less than seq-ft.
    checked = check_claims(runs, parse_claims("fgt:replay<seq-ft"))
    assert checked.iloc[0]["metric"] == "fgt" and checked.iloc[0]["verdict"] == HOLDS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replay=seq-ft", r"expected \[METRIC:\]LEFT OP RIGHT"),
        ("accuracy:replay>seq-ft", "unknown metric of claim"),
        ("replay>replay", "compares a row with itself"),
        (" , ", "no claim given"),
    ],
)
def test_bad_claims_name_the_claim(text, message):
    with pytest.raises(ClbenchError, match=message):
        parse_claims(text)


def test_a_claim_about_absent_methods_names_the_rows(runs):
    with pytest.raises(ClbenchError, match=r"'o-lora>lora-seq'.*rows are ewc, joint, replay"):
        check_claims(runs, parse_claims("o-lora>lora-seq"))


def test_report_prints_the_claims(tmp_path, capsys):
    # The report recomputes the metrics from the matrix: its last row gives each run's AA.
    for method, values in AA.items():
        for seed, aa in enumerate(values):
            run = results(f"{method}-s{seed}", method=method, seed=seed)
            run["matrix"][-1] = [aa, aa, aa]
            folder = tmp_path / run["run_id"]
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps(run), encoding="utf-8")
    assert main(["report", str(tmp_path), "--claims", "replay>seq-ft,joint>=*"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if "replay vs seq-ft" in row)
    assert "| holds" in line and "15.0" in line  # the difference in points
    assert out.count("joint vs") == 3 and "Each claim is its own Holm family" in out
    assert main(["report", str(tmp_path), "--power", "--claims", "replay>seq-ft"]) == 2
    assert "drop --claims" in capsys.readouterr().err


def test_claims_on_loss_scored_runs_are_in_the_loss_unit(tmp_path):
    # AA of bits-per-byte tasks is the negated loss: -1.55 vs -1.91, a difference of 0.36 bits
    # per byte, shown as such and not as 36.0 percent points.
    values = {"replay": [-1.50, -1.55, -1.60], "seq-ft": [-1.86, -1.90, -1.97]}
    write_methods(tmp_path, values, task_metric="bits_per_byte", sequence="cpt-en-de")
    checked = check_claims(load_runs([tmp_path]), parse_claims("replay>seq-ft"))
    text = claims_table(checked, decimals=2)
    line = next(row for row in text.splitlines() if "replay vs seq-ft" in row)
    assert "cpt-en-de, smollm2-135m, in bits/byte" in line
    assert "-1.55 vs -1.91" in line and "| 0.36 " in line and "holds" in line
