"""A protocol's power criteria: synthetic seq-ft, replay and joint runs under `cpu-small`, one
where every criterion holds and one per criterion that fails; the refusals; the CLI; and the
committed baseline results, when there are any."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_report import results

from clbench.cli import main
from clbench.data.protocol import load_protocol
from clbench.errors import ClbenchError
from clbench.reporting.recompute import recompute_metrics
from clbench.reporting.tables import power_table
from clbench.results.load import read_runs
from clbench.results.power import JOINT, LOWER, UPPER, check_power
from clbench.results.schema import Results

PROTOCOL = load_protocol("cpu-small")
STRICT = dataclasses.replace(PROTOCOL, small_test_sets=None)  # no test-size exemption
SEQUENCE = PROTOCOL.sequences[0]
BASELINES = REPO / "benchmarks" / "results" / "baselines"
NAMES = [
    "seq-ft learns every task",
    "seq-ft forgets",
    "replay beats seq-ft",
    "joint holds up to replay",
    "test sets are large enough",
]
ZERO_SHOT = [0.3, 0.3, 0.3]


def final_rows() -> dict[str, list[list[float]]]:
    """Each method's last matrix row per seed (0, 1, 2): every criterion holds."""
    return {
        LOWER: [[0.40 + 0.01 * s, 0.50, 0.80] for s in range(3)],
        UPPER: [[0.70, 0.75 + 0.02 * s, 0.80] for s in range(3)],
        JOINT: [[0.72, 0.76 + 0.01 * s, 0.80] for s in range(3)],
    }


def seq_ft_matrix(last: list[float], learned: float = 0.8) -> list[list[float]]:
    """Zero-shot 0.3, each task at `learned` right after its stage, `last` after the last."""
    return [ZERO_SHOT, [learned, 0.3, 0.3], [0.5, learned, 0.3], last]


def power_run(method: str, seed: int, matrix: list[list[float]], test_size: int = 250) -> dict:
    """A results.json of cpu-small's first order; its metrics follow from its matrix."""
    content = results(f"{method}-s{seed}", sequence=SEQUENCE, method=method, seed=seed)
    del content["metrics"]  # computed from the matrix on reading
    for task in content["sequence"]["tasks"]:
        task["test_size"] = test_size
    return content | {"matrix": matrix, "protocol": PROTOCOL.record()}


def all_runs(
    rows: dict[str, list[list[float]]] | None = None, learned: float = 0.8, **options: Any
) -> list[dict]:
    rows = rows or final_rows()
    return [
        power_run(method, seed, seq_ft_matrix(last, learned), **options)
        for method, lasts in rows.items()
        for seed, last in enumerate(lasts)
    ]


def check(runs: list[dict], protocol=STRICT) -> dict[str, Any]:
    return {c.name: c for c in check_power([Results.from_json(r) for r in runs], protocol)}


def failing(criteria: dict[str, Any]) -> list[str]:
    return [name for name, criterion in criteria.items() if not criterion.passed]


def test_every_criterion_holds_with_its_numbers():
    criteria = check(all_runs())
    assert list(criteria) == NAMES and failing(criteria) == []
    learned = criteria["seq-ft learns every task"].numbers["gain"]
    assert learned == pytest.approx({"task-fp-a": 0.5, "task-fp-b": 0.5, "task-fp-c": 0.5})
    forgets = criteria["seq-ft forgets"].numbers
    assert forgets["mean"] == pytest.approx(-0.345) and forgets["ci_high"] < 0
    assert forgets["ci_method"] == "t" and forgets["n"] == 3
    beats = criteria["replay beats seq-ft"].numbers
    assert beats["test"] == "paired t" and beats["family"] == 1
    assert beats["p_holm"] == beats["p"] < 0.05  # a family of one: Holm leaves p as it is
    assert beats["diff"] == pytest.approx((0.55 + 0.01) / 3)
    joint = criteria["joint holds up to replay"].numbers
    assert joint["diff"] == pytest.approx(0.02 / 3)  # (0.03 - 0.01 s) / 3, mean over s
    assert criteria["test sets are large enough"].numbers["test_size"]["task-fp-a"] == 250


