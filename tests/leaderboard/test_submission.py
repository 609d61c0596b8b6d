"""Leaderboard submissions: submit, every rejection with its own message, property tests."""

import copy
import json
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.leaderboard import submission
from clbench.leaderboard.submission import submit, validate_all, validate_file
from clbench.results.load import load_runs


@pytest.fixture
def valid(default_runs: list[Path], tmp_path: Path) -> Path:
    """A freshly submitted, valid submission file."""
    (path,) = submit([str(d) for d in default_runs], tmp_path / "lb", paper="https://example.org/p")
    return path


def rewrite(path: Path, change) -> Path:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return path


def errors_of(path: Path) -> str:
    checked = validate_file(path)
    assert not checked.ok, "expected a rejection"
    return "\n".join(checked.errors)


def test_a_valid_submission_passes_and_holds_every_run(valid: Path) -> None:
    checked = validate_file(valid)
    assert checked.ok, checked.errors
    assert checked.flags == []
    content = json.loads(valid.read_text())
    assert (
        valid.relative_to(valid.parents[2]).as_posix()
        == "submissions/default/seq-ft__tiny-random.json"
    )
    assert [r["seed"] for r in content["runs"]] == [0, 1, 2]
    assert content["paper"] == "https://example.org/p"
    # where the run was written and read its data on the submitter's machine is not published
    assert all(
        not {"output", "data_dir", "probe_include"} & set(r["config"]) for r in content["runs"]
    )


def test_a_tampered_metric_is_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][1]["metrics"].update(aa=0.99))
    assert "runs[1].metrics.aa is 0.99 but the matrix gives" in errors_of(valid)


def add_probes(content: dict) -> None:
    for run in content["runs"]:
        matrix = [[0.6, 0.5], [0.55, 0.5], [0.5, 0.45], [0.4, 0.5]]
        run["probes"] = {"names": ["arc_easy", "review-food"], "matrix": matrix}
        run["probes"]["general_forgetting"] = [0.6 - 0.4, 0.5 - 0.5]
        run["metrics"]["gf"] = (0.6 - 0.4 + 0.5 - 0.5) / 2  # the mean over the probes


def test_probe_results_are_checked_and_general_forgetting_recomputed(valid: Path) -> None:
    rewrite(valid, add_probes)
    assert validate_file(valid).ok, validate_file(valid).errors
    rewrite(valid, lambda c: c["runs"][1]["metrics"].update(gf=0.5))
    assert "runs[1].metrics.gf is 0.5 but the matrix gives 0.0999" in errors_of(valid)
    rewrite(valid, lambda c: c["runs"][1]["metrics"].update(gf=0.1))
    rewrite(valid, lambda c: c["runs"][2]["probes"].update(general_forgetting=[0.0, 0.0]))
    assert "runs[2].probes.general_forgetting is [0.0, 0.0] but probes.matrix gives" in errors_of(
        valid
    )
    rewrite(valid, lambda c: c["runs"][0]["probes"]["matrix"].pop())
    assert "runs[0].probes.matrix is 3 x 2; expected 4 x 2 (a row per matrix row)" in errors_of(
        valid
    )


def test_a_wrong_shape_is_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][0]["matrix"].pop())
    assert "runs[0].matrix is 3 x 3; expected 4 x 3 (T+1 rows of the T tasks)" in errors_of(valid)


def test_a_value_outside_0_1_is_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][0]["matrix"][2].__setitem__(1, 1.5))
    assert "runs[0].matrix[2][1] is 1.5; expected a number in [0, 1]" in errors_of(valid)


def test_an_unknown_task_is_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][2]["sequence"]["tasks"][0].update(name="review-pets"))
    text = errors_of(valid)
    assert "runs[2].sequence.tasks are ['review-pets', 'review-food', 'review-negative']" in text
    assert "default is registered as ['review-positive'" in text


def test_an_unknown_sequence_is_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][0]["sequence"].update(name="my-private-sequence"))
    assert "runs[0].sequence.name: unknown sequence 'my-private-sequence'" in errors_of(valid)


def test_a_wrong_fingerprint_is_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][0]["sequence"]["tasks"][1].update(fingerprint="sha256:0"))
    text = errors_of(valid)
    assert "runs[0].sequence.tasks[1].fingerprint 'sha256:0' does not match" in text
    assert "not on the same examples" in text


def test_other_data_sizes_are_not_the_registered_data(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][0]["budget"].update(max_test_examples=4))
    assert "runs[0].sequence.tasks[0].fingerprint" in errors_of(valid)


def test_malformed_json_is_rejected(valid: Path) -> None:
    valid.write_text(valid.read_text()[:-20])
    assert "malformed JSON at line" in errors_of(valid)


def test_nan_is_not_json(valid: Path) -> None:
    valid.write_text(valid.read_text().replace('"aa": ', '"aa": NaN, "x": ', 1))
    assert "NaN is not JSON" in errors_of(valid)


def test_a_huge_file_is_rejected_before_it_is_read(valid: Path, monkeypatch) -> None:
    monkeypatch.setattr(submission, "MAX_BYTES", 1000)
    assert "over the 1000-byte limit" in errors_of(valid)


