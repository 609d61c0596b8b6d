"""Hub-style sources through `datasets.load_dataset` (here its local "json" builder), and
`clbench download` writing the mirror layout from them."""

import ast
import json
from pathlib import Path

import pytest
import yaml

import clbench.data
from clbench.cli import main
from clbench.data.registry import load_task
from clbench.errors import ClbenchError

ROWS = [
    {"title": "Cup final", "body": "A late goal.", "topic": 1},
    {"title": "Rates up", "body": "Banks react.", "topic": 2},
    {"title": "New chip", "body": "Faster and cooler.", "topic": 3},
]


@pytest.fixture
def hub_task(tmp_path):
    source = tmp_path / "hub"
    source.mkdir()
    for split in ("train", "test"):
        (source / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    spec = {
        "name": "news",
        "family": "text_classification",
        "source": {
            "dataset": "news",
            "hub": {
                "path": "json",
                "data_files": {s: str(source / f"{s}.jsonl") for s in ("train", "test")},
                "fields": {"text": "{title}\n{body}", "label": "topic"},
                "label_names": ["World", "Sports", "Business", "Tech"],
            },
        },
        "prompt": "{text}\nTopic:",
        "target": " {label}",
        "labels": ["World", "Sports", "Business", "Tech"],
    }
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "news.yaml").write_text(yaml.safe_dump(spec))
    (tasks / "news-seq.yaml").write_text(yaml.safe_dump({"name": "news-seq", "tasks": ["news"]}))
    return tasks


def test_hub_fields_and_label_names(hub_task):
    data = load_task("news", (str(hub_task),)).load()
    assert data.test[0].prompt == "Cup final\nA late goal.\nTopic:"
    assert [e.label for e in data.test] == [1, 2, 3]  # Sports, Business, Tech


def test_download_writes_the_mirror_the_loader_reads(hub_task, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    code = main(
        [
            "download",
            "--sequence",
            "news-seq",
            "--data-dir",
            str(mirror),
            "--include-path",
            str(hub_task),
        ]
    )
    assert code == 0 and "news: wrote" in capsys.readouterr().out
    folder = mirror / "text_classification" / "news"
    first = json.loads((folder / "train.jsonl").read_text().splitlines()[0])
    assert first == {"text": "Cup final\nA late goal.", "label": "Sports"}
    assert json.loads((folder / "labels.json").read_text())[3] == "Tech"
    from_hub = load_task("news", (str(hub_task),)).load()
    from_mirror = load_task("news", (str(hub_task),)).load(str(mirror))
    assert from_hub.fingerprints == from_mirror.fingerprints


def test_unreachable_hub_dataset_is_a_clear_error(hub_task):
    spec = yaml.safe_load((hub_task / "news.yaml").read_text())
    spec["source"]["hub"]["data_files"] = {"train": "/no/such.jsonl", "test": "/no/such.jsonl"}
    (hub_task / "news.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ClbenchError, match="cannot load 'json' split 'train'"):
        load_task("news", (str(hub_task),)).load()


def test_after_one_connection_failure_the_hub_is_not_tried_again(hub_task, monkeypatch):
    """Offline, every load would retry for half a minute; the first failure answers the rest."""
    import datasets

    from clbench.data import hub

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Couldn't reach 'json' on the Hub")

    monkeypatch.setattr(hub, "_unreachable", [])
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    for _ in range(2):
        with pytest.raises(ClbenchError, match=r"cannot load 'json'.*local mirror"):
            load_task("news", (str(hub_task),)).load()
    assert len(calls) == 1


def _data_imports() -> dict[str, set[str]]:
    """For each module of clbench.data, the modules of clbench.data it imports, at any depth
    of its code (an import inside a function closes a cycle as surely as one at the top)."""
    folder = Path(clbench.data.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "clbench.data":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "clbench.data."
            ):
                imported.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("clbench.data.")]
                imported |= {name.split(".")[2] for name in names}
        graph[path.stem] = imported
    return graph


def test_the_data_modules_import_without_a_cycle():
    graph = _data_imports()
    assert "registry" in graph["download"] and "hub" in graph["download"]  # the walk sees them
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module not in done:
            for other in graph.get(module, ()):
                visit(other, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())