def test_a_task_not_learned_fails():
    runs = all_runs()
    for run in runs:
        if run["method"]["name"] == LOWER:
            run["matrix"][2][1] = 0.35  # task 2 only 5 points above zero-shot
    criterion = check(runs)["seq-ft learns every task"]
    assert not criterion.passed
    assert criterion.numbers["gain"]["task-fp-b"] == pytest.approx(0.05)
    assert "task-fp-b +5.0" in criterion.measured and "task-fp-a +50.0" in criterion.measured
    exactly_ten = check(all_runs(learned=0.4))["seq-ft learns every task"]  # 0.4 - 0.3 < 0.1
    assert exactly_ten.passed and exactly_ten.numbers["gain"]["task-fp-a"] == pytest.approx(0.1)


def test_a_bwt_interval_containing_zero_fails():
    rows = final_rows()
    rows[LOWER] = [[0.45 + d, 0.45, 0.45] for d in (-0.4, 0.2, -0.05)]  # BWT -0.2, 0.1, -0.025
    criteria = check(all_runs(rows, learned=0.45))
    forgets = criteria["seq-ft forgets"]
    assert failing(criteria) == ["seq-ft forgets"]
    assert forgets.numbers["mean"] < 0 < forgets.numbers["ci_high"]
    assert "BWT -4.2 [" in forgets.measured


def test_replay_not_significantly_better_fails():
    rows = final_rows()
    rows[UPPER] = [
        [a + d, b, c] for (a, b, c), d in zip(rows[LOWER], (0.06, -0.03, 0.0), strict=True)
    ]
    rows[JOINT] = copy.deepcopy(rows[UPPER])
    criteria = check(all_runs(rows))
    beats = criteria["replay beats seq-ft"]
    assert failing(criteria) == ["replay beats seq-ft"]
    assert beats.numbers["diff"] > 0 and beats.numbers["p_holm"] >= 0.05
    assert "p_holm" in beats.measured


def test_joint_below_replay_by_more_than_one_se_fails():
    rows = final_rows()
    rows[JOINT] = [[a - 0.1, b - 0.1 + 0.01 * s, c] for s, (a, b, c) in enumerate(rows[UPPER])]
    criteria = check(all_runs(rows))
    joint = criteria["joint holds up to replay"]
    assert failing(criteria) == ["joint holds up to replay"]
    assert joint.numbers["diff"] < -joint.numbers["se"] < 0
    assert "AA joint - replay -6.3" in joint.measured


def test_a_small_test_set_fails():
    runs = all_runs()
    runs[0]["sequence"]["tasks"][2]["test_size"] = 100
    criteria = check(runs)
    sizes = criteria["test sets are large enough"]
    assert failing(criteria) == ["test sets are large enough"]
    assert sizes.numbers["test_size"] == {"task-fp-a": 250, "task-fp-b": 250, "task-fp-c": 100}
    assert "task-fp-c 100" in sizes.measured


def test_a_protocol_may_state_why_its_test_sets_are_smaller():
    runs = all_runs(test_size=100)
    exempt = dataclasses.replace(STRICT, small_test_sets="200 would double the evaluation")
    sizes = check(runs, exempt)["test sets are large enough"]
    assert sizes.passed and sizes.numbers["exempted"]
    assert "exemption: 200 would double the evaluation" in sizes.measured
    assert not check(runs)["test sets are large enough"].passed
    unknown = check(all_runs(test_size=None), exempt)["test sets are large enough"]
    assert not unknown.passed and not unknown.numbers["exempted"]


def test_other_methods_are_left_out():
    runs = [*all_runs(), power_run("ewc", 0, seq_ft_matrix([0.1, 0.1, 0.1]))]
    assert failing(check(runs)) == []


def without(method: str = "", run_id: str = "") -> Any:
    return lambda runs: [r for r in runs if method != r["method"]["name"] and run_id != r["run_id"]]


def last_run(**fields: Any) -> Any:
    """The runs with the last one (joint, seed 2) changed; a field set to None is dropped."""
    return lambda runs: [
        *runs[:-1],
        {k: v for k, v in (runs[-1] | fields).items() if v is not None},
    ]


