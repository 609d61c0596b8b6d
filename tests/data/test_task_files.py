"""Task YAML files: `include:` of a base file, the `{options}` variable, and errors that name the
file (and line) at fault."""

import re
from pathlib import Path

import pytest
import yaml

from clbench.data.registry import load_task, task_names
from clbench.data.task import Task, read_task_file
from clbench.errors import ClbenchError, at

GENERATED = {
    "generator": "review_question",
    "args": {"question": "positive", "train_size": 4, "test_size": 4},
}
BASE = {
    "family": "text_classification",
    "source": GENERATED,
    "prompt": "{text}\nAnswer ({options}):",
    "target": " {label}",
    "labels": ["yes", "no"],
    "description": "the base",
}


def _write(folder: Path, name: str, spec: dict) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_include_inherits_and_overrides_fields(tmp_path):
    _write(tmp_path, "_base.yaml", BASE)
    path = _write(
        tmp_path, "child.yaml", {"include": "_base.yaml", "name": "child", "labels": ["no", "yes"]}
    )
    task = Task.from_yaml(path)
    assert (task.name, task.family, task.prompt) == ("child", BASE["family"], BASE["prompt"])
    assert task.labels == ["no", "yes"]  # a list replaces the base's
    assert task.description == "the base"


def test_nested_mappings_are_merged_key_by_key(tmp_path):
    _write(tmp_path, "_base.yaml", BASE)
    change = {"source": {"args": {"test_size": 2}}}  # train_size, question, generator stay
    path = _write(tmp_path, "child.yaml", {"include": "_base.yaml", "name": "child", **change})
    task = Task.from_yaml(path)
    assert task.source == {
        "generator": "review_question",
        "args": {"question": "positive", "train_size": 4, "test_size": 2},
    }
    assert len(task.load().test) == 2


def test_includes_chain_and_resolve_relative_to_the_including_file(tmp_path):
    _write(tmp_path, "bases/_root.yaml", BASE)
    _write(tmp_path, "bases/_middle.yaml", {"include": "_root.yaml", "target": " {label}!"})
    path = _write(tmp_path, "tasks/child.yaml", {"include": "../bases/_middle.yaml", "name": "c"})
    spec, sources = read_task_file(path)
    assert spec["target"] == " {label}!" and spec["prompt"] == BASE["prompt"]
    assert sources["target"].endswith("_middle.yaml") and sources["family"].endswith("_root.yaml")
    assert sources["name"] == str(path)


def test_base_files_are_not_registered(tmp_path):
    _write(tmp_path, "_base.yaml", {**BASE, "name": "looks-like-a-task"})
    _write(tmp_path, "child.yaml", {"include": "_base.yaml", "name": "child"})
    names = task_names((str(tmp_path),))
    assert "child" in names and "looks-like-a-task" not in names
    assert load_task("child", (str(tmp_path),)).labels == ["yes", "no"]


def test_a_missing_include_is_named(tmp_path):
    path = _write(tmp_path, "child.yaml", {"include": "_nowhere.yaml", "name": "child"})
    with pytest.raises(ClbenchError) as caught:
        Task.from_yaml(path)
    assert str(caught.value) == (
        f"{path}: field 'include' names {tmp_path / '_nowhere.yaml'}, which does not exist"
    )


def test_an_include_cycle_is_named(tmp_path):
    first = _write(tmp_path, "_a.yaml", {"include": "_b.yaml", **BASE})
    second = _write(tmp_path, "_b.yaml", {"include": "_a.yaml"})
    path = _write(tmp_path, "child.yaml", {"include": "_a.yaml", "name": "child"})
    with pytest.raises(ClbenchError) as caught:
        Task.from_yaml(path)
    cycle = f"{path} -> {first} -> {second} -> {first}"
    assert str(caught.value) == f"{second}: field 'include' makes a cycle: {cycle}"


def test_a_file_that_includes_itself_is_a_cycle(tmp_path):
    path = _write(tmp_path, "child.yaml", {"include": "child.yaml", "name": "child"})
    with pytest.raises(ClbenchError, match=re.escape(f"makes a cycle: {path} -> {path}")):
        task_names((str(tmp_path),))


def test_errors_of_inherited_fields_name_the_base_file(tmp_path):
    base = _write(tmp_path, "_base.yaml", {**BASE, "prompt": "{text}\nAnswer ({titel}):"})
    path = _write(tmp_path, "child.yaml", {"include": "_base.yaml", "name": "child"})
    with pytest.raises(ClbenchError) as caught:
        Task.from_yaml(path).load()
    assert str(caught.value).startswith(f"{base}: field 'prompt' uses {{titel}}, which is")


def test_options_lists_the_labels_in_order(tmp_path):
    path = _write(tmp_path, "t.yaml", {**BASE, "name": "t"})
    data = Task.from_yaml(path).load()
    assert data.test[0].prompt.endswith("\nAnswer (yes; no):")
    # The ranked options are the rendered targets, unchanged by the variable.
    assert data.options == [" yes", " no"]


def _generated(family: str, generator: str, args: dict, prompt: str, target: str) -> dict:
    sizes = {"train_size": 4, "test_size": 2}
    source = {"generator": generator, "args": {**args, **sizes}}
    return {"name": "t", "family": family, "source": source, "prompt": prompt, "target": target}


def test_options_can_serve_any_template_of_a_task_with_labels(tmp_path):
    prompt = "Types: {options}.\n{sentence}\nEntities:"
    spec = _generated("ner", "ner_sentences", {"domain": "news"}, prompt, " {entities}")
    spec["labels"] = ["person", "location", "organisation"]
    data = Task.from_yaml(_write(tmp_path, "t.yaml", spec)).load(max_test=1)
    assert data.test[0].prompt.startswith("Types: person; location; organisation.\n")


def test_options_without_labels_names_the_task_file(tmp_path):
    prompt = "{instruction} ({options})\n{input}\n"
    args = {"kind": "reverse_words"}
    spec = _generated("instruction_tuning", "instructions", args, prompt, " {output}")
    path = _write(tmp_path, "t.yaml", spec)
    with pytest.raises(ClbenchError) as caught:
        Task.from_yaml(path).load()
    assert str(caught.value).startswith(f"{path}: field 'prompt' uses {{options}}, but the task")


def test_a_field_some_records_lack_is_blamed_on_the_data(tmp_path):
    folder = tmp_path / "mirror" / "text_classification" / "d"
    folder.mkdir(parents=True)
    lines = ['{"text": "a", "label": "yes", "title": "T"}', "", '{"text": "b", "label": "no"}']
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    spec = {**BASE, "name": "t", "source": {"dataset": "d"}, "prompt": "{title}: {text}"}
    path = _write(tmp_path, "t.yaml", spec)
    with pytest.raises(ClbenchError) as caught:
        Task.from_yaml(path).load(str(tmp_path / "mirror"))
    assert str(caught.value) == (
        f"{folder / 'train.jsonl'}:3: missing field 'title', which the prompt of {path} uses"
    )


def test_locations_are_written_file_colon_line():
    assert at("a/b.jsonl", 4) == "a/b.jsonl:4"
    assert at(Path("a/b.yaml")) == "a/b.yaml"


def test_builtin_groups_share_their_base_file():
    for group in ("fewrel_wiki_g1", "semeval2010_task8_g2", "crossner_ai", "superni_quoref_qa"):
        task = load_task(group)
        assert Path(task.where("family")).name.startswith("_"), group
        assert task.where("name") == task.origin
    assert not [name for name in task_names() if name.startswith("_")]
