"""The registered tasks' Hub sources, run on local files that copy the Hub layouts: the same
`source.hub` block (format, where, holdout, fields, constants), with only `path` pointed at
`datasets`' json builder."""

import json
from pathlib import Path

import pytest
import yaml

from clbench.data.hub import check_spec
from clbench.data.hub_formats import hh_dialogue, semeval_tags
from clbench.data.registry import load_task
from clbench.data.task import read_task_file
from clbench.errors import ClbenchError

FEWREL_ROWS = [
    {
        "relation": "P26",
        "tokens": ["Ann", "Lee", "married", "Bo", "Chan", "."],
        "head": {"text": "Ann Lee", "type": "Q1", "indices": [[0, 1]]},
        "tail": {"text": "Bo Chan", "type": "Q2", "indices": [[3, 4]]},
        "names": ["spouse", "their husband or wife"],
    },
    {
        "relation": "P59",
        "tokens": ["NGC", "1", "lies", "in", "Sculptor", "."],
        "head": {"text": "NGC 1", "type": "Q3", "indices": [[0, 1]]},
        "tail": {"text": "Sculptor", "type": "Q4", "indices": [[4]]},
        "names": ["constellation", "the area of the celestial sphere"],
    },
] * 5
SEMEVAL_ROWS = [
    {"sentence": "The <e1>author</e1> of a keygen uses a <e2>disassembler</e2>.", "relation": "x"},
    {"sentence": "A <e1>cup</e1> of <e2>tea</e2> is enough.", "relation": "Other"},
]
DIALOGUE = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Help me steal?\n\nAssistant:"
HH_ROWS = [{"chosen": DIALOGUE + " No.", "rejected": DIALOGUE + " Sure"}]
SUPERNI_ROWS = [
    {
        "task_name": "task002_quoref_answer_generation" if i % 2 else "task999_other",
        "id": f"t-{i}",
        "definition": "Answer the question.",
        "inputs": f"Passage {i}. Question?",
        "targets": f"answer {i}",
    }
    for i in range(400)
]
MULTI30K_ROWS = [{"en": "A dog runs.", "de": "Ein Hund rennt."}] * 3


def local_copy(task_name, rows, tmp_path):
    """The registered task with its Hub path replaced by json files of `rows`."""
    spec, _ = read_task_file(Path(load_task(task_name).origin))  # with what it includes
    hub = spec["source"]["hub"]
    files = {}
    for split in set(hub["splits"].values()):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        files[split] = str(path)
    hub.update(path="json", name=None, revision=None, data_dir=None, data_files=files)
    path = tmp_path / f"{task_name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_task(str(path))


def test_fewrel_indices_become_spans_with_a_disjoint_holdout(tmp_path):
    data = local_copy("fewrel_wiki", FEWREL_ROWS, tmp_path).load()
    assert len(data.train) == 8 and len(data.test) == 2  # holdout 0.2 of 10 rows
    spouse = next(e for e in data.train + data.test if "spouse" in e.target)
    assert "Sentence: [E1] Ann Lee [/E1] married [E2] Bo Chan [/E2] ." in spouse.prompt
    assert data.options[data.task.labels.index("spouse")] == " spouse"


def test_fewrel_group_keeps_only_its_relations(tmp_path):
    data = local_copy("fewrel_wiki_g1", FEWREL_ROWS, tmp_path).load()
    assert {e.target for e in data.train + data.test} == {" constellation"}


def test_semeval_tags_give_tokens_and_spans():
    record = semeval_tags(SEMEVAL_ROWS[0])
    assert record["tokens"][:3] == ["The", "author", "of"]
    assert record["head"] == {"text": "author", "span": [1, 2]}
    assert record["tail"] == {"text": "disassembler", "span": [7, 8]}
    with pytest.raises(ClbenchError, match="without both"):
        semeval_tags({"sentence": "No marks.", "relation": "Other"})


def test_semeval_task_drops_other(tmp_path):
    rows = [{**SEMEVAL_ROWS[0], "relation": "Instrument-Agency(e2,e1)"}, SEMEVAL_ROWS[1]] * 2
    data = local_copy("semeval2010_task8", rows, tmp_path).load()
    assert [e.target for e in data.test] == [" Instrument-Agency(e2,e1)"] * 2
    assert "[E1] author [/E1]" in data.test[0].prompt


def test_hh_dialogue_splits_the_shared_prefix(tmp_path):
    assert hh_dialogue(HH_ROWS[0]) == {
        "prompt": "Human: Hi\n\nAssistant: Hello.\n\nHuman: Help me steal?\n\nAssistant:",
        "chosen": "No.",
        "rejected": "Sure",
    }
    data = local_copy("hh_rlhf_harmless", HH_ROWS, tmp_path).load()
    assert data.test[0].target == " No." and data.test[0].rejected == " Sure"


def test_superni_where_and_holdout(tmp_path):
    task = local_copy("superni_quoref_qa", SUPERNI_ROWS, tmp_path)
    data = task.load()
    assert len(data.test) == 100 and len(data.train) == 100  # 200 rows of the task
    train, test = {e.prompt for e in data.train}, {e.prompt for e in data.test}
    assert not train & test
    assert task.load().fingerprints == data.fingerprints  # the same split every time


def test_constants_are_literal_values(tmp_path):
    data = local_copy("multi30k_en-de", MULTI30K_ROWS, tmp_path).load()
    assert data.test[0].prompt.startswith("Translate from English to German.\nEnglish: A dog")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"splits": {"train": "train", "test": "train"}}, "holdout' must give"),
        ({"splits": {"train": "train", "test": "train"}, "holdout": 1.5}, "holdout' must give"),
        ({"holdout": 0.1}, "needs train and test on one split"),
        ({"format": "nope"}, "'source.hub.format' is 'nope'"),
        ({"where": ["task_name"]}, "'source.hub.where' must be a mapping"),
    ],
)
def test_bad_hub_specs_are_named(change, message):
    with pytest.raises(ClbenchError, match=message):
        check_spec({"path": "x", **change}, "t.yaml")


def test_where_on_a_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "task_name"} for r in SUPERNI_ROWS]
    with pytest.raises(ClbenchError, match=r"'source\.hub\.where' names column.* task_name"):
        local_copy("superni_quoref_qa", rows, tmp_path).load()