def renamed(sequence: str) -> Any:
    return lambda runs: [
        *runs[:-1],
        runs[-1] | {"sequence": runs[-1]["sequence"] | {"name": sequence}},
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (without(method=JOINT), "no joint run"),
        (without(run_id="replay-s2"), "no replay run .* seed 2"),
        (last_run(method={"name": UPPER, "hyperparameters": {}}), "several runs of seed 2"),
        (last_run(protocol=None), "different protocols are mixed .*none: joint-s2"),
        (last_run(protocol={**PROTOCOL.record(), "version": 9}), "different protocols are mixed"),
        (renamed("standard-cl-order2"), "several sequences are mixed"),
        (lambda runs: [r | {"budget": {"steps": r["seed"]}} for r in runs], "cannot be compared"),
    ],
)
def test_refusals_name_what_is_missing_or_mixed(change, message):
    with pytest.raises(ClbenchError, match=message):
        check(change(all_runs()))


def test_runs_of_another_protocol_are_refused():
    other = copy.deepcopy(PROTOCOL)
    other.version += 1
    with pytest.raises(ClbenchError, match=f"made under protocol cpu-small v{PROTOCOL.version}"):
        check_power([Results.from_json(run) for run in all_runs()], other)


def test_power_table_formats():
    criteria = list(check(all_runs(rows=None)).values())
    text = power_table(criteria)
    assert text.count("| PASS") == 5 and text.endswith("all 5 criteria hold\n")
    assert r"$\geq$" in power_table(criteria, "latex")
    assert power_table(criteria, "csv").splitlines()[0] == "criterion,requires,measured,result"


def write(root: Path, runs: list[dict]) -> Path:
    for run in runs:
        folder = root / run["run_id"]
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(run), encoding="utf-8")
    return root


def test_cli_report_power_exits_0_and_names_the_failures(tmp_path, capsys):
    assert main(["report", str(write(tmp_path / "good", all_runs())), "--power"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 5 and "all 5 criteria hold" in out

    bad = all_runs(test_size=None)  # unknown sizes fail, exemption or not
    assert main(["report", str(write(tmp_path / "bad", bad)), "--power"]) == 0
    out = capsys.readouterr().out
    assert out.count("| PASS") == 4 and "| FAIL" in out
    assert out.rstrip().endswith("FAIL: test sets are large enough")


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--baseline", "seq-ft"], "drop --baseline"), (["--average-orders"], "--average-orders")],
)
def test_cli_report_power_refuses_table_options(tmp_path, capsys, extra, message):
    assert main(["report", str(write(tmp_path, all_runs())), "--power", *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_report_power_of_runs_without_a_protocol_exits_2(tmp_path, capsys):
    runs = [{k: v for k, v in run.items() if k != "protocol"} for run in all_runs()]
    assert main(["report", str(write(tmp_path, runs)), "--power"]) == 2
    assert "have no protocol" in capsys.readouterr().err


def test_cpu_small_power_committed():
    """The criteria on the committed baseline runs of cpu-small's first order, 3 seeds."""
    files = sorted(BASELINES.rglob("results.json")) if BASELINES.is_dir() else []
    found = recompute_metrics(read_runs(files), warn=lambda text: None) if files else []
    runs = [
        run
        for run in found
        if run.protocol is not None
        and run.protocol.name == PROTOCOL.name
        and run.sequence.name == SEQUENCE
    ]
    for method in (LOWER, UPPER, JOINT):
        seeds = {run.seed for run in runs if run.method.name == method}
        if not set(PROTOCOL.seeds) <= seeds:
            pytest.skip(
                f"no committed {method} runs of {PROTOCOL.name} on {SEQUENCE} for seeds "
                f"{PROTOCOL.seeds} under {BASELINES.relative_to(REPO)} yet"
            )
    criteria = check_power(runs, PROTOCOL)
    failed = [f"{c.name}: {c.measured}" for c in criteria if not c.passed]
    assert not failed, failed
