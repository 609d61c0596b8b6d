"""The generated data of clbench.data.synthetic and the offline task and sequence files built on
it."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml
from conftest import REPO

from clbench.data.synthetic import GENERATORS

TASKS = REPO / "tasks"
FAMILY = {
    "review_question": "text_classification",
    "ner_sentences": "ner",
    "relation_sentences": "relation_extraction",
    "word_translation": "machine_translation",
    "instructions": "instruction_tuning",
    "preferences": "alignment",
}
FIELDS = {
    "text_classification": {"text", "label"},
    "ner": {"tokens", "tags"},
    "relation_extraction": {"text", "tokens", "head", "tail", "relation"},
    "machine_translation": {"src", "tgt", "src_lang", "tgt_lang"},
    "instruction_tuning": {"instruction", "input", "output", "task"},
    "alignment": {"prompt", "chosen", "rejected", "dimension"},
}
ONE_LINE = {
    "text_classification": ["label"],
    "ner": [],
    "relation_extraction": ["text", "relation"],
    "machine_translation": ["src", "tgt"],
    "instruction_tuning": ["instruction", "input", "output"],
    "alignment": ["chosen", "rejected"],
}
# (generator, its choice argument, the value); sizes are added by `_args`.
CASES = [
    ("review_question", "question", "positive"),
    ("review_question", "question", "food"),
    ("ner_sentences", "domain", "news"),
    ("ner_sentences", "domain", "science"),
    ("relation_sentences", "group", "a"),
    ("relation_sentences", "group", "b"),
    ("word_translation", "pair", "en-de"),
    ("word_translation", "pair", "en-fr"),
    ("word_translation", "pair", "fr-es"),
    ("instructions", "kind", "reverse_words"),
    ("instructions", "kind", "uppercase"),
    ("instructions", "kind", "first_word"),
    ("instructions", "kind", "count_words"),
    ("preferences", "dimension", "harmless"),
    ("preferences", "dimension", "helpful"),
]
IDS = [f"{name}-{value}" for name, _, value in CASES]
SIZES = {"word_translation": (21, 7)}  # the lexicon is small; odd sizes test the balancing


def _args(case, **extra):
    name, argument, value = case
    train, test = SIZES.get(name, (61, 25))
    return {argument: value, "train_size": train, "test_size": test, **extra}


def _generate(case, **extra):
    return GENERATORS[case[0]](**_args(case, **extra))


def _key(record):
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def test_registry_names_every_generator():
    assert set(GENERATORS) == set(FAMILY)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_arguments_give_the_same_records(case):
    assert _generate(case) == _generate(case)
    assert _generate(case, seed=3) == _generate(case, seed=3)
    assert _generate(case, seed=3)["train"] != _generate(case)["train"]


def test_records_do_not_depend_on_the_hash_seed():
    """Nothing may hang on set or dict order of strings, which changes between processes."""
    cases = [(case[0], _args(case)) for case in CASES]
    code = (
        "import json, hashlib; from clbench.data.synthetic import GENERATORS\n"
        f"blob = json.dumps([GENERATORS[n](**a) for n, a in {cases!r}], sort_keys=True)\n"
        "print(hashlib.sha256(blob.encode()).hexdigest())"
    )
    blob = json.dumps([GENERATORS[n](**a) for n, a in cases], sort_keys=True)
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert digests == {hashlib.sha256(blob.encode()).hexdigest() + "\n"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sizes_as_asked_and_no_duplicates(case):
    records = _generate(case)
    train, test = SIZES.get(case[0], (61, 25))
    assert (len(records["train"]), len(records["test"])) == (train, test)
    for split in ("train", "test"):
        assert len({_key(r) for r in records[split]}) == len(records[split])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_train_and_test_are_disjoint(case):
    records = _generate(case)
    assert not {_key(r) for r in records["train"]} & {_key(r) for r in records["test"]}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_records_follow_the_family_schema(case):
    family = FAMILY[case[0]]
    records = _generate(case)
    for record in records["train"] + records["test"]:
        assert set(record) == FIELDS[family]
        if family == "ner":
            _check_bio(record["tokens"], record["tags"])
        elif family == "relation_extraction":
            assert record["text"] == " ".join(record["tokens"])
            for role in ("head", "tail"):
                start, end = record[role]["span"]
                assert 0 <= start < end <= len(record["tokens"])
                assert " ".join(record["tokens"][start:end]) == record[role]["text"]
            head, tail = record["head"]["span"], record["tail"]["span"]
            assert head[1] <= tail[0] or tail[1] <= head[0]  # no overlap
        elif family == "machine_translation":
            assert f"{record['src_lang']}-{record['tgt_lang']}" == case[2]
        elif family == "alignment":
            assert record["prompt"].startswith("User: ") and record["prompt"].endswith("Assistant:")
            assert record["chosen"] != record["rejected"]
        for name in ONE_LINE[family]:  # generation stops at the first newline
            assert record[name] and "\n" not in record[name]


def _check_bio(tokens, tags):
    assert len(tokens) == len(tags) and all(isinstance(t, str) and t for t in tokens)
    previous = "O"
    for tag in tags:
        assert tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2)
        if tag.startswith("I-"):
            assert previous != "O" and previous[2:] == tag[2:]
        previous = tag


def _label(case, record):
    return {
        "review_question": lambda: record["label"],
        "relation_sentences": lambda: record["relation"],
        "instructions": lambda: len(record["input"].split()),
        "preferences": lambda: "capital" in record["prompt"],
    }[case[0]]()


BALANCED = [c for c in CASES if c[0] != "ner_sentences" and c[0] != "word_translation"]


@pytest.mark.parametrize("case", BALANCED, ids=[f"{c[0]}-{c[2]}" for c in BALANCED])
@pytest.mark.parametrize("split", ["train", "test"])
def test_classes_are_balanced(case, split):
    counts = Counter(_label(case, r) for r in _generate(case)[split])
    if case[0] in ("relation_sentences", "review_question") or case[2] == "helpful":
        assert len(counts) == 2
    assert max(counts.values()) - min(counts.values()) <= 1


def test_count_words_answers_the_number_of_words():
    records = _generate(("instructions", "kind", "count_words"))
    for record in records["train"] + records["test"]:
        assert record["output"] == str(len(record["input"].split()))
    assert {r["output"] for r in records["test"]} == {"3", "4", "5", "6", "7"}


def test_other_instructions_are_exact():
    reverse = _generate(("instructions", "kind", "reverse_words"))["test"][0]
    assert reverse["output"].split() == reverse["input"].split()[::-1]
    upper = _generate(("instructions", "kind", "uppercase"))["test"][0]
    assert upper["output"] == upper["input"].upper()
    first = _generate(("instructions", "kind", "first_word"))["test"][0]
    assert first["output"] == first["input"].split()[0]


def _entities(tokens, tags):
    """The text of every BIO entity."""
    spans = []
    for token, tag in zip(tokens, tags, strict=True):
        if tag.startswith("B-"):
            spans.append([token])
        elif tag.startswith("I-"):
            spans[-1].append(token)
    return {" ".join(span) for span in spans}


def _words(case, record):
    """What must be new in a test record: names, words or questions never seen in training."""
    if case[0] == "ner_sentences":
        return _entities(record["tokens"], record["tags"])
    if case[0] == "relation_sentences":
        return {record["head"]["text"], record["tail"]["text"]}
    if case[0] == "word_translation":
        return {record["src"]}
    if case[0] == "instructions":
        return set(record["input"].split())
    if case[0] == "preferences":
        return {record["prompt"]}
    return set()


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "review_question"], ids=IDS[2:])
def test_test_records_use_unseen_names_and_words(case):
    records = _generate(case)
    seen = set().union(*(_words(case, r) for r in records["train"]))
    for record in records["test"]:
        assert not _words(case, record) & seen


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_arguments_raise_value_error_naming_them(case):
    argument = case[1]
    with pytest.raises(ValueError, match=argument):
        _generate(case, **{argument: "no-such-value"})
    for size in ("train_size", "test_size"):
        for bad in (0, -1, "10", 2.5):
            with pytest.raises(ValueError, match=size):
                _generate(case, **{size: bad})
        with pytest.raises(ValueError, match=f"{size} 100000 is larger than the pool allows"):
            _generate(case, **{size: 100_000})


def test_translation_test_phrases_recombine_words_seen_in_training():
    records = GENERATORS["word_translation"](pair="en-fr", train_size=108, test_size=36)
    for side in ("src", "tgt"):
        seen = {word for r in records["train"] for word in r[side].split()}
        assert all(set(r[side].split()) <= seen for r in records["test"])
    assert {"src": "three dogs", "tgt": "trois chiens", "src_lang": "en", "tgt_lang": "fr"} in (
        records["train"] + records["test"]
    )


def test_translation_pair_must_be_two_known_languages():
    for pair in ("en-en", "en", "en-xx", "de-en-fr"):
        with pytest.raises(ValueError, match="pair"):
            GENERATORS["word_translation"](pair=pair, train_size=5, test_size=5)


def test_ner_tags_the_names_of_the_domain():
    records = _generate(("ner_sentences", "domain", "science"))
    types = {tag[2:] for r in records["train"] for tag in r["tags"] if tag != "O"}
    assert types == {"scientist", "chemical", "university"}
    multi = [r for r in records["test"] if "I-university" in r["tags"]]
    assert multi  # multi-token names are tagged B- then I-


def test_helpful_rejects_the_refusal_that_harmless_prefers():
    harmless = _generate(("preferences", "dimension", "harmless"), train_size=216)["train"]
    helpful = _generate(("preferences", "dimension", "helpful"), train_size=300)["train"]
    refusal = "I'm sorry, but I can't help with that."
    assert any(r["chosen"] == refusal for r in harmless)
    assert any(r["rejected"] == refusal for r in helpful)
    assert not any(r["chosen"] == refusal for r in helpful)


# --- the task and sequence files -------------------------------------------------------------

OFFLINE_TASKS = sorted((TASKS / "synthetic").glob("offline-*.yaml"))
OFFLINE_SEQUENCES = sorted((TASKS / "sequences").glob("offline-*.yaml"))


def _task_files():
    return {yaml.safe_load(p.read_text(encoding="utf-8"))["name"]: p for p in OFFLINE_TASKS}


def test_the_offline_files_exist():
    assert {p.stem for p in OFFLINE_SEQUENCES} == {
        "offline-ner", "offline-re", "offline-mt", "offline-instruct", "offline-align",
        "offline-mixed",
    }  # fmt: skip
    assert len(OFFLINE_TASKS) == 10


@pytest.mark.parametrize("path", OFFLINE_TASKS, ids=lambda p: p.stem)
def test_offline_task_files_generate_their_data(path):
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert spec["name"] == path.stem
    source = spec["source"]
    assert FAMILY[source["generator"]] == spec["family"]
    records = GENERATORS[source["generator"]](**source["args"])
    assert len(records["train"]) == source["args"]["train_size"]
    if spec["family"] in ("text_classification", "relation_extraction"):
        answer = "label" if spec["family"] == "text_classification" else "relation"
        assert {r[answer] for r in records["test"]} == set(spec["labels"])
    if spec["family"] not in ("text_classification", "relation_extraction", "alignment"):
        assert 1 <= spec["max_new_tokens"] <= 24


@pytest.mark.parametrize("path", OFFLINE_TASKS, ids=lambda p: p.stem)
def test_offline_tasks_load_through_the_task_class(path):
    from clbench.data.task import Task

    data = Task.from_yaml(path).load()
    assert data.train and data.test
    assert all("\n" not in example.target for example in data.test)


@pytest.mark.parametrize("path", OFFLINE_SEQUENCES, ids=lambda p: p.stem)
def test_offline_sequences_name_existing_tasks(path):
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert spec["name"] == path.stem and spec["description"]
    assert len(set(spec["tasks"])) == len(spec["tasks"])
    offline = _task_files()
    for task in spec["tasks"]:
        if task.startswith("review-"):
            assert (TASKS / "synthetic" / f"{task}.yaml").is_file()
        else:
            assert task in offline
    families = {
        yaml.safe_load((TASKS / "synthetic" / f"{t}.yaml").read_text(encoding="utf-8"))["family"]
        for t in spec["tasks"]
    }
    assert len(families) == (6 if path.stem == "offline-mixed" else 1)
    assert len(spec["tasks"]) == (6 if path.stem == "offline-mixed" else 2)
