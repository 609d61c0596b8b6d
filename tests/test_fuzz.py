"""Fuzzed task files, sequence files, run configs and grid files: each one loads (or runs its
checks) or gives a ClbenchError, which the CLI prints as one line with exit code 2; never a
traceback. Inputs start from valid files whose fields are kept, dropped, replaced by plausible
values or by junk of any type, or are not YAML mappings at all."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clbench.cli import main
from clbench.config import RunConfig
from clbench.data import registry
from clbench.errors import ClbenchError
from clbench.sweep.grid import load_grid

EXAMPLES = 200
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same inputs on every run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-3, 40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JUNK = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
TEMPLATE = st.sampled_from(["{text}\nAnswer:", " {label}", "{nope}", "{", "{options}", "x"])


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any], plausible: dict[str, Any]) -> dict:
    """`valid` with each field kept, dropped, or replaced, and maybe fields added."""
    out = {}
    for key, value in valid.items():
        how = draw(st.sampled_from(["keep"] * 5 + ["drop", "junk", "plausible"]))
        if how == "keep":
            out[key] = value
        elif how == "junk":
            out[key] = draw(JUNK)
        elif how == "plausible":
            out[key] = draw(plausible.get(key, JUNK))
    keys = st.sampled_from([*plausible, "unknown_field"]) | st.text(max_size=6)
    return out | draw(st.dictionaries(keys, JUNK, max_size=2))


def documents(valid: dict[str, Any], plausible: dict[str, Any]) -> st.SearchStrategy[str]:
    """YAML text: a mutated mapping mostly, else any value or any text."""
    mapping = mutated(valid, plausible).map(yaml.safe_dump)
    return st.one_of(mapping, mapping, mapping, JUNK.map(yaml.safe_dump), st.text(max_size=40))


def _fuzz(strategy: st.SearchStrategy[str], check: Callable[[Path], None], path: Path) -> dict:
    """Write each drawn text to `path` and `check` it; count what happened."""
    seen = {"inputs": 0, "valid": 0, "errors": 0, "tracebacks": []}

    @SETTINGS
    @given(strategy)
    def one(text: str) -> None:
        path.write_text(text, encoding="utf-8")
        seen["inputs"] += 1
        try:
            check(path)
            seen["valid"] += 1
        except ClbenchError:
            seen["errors"] += 1
        except Exception as err:  # a traceback for the user
            seen["tracebacks"].append(f"{type(err).__name__}: {err} <- {text!r}")

    one()
    return seen


def _report(what: str, seen: dict, capsys: pytest.CaptureFixture) -> None:
    with capsys.disabled():
        print(
            f"\nfuzzed {what}: {seen['inputs']} inputs, {seen['valid']} valid, "
            f"{seen['errors']} ClbenchErrors, {len(seen['tracebacks'])} tracebacks"
        )
    assert seen["tracebacks"] == []
    assert seen["valid"] > 0 and seen["errors"] > 0  # both kinds of input were drawn


def _exits_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    """The CLI gives the same input one error line and exit code 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("clbench: error: ") and "Traceback" not in err


TASK_FIELDS = {
    "name": st.text(max_size=8),
    "family": st.sampled_from(["text_classification", "ner", "alignment", "nope"]),
    "source": st.fixed_dictionaries(
        {"generator": st.sampled_from(["review_question", "preferences", "nope"])},
        optional={"args": st.dictionaries(st.sampled_from(["question", "train_size"]), SCALAR)},
    ),
    "prompt": TEMPLATE,
    "target": TEMPLATE,
    "labels": st.lists(st.text(max_size=4), max_size=3),
    "metric": st.sampled_from(["accuracy", "rouge_l", "f1", "nope"]),
    "include": st.sampled_from(["_base.yaml", "missing.yaml"]),
    "objective": st.sampled_from(["sft", "dpo", "nope"]),
}