def test_a_pickle_disguised_as_json_is_rejected(valid: Path) -> None:
    valid.write_bytes(pickle.dumps(json.loads(valid.read_text())))
    assert "a Python pickle, not JSON" in errors_of(valid)


def test_missing_budget_and_hyperparameters_are_rejected(valid: Path) -> None:
    def strip(content: dict) -> None:
        del content["runs"][0]["budget"]["lr"]
        del content["runs"][1]["method"]["hyperparameters"]

    text = errors_of(rewrite(valid, strip))
    assert "runs[0].budget.lr is missing" in text
    assert "runs[1].method.hyperparameters is missing" in text


def test_runs_that_cannot_be_averaged_are_rejected(valid: Path) -> None:
    rewrite(valid, lambda c: c["runs"][2]["budget"].update(lr=0.5))
    assert "runs: not comparable, kept apart" in errors_of(valid)


def test_a_link_must_be_http(valid: Path) -> None:
    rewrite(valid, lambda c: c.update(code="javascript:alert(1)"))
    assert "field 'code' is 'javascript:alert(1)'; expected an http(s) URL" in errors_of(valid)


def test_flags_few_seeds_task_identity_and_memory(default_runs: list[Path], tmp_path: Path) -> None:
    (path,) = submit([str(default_runs[0])], tmp_path / "lb")

    def declare(content: dict) -> None:
        content["runs"][0]["method"].update(uses_task_id=True, extra_memory="a buffer")

    checked = validate_file(rewrite(path, declare))
    assert checked.flags == [
        "fewer than 3 seeds (1 on default)",
        "uses the task id at inference",
        "extra memory: a buffer",
    ]


def test_submit_writes_nothing_when_a_run_is_invalid(default_runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    results = json.loads((default_runs[0] / "results.json").read_text())
    results["metrics"]["bwt"] = 0.5
    bad.write_text(json.dumps(results))
    with pytest.raises(ClbenchError, match=r"metrics\.bwt is 0\.5 but the matrix gives"):
        submit([str(default_runs[1]), str(bad)], tmp_path / "lb")
    assert not (tmp_path / "lb").exists()


def test_submit_does_not_overwrite_without_replace(valid: Path, default_runs: list[Path]) -> None:
    root = valid.parents[2]
    with pytest.raises(ClbenchError, match="exists; pass --replace"):
        submit([str(default_runs[0])], root)
    submit([str(default_runs[0])], root, replace=True)
    assert len(json.loads(valid.read_text())["runs"]) == 1


def test_validate_all_rejects_stray_and_misplaced_files(valid: Path) -> None:
    root = valid.parents[2]
    (valid.parent / "model.pkl").write_bytes(b"\x80\x04")
    valid.rename(valid.parent / "renamed.json")
    valid.with_suffix("").rename(valid.parent / "renamed")  # its predictions go with it
    errors = [e for c in validate_all(root) for e in c.errors]
    assert any("model.pkl: not a .json file" in e for e in errors)
    assert any("should be at submissions/default/seq-ft__tiny-random.json" in e for e in errors)


def test_cli_validate_fails_on_a_bad_submission(valid: Path, capsys) -> None:
    root = str(valid.parents[2])
    assert main(["leaderboard", "validate", "--leaderboard", root]) == 0
    rewrite(valid, lambda c: c["runs"][0]["metrics"].update(fgt=0.25))
    assert main(["leaderboard", "validate", "--leaderboard", root]) == 1
    captured = capsys.readouterr()
    assert f"error: {valid}: runs[0].metrics.fgt is 0.25" in captured.err
    assert "0 of 1 submissions valid" in captured.out


def test_report_reads_the_runs_of_a_submission(valid: Path) -> None:
    frame = load_runs([str(valid)])
    assert sorted(frame["seed"]) == [0, 1, 2]
    assert set(frame["method"]) == {"seq-ft"}


# ---- property tests ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(value=JSON)
def test_random_json_never_crashes_the_validator(value, tmp_path: Path) -> None:
    path = tmp_path / "random.json"
    path.write_text(json.dumps(value))
    checked = validate_file(path)
    assert checked.ok is False
    assert checked.errors and all(e.startswith(f"{path}: ") for e in checked.errors)


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths_of(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from paths_of(inner, (*prefix, index))


@SETTINGS
@given(data=st.data())
def test_any_field_replaced_by_random_json_gives_a_clear_answer(data, valid: Path) -> None:
    original = json.loads(valid.read_text())
    if data.draw(st.booleans()):  # half the time with probe results to corrupt as well
        add_probes(original)
    paths = [p for p in paths_of(original) if p]
    target = data.draw(st.sampled_from(paths))
    changed = copy.deepcopy(original)
    holder = changed
    for key in target[:-1]:
        holder = holder[key]
    holder[target[-1]] = data.draw(JSON)
    path = valid.parent / "mutated.json"
    path.write_text(json.dumps(changed))
    checked = validate_file(path)  # never raises
    if not checked.ok:
        assert all(
            e.startswith(f"{path}: ") and len(e) > len(str(path)) + 2 for e in checked.errors
        )
