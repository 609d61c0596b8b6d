"""The flags of `clbench run` are generated from RunConfig: every field has one, every flag sets
its field, every flag is described, and docs/cli.md names every field."""

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field

import pytest
from conftest import REPO

import clbench.cli
import clbench.training.runner
from clbench.cli import add_config_flags, config_flag_values, main
from clbench.config import RunConfig, build_dataclass

FIELDS = dataclasses.fields(RunConfig)
HINTS = typing.get_type_hints(RunConfig)
DOCS = REPO / "docs" / "cli.md"


def _flag(item: dataclasses.Field) -> str:
    return item.metadata.get("flag", "--" + item.name.replace("_", "-"))


def _sample(item: dataclasses.Field) -> tuple[list[str], object]:
    """Command-line words that set `item` to a value other than its default, and that value."""
    hint = HINTS[item.name]
    if typing.get_origin(hint) is types.UnionType:  # X | None
        (hint,) = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    base = typing.get_origin(hint) or hint
    flag, default = _flag(item), getattr(RunConfig(), item.name)
    if base is dict:
        return [flag, "alpha=0.5", flag, "tag=yes", flag, "name=x"], {
            "alpha": 0.5,
            "tag": True,
            "name": "x",
        }
    if base is list:
        return [flag, "first", flag, "second"], ["first", "second"]
    if base is bool:
        return [f"--no-{flag[2:]}" if default else flag], not default
    if base is int:
        value = (default or 0) + 3
    elif base is float:
        value = (default or 0.0) + 0.25
    else:
        value = "sample"
    return [flag, str(value)], value


def _parsed(monkeypatch, words: list[str]) -> argparse.Namespace:
    """The namespace `clbench run WORDS` hands to its handler."""
    seen = []
    monkeypatch.setattr(clbench.cli, "_run", seen.append)
    assert main(["run", *words]) == 0
    return seen[0]


@pytest.mark.parametrize("item", FIELDS, ids=[item.name for item in FIELDS])
def test_every_flag_sets_its_field(item, monkeypatch):
    words, expected = _sample(item)
    assert expected != getattr(RunConfig(), item.name)
    given = config_flag_values(_parsed(monkeypatch, words), RunConfig)
    assert given == {item.name: expected}  # and no other field: the rest keep their defaults
    assert getattr(build_dataclass(RunConfig, given, "test"), item.name) == expected


def test_flags_left_out_keep_the_config_file(tmp_path, monkeypatch):
    configs = []
    monkeypatch.setattr(
        clbench.training.runner, "run", lambda c, **_: configs.append(c) or tmp_path
    )
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 2\nlora_r: 16\nprobes: [a]\nmethod_args: {k: 1}\n")
    words = ["--config", str(config), "--lora-r", "4", "--lora-alpha", "8"]
    assert main(["run", *words, "--weight-decay", "0.1", "--peft", "lora"]) == 0
    (got,) = configs
    assert (got.lora_r, got.lora_alpha, got.weight_decay, got.peft) == (4, 8, 0.1, "lora")
    assert (got.batch_size, got.probes, got.method_args) == (2, ["a"], {"k": 1})
    assert got.seed == RunConfig().seed


def test_none_comma_lists_and_repeats(monkeypatch):
    words = ["--steps-per-task", "none", "--peft", "none", "--probes", "arc_easy, boolq,"]
    words += ["--probes", "piqa", "--probe-include", "a,b", "--probe-include", "c"]
    given = config_flag_values(_parsed(monkeypatch, words), RunConfig)
    assert given == {
        "steps_per_task": None,
        "peft": None,
        "probes": ["arc_easy", "boolq", "piqa"],
        "probe_include": ["a,b", "c"],  # folders are not split on commas
    }


def test_bad_flag_values(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--lora-r", "four"])
    assert stop.value.code == 2 and "--lora-r: invalid int value: 'four'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--seed", "none"])  # only fields that may be null take `none`
    assert main(["run", "--method-arg", "k=[1"]) == 2
    assert "--method-arg 'k=[1': VALUE is not valid YAML" in capsys.readouterr().err


def test_help_describes_every_flag(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: argparse breaks lines at hyphens
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for item in FIELDS:
        described = item.metadata["help"].strip()
        assert described and not described.startswith("(default")
        shown = " ".join(described.split())
        assert f"{_flag(item)} " in text and shown in text, item.name


@dataclass
class _Example:
    name: str = field(default="a", metadata={"help": "a name, 100% free"})
    verbose: bool = field(default=False, metadata={"help": "say more"})
    scale: float | None = field(default=1.0, metadata={"help": "a factor"})
    sizes: list[int] = field(default_factory=list, metadata={"help": "sizes", "separator": ":"})


def test_generation_from_any_dataclass(capsys):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Example)
    words = ["--verbose", "--scale", "none", "--sizes", "1:2", "--sizes", "3"]
    given = config_flag_values(parser.parse_args(words), _Example)
    assert given == {"verbose": True, "scale": None, "sizes": [1, 2, 3]}
    assert config_flag_values(parser.parse_args(["--no-verbose"]), _Example) == {"verbose": False}
    assert config_flag_values(parser.parse_args([]), _Example) == {}
    parser.print_help()
    help_text = capsys.readouterr().out
    assert "100% free (default: a)" in help_text and "--sizes N[:N...]" in help_text


def test_a_field_without_help_is_refused():
    @dataclass
    class Undocumented:
        size: int = 1

    with pytest.raises(TypeError, match=r"Undocumented\.size has no help metadata"):
        add_config_flags(argparse.ArgumentParser(), Undocumented)


def test_docs_name_every_field():
    text = DOCS.read_text(encoding="utf-8")
    for item in FIELDS:
        assert f"`{item.name}`" in text, f"docs/cli.md does not name {item.name}"