def test_fuzzed_task_files(tmp_path, capsys):
    def check(path: Path) -> None:
        registry.load_task(str(path)).load(None, 8, 4)

    write_task(tmp_path, "fz", "food", train=8, test=4)
    valid = yaml.safe_load((tmp_path / "fz.yaml").read_text())
    seen = _fuzz(documents(valid, TASK_FIELDS), check, tmp_path / "fz.yaml")
    _report("task YAML", seen, capsys)
    # One broken file through the CLI, which loads a task file to export it.
    (tmp_path / "fz.yaml").write_text(yaml.safe_dump({**valid, "family": 3}))
    _exits_2(["export-lm-eval", "--task", str(tmp_path / "fz.yaml"), "--out", "x"], capsys)


def test_fuzzed_sequence_files(tiny_tasks, tmp_path, capsys):
    include = (str(tiny_tasks),)
    folder = tmp_path / "sequences"
    folder.mkdir()

    def check(path: Path) -> None:
        sequence = registry.load_sequence(str(path), include)
        for name in sequence.tasks:
            registry.load_task(name, include)

    valid = {"name": "fz-seq", "tasks": ["t-pos", "t-food"]}
    fields = {
        "name": st.text(max_size=8),
        "tasks": st.lists(st.sampled_from(["t-pos", "t-neg", "nope", ""]), max_size=4),
        "description": st.text(max_size=10),
    }
    seen = _fuzz(documents(valid, fields), check, folder / "fz-seq.yaml")
    _report("sequence YAML", seen, capsys)
    (folder / "fz-seq.yaml").write_text(yaml.safe_dump({"name": "s", "tasks": "t-pos"}))
    _exits_2(["run", "--sequence", str(folder / "fz-seq.yaml"), "--model", "tiny-random"], capsys)


RUN_FIELDS = {
    "sequence": st.sampled_from(["tiny", "default", "nope"]),
    "method": st.sampled_from(["seq-ft", "replay", "nope", "mod:Cls"]),
    "method_args": st.dictionaries(st.sampled_from(["buffer_size", "lambda"]), SCALAR),
    "peft": st.sampled_from([None, "lora", "adapters"]),
    "lr": SCALAR,
    "steps_per_task": SCALAR,
    "batch_size": SCALAR,
    "mixed_precision": st.sampled_from(["auto", "no", "fp8"]),
    "probes": st.lists(st.text(max_size=5), max_size=2),
    "seed": SCALAR,
}


def test_fuzzed_run_configs(tmp_path, capsys):
    valid = {"sequence": "tiny", "model": "tiny-random", "steps_per_task": 1, "lr": 0.01}

    def check(path: Path) -> None:
        try:
            RunConfig.from_yaml(path)
        except ClbenchError:
            _exits_2(["run", "--config", str(path)], capsys)  # before anything runs
            raise

    seen = _fuzz(documents(valid, RUN_FIELDS), check, tmp_path / "run.yaml")
    _report("run configs", seen, capsys)


def test_fuzzed_grid_files(tiny_tasks, tmp_path, capsys):
    valid = {
        "base": {"sequence": "tiny", "model": "tiny-random", "steps_per_task": 1},
        "axes": {"method": ["seq-ft", "replay"], "seed": [0, 1]},
        "include": [str(tiny_tasks)],
        "output": str(tmp_path / "sweep"),
    }
    fields = {
        "base": mutated(valid["base"], RUN_FIELDS),
        "axes": st.dictionaries(
            st.sampled_from(["method", "seed", "lr", "nope"]), st.lists(SCALAR, max_size=3)
        ),
        "include": st.lists(st.sampled_from([str(tiny_tasks), "missing"]), max_size=2),
        "backend": st.sampled_from(["local", "slurm", "ray", "nope"]),
        "workers": SCALAR,
        "retries": SCALAR,
        "resources": st.dictionaries(st.sampled_from(["gpus", "cpus", "time"]), SCALAR),
    }
    seen = _fuzz(documents(valid, fields), load_grid, tmp_path / "grid.yaml")
    _report("grid files", seen, capsys)
