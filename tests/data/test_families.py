"""Each family on a dataset made in the test: one YAML file, the mirror layout, no code change."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator

from clbench.cli import main
from clbench.data.registry import load_task
from clbench.data.task import Task
from clbench.evaluation.evaluate import evaluate_task
from clbench.evaluation.scorers import chrf
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run
from clbench.training.train import dpo_loss

SENTENCE = {
    "tokens": ["Ada", "Lovelace", "visited", "Paris", "."],
    "tags": ["B-person", "I-person", "O", "B-location", "O"],
}
RELATION = {
    "text": "Ada was born in London .",
    "tokens": ["Ada", "was", "born", "in", "London", "."],
    "head": {"text": "Ada", "span": [0, 1]},
    "tail": {"text": "London", "span": [4, 5]},
    "relation": "born in",
}

# family -> (records, labels.json or None, prompt, target, expected prompt, expected target)
CASES = {
    "text_classification": (
        [{"text": "Great soup.", "label": "positive"}, {"text": "Awful tea.", "label": "negative"}],
        ["negative", "positive"],
        "Review: {text}\nSentiment:",
        " {label}",
        "Review: Great soup.\nSentiment:",
        " positive",
    ),
    "ner": (
        [SENTENCE, {"tokens": ["Rain", "."], "tags": ["O", "O"]}],
        ["location", "person"],
        "Entities in: {sentence}\nEntities:",
        " {entities}",
        "Entities in: Ada Lovelace visited Paris .\nEntities:",
        " person: Ada Lovelace; location: Paris",
    ),
    "relation_extraction": (
        [RELATION, {**RELATION, "relation": "lives in"}],
        ["born in", "lives in"],
        "{marked_text}\nRelation of {head_text} to {tail_text}:",
        " {relation}",
        "[E1] Ada [/E1] was born in [E2] London [/E2] .\nRelation of Ada to London:",
        " born in",
    ),
    "machine_translation": (
        [
            {"src": "three", "tgt": "drei", "src_lang": "en", "tgt_lang": "de"},
            {"src": "four", "tgt": "vier", "src_lang": "en", "tgt_lang": "de"},
        ],
        None,
        "{src_language}: {src}\n{tgt_language}:",
        " {tgt}",
        "English: three\nGerman:",
        " drei",
    ),
    "instruction_tuning": (
        [
            {"instruction": "Shout.", "input": "hi", "output": "HI", "task": "t"},
            {"instruction": "Shout.", "input": "yo", "output": "YO", "task": "t"},
        ],
        None,
        "{instruction}\n{input}\nAnswer:",
        " {output}",
        "Shout.\nhi\nAnswer:",
        " HI",
    ),
    "alignment": (
        [
            {"prompt": "Q: 2+2?", "chosen": "4", "rejected": "5", "dimension": "helpful"},
            {"prompt": "Q: 3+3?", "chosen": "6", "rejected": "7", "dimension": "helpful"},
        ],
        None,
        "{prompt}\nA:",
        " {response}",
        "Q: 2+2?\nA:",
        " 4",
    ),
}


def _make_dataset(root: Path, tasks: Path, family: str) -> str:
    records, labels, prompt, target, *_ = CASES[family]
    folder = root / family / f"my_{family}"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if labels:
        (folder / "labels.json").write_text(json.dumps(labels))
    spec = {
        "name": f"my-{family}",
        "family": family,
        "source": {"dataset": f"my_{family}"},
        "prompt": prompt,
        "target": target,
        "max_new_tokens": 4,
    }
    (tasks / f"my-{family}.yaml").write_text(yaml.safe_dump(spec))
    return f"my-{family}"


@pytest.fixture
def mirror(tmp_path):
    root, tasks = tmp_path / "mirror", tmp_path / "tasks"
    tasks.mkdir()
    names = [_make_dataset(root, tasks, family) for family in CASES]
    (tasks / "six.yaml").write_text(yaml.safe_dump({"name": "six", "tasks": names}))
    return root, tasks


@pytest.mark.parametrize("family", list(CASES))
def test_one_yaml_file_per_new_dataset(family, mirror):
    root, tasks = mirror
    *_, expected_prompt, expected_target = CASES[family]
    data = load_task(str(tasks / f"my-{family}.yaml")).load(str(root))
    first = data.test[0]
    assert (first.prompt, first.target) == (expected_prompt, expected_target)
    if family == "alignment":
        assert first.rejected == " 5"
    scores = evaluate_task(
        load_model("tiny-random").model,
        load_model("tiny-random").tokenizer,
        data,
        Accelerator(cpu=True),
        2,
        128,
    )
    primary = data.task.metric
    assert primary in scores and 0 <= scores[primary] <= 1


def test_all_six_families_in_one_run(mirror, tmp_path, tiny_config):
    root, tasks = mirror
    tiny_config.sequence, tiny_config.data_dir = "six", str(root)
    results = load_results(run(tiny_config, include=(str(tasks),)))
    assert len(results["matrix"]) == 7 and all(len(row) == 6 for row in results["matrix"])
    metrics = [t["metric"] for t in results["sequence"]["tasks"]]
    assert metrics == [
        "accuracy",
        "entity_f1",
        "accuracy",
        "chrf",
        "rouge_l",
        "preference_accuracy",
    ]
    assert set(results["scores"][6][3]) == {"chrf", "bleu"}  # secondary metrics are kept
    assert results["scores"][6][3]["chrf"] == results["matrix"][6][3]


def test_dpo_loss_matches_the_formula_and_starts_at_log_two():
    chosen, rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    ref_chosen, ref_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.0])
    # margins: (-1+1.5) - (-3+2) = 1.5 ; (-2+2) - (-1+2) = -1 ; beta 0.1
    expected = -(math.log(1 / (1 + math.exp(-0.15))) + math.log(1 / (1 + math.exp(0.1)))) / 2
    assert float(dpo_loss(chosen, rejected, ref_chosen, ref_rejected, 0.1)) == pytest.approx(
        expected
    )
    # The reference is the policy at the stage's start: the first loss is log 2 whatever beta is.
    assert float(dpo_loss(chosen, rejected, chosen, rejected, 3.0)) == pytest.approx(math.log(2))


def test_dpo_stage_moves_the_policy_towards_chosen(mirror, tmp_path, tiny_config):
    root, tasks = mirror
    (tasks / "align.yaml").write_text(yaml.safe_dump({"name": "align", "tasks": ["my-alignment"]}))
    tiny_config.sequence, tiny_config.data_dir, tiny_config.steps_per_task = "align", str(root), 20
    results = load_results(run(tiny_config, include=(str(tasks),)))
    before, after = results["scores"][0][0], results["scores"][1][0]
    assert after["reward_margin_mean"] > before["reward_margin_mean"]


@pytest.mark.parametrize(
    ("family", "bad", "message"),
    [
        ("ner", {"tokens": ["a", "b"], "tags": ["O"]}, "test.jsonl:4: 2 tokens but 1 BIO tags"),
        ("ner", {"tokens": ["a"], "tags": ["X-person"]}, "test.jsonl:4: 'X-person' is not a BIO"),
        ("ner", {"tokens": ["a"], "tags": ["B-animal"]}, "test.jsonl:4: entity type(s) animal not"),
        ("ner", {"tokens": ["a"]}, "test.jsonl:4: missing field(s) tags"),
        ("text_classification", {"text": "a", "label": "meh"}, "test.jsonl:4: label 'meh' is not"),
        (
            "relation_extraction",
            {**RELATION, "head": {"text": "Ada", "span": [4, 9]}},
            "test.jsonl:4: 'head.span' must be [start, end) within the 6 tokens",
        ),
    ],
)
def test_bad_records_name_file_and_line(family, bad, message, mirror, capsys):
    root, tasks = mirror
    test_file = root / family / f"my_{family}" / "test.jsonl"
    # After a blank line: the bad record is the third, on line 4.
    test_file.write_text(test_file.read_text() + "\n" + json.dumps(bad) + "\n")
    (tasks / "one.yaml").write_text(yaml.safe_dump({"name": "one", "tasks": [f"my-{family}"]}))
    code = main(
        [
            "run",
            "--sequence",
            "one",
            "--model",
            "tiny-random",
            "--data-dir",
            str(root),
            "--include-path",
            str(tasks),
            "--output",
            str(root.parent / "out"),
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (root.parent / "out").exists()


def test_contamination_warning(mirror, tiny_config):
    root, tasks = mirror
    (tasks / "two.yaml").write_text(
        yaml.safe_dump({"name": "two", "tasks": ["my-text_classification", "my-ner"]})
    )
    tiny_config.sequence, tiny_config.data_dir, tiny_config.steps_per_task = "two", str(root), 1
    with pytest.warns(UserWarning, match="2 test example.* of 'my-ner' also appear in the train"):
        run(tiny_config, include=(str(tasks),))


def test_no_contamination_warning_on_disjoint_data(tiny_tasks, tiny_config, recwarn):
    run(tiny_config, include=(str(tiny_tasks),))
    assert not [w for w in recwarn if "contamination" in str(w.message)]


# --- Scoring in every language: gold answers scored as predictions give exactly 1.0 ----------


def _load(tmp_path, family, records, prompt, target, **fields):
    """A task of `family` over `records` (train = test) on a mirror made here."""
    folder = tmp_path / "mirror" / family / "data"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
    spec = {"name": "t", "family": family, "source": {"dataset": "data"}, "prompt": prompt}
    task = Task.from_dict({**spec, "target": target, **fields})
    return task.load(str(tmp_path / "mirror"))


def _gold(data):
    return [e.target for e in data.test]


ZH_TRANSLATIONS = [
    {"src": "I like walking in the park.", "tgt": "我喜欢在公园散步。"},
    {"src": "The weather is nice today.", "tgt": "今天天气不错。"},
]


def test_translation_into_chinese_scores_bleu_with_the_zh_tokenizer(tmp_path):
    records = [{**r, "src_lang": "en", "tgt_lang": "zh"} for r in ZH_TRANSLATIONS]
    data = _load(tmp_path, "machine_translation", records, "{src_language}: {src}\n", " {tgt}")
    assert data.metric_args == {"language": "zh"}
    assert data.test[0].prompt == "English: I like walking in the park.\n"
    assert data.score(_gold(data)) == {"chrf": 1.0, "bleu": 1.0}
    predictions = ["我喜欢在公园里散步。", "今天天气很好。"]
    references = [r["tgt"] for r in ZH_TRANSLATIONS]
    assert data.score(predictions) == chrf(predictions, references, tokenize="zh")
    assert data.score(predictions)["bleu"] > chrf(predictions, references)["bleu"]  # 13a


def test_the_yaml_sets_the_bleu_tokenizer(tmp_path):
    records = [{**r, "src_lang": "en", "tgt_lang": "zh"} for r in ZH_TRANSLATIONS]
    data = _load(
        tmp_path,
        "machine_translation",
        records,
        "{src}",
        " {tgt}",
        metric_args={"tokenize": "char"},
    )
    assert data.metric_args == {"tokenize": "char", "language": "zh"}
    predictions = ["我喜欢在公园里散步。", "今天天气很好。"]
    references = [r["tgt"] for r in ZH_TRANSLATIONS]
    assert data.score(predictions) == chrf(predictions, references, tokenize="char")


def test_mixed_target_languages_fall_back_to_13a(tmp_path):
    records = [
        {"src": "one", "tgt": "一", "src_lang": "en", "tgt_lang": "zh"},
        {"src": "one", "tgt": "eins", "src_lang": "en", "tgt_lang": "de"},
    ]
    data = _load(tmp_path, "machine_translation", records, "{src}", " {tgt}")
    assert data.metric_args == {}


def test_chinese_instructions_score_rouge_l_one_on_gold(tmp_path):
    records = [
        {"instruction": "翻译成中文。", "input": "thank you", "output": "谢谢你"},
        {"instruction": "总结。", "input": "今天下雨，我们没有出门。", "output": "下雨没出门"},
    ]
    data = _load(tmp_path, "instruction_tuning", records, "{instruction}\n{input}\n", " {output}")
    assert data.score(_gold(data)) == {"rouge_l": 1.0, "exact_match": 1.0}
    assert 0 < data.score(["谢谢", "没出门"])["rouge_l"] < 1


def test_ner_entities_holding_separators_score_one_on_gold(tmp_path):
    records = [
        {
            "tokens": ["Rock", ";", "Roll", "Ltd", "hired", "A\\B", "in", "Oslo", ";", "twice"],
            "tags": ["B-org", "I-org", "I-org", "I-org", "O", "B-per", "O", "B-loc", "O", "O"],
        },
        {"tokens": ["北", "京", "很", "大"], "tags": ["B-loc", "I-loc", "O", "O"]},
    ]
    data = _load(tmp_path, "ner", records, "{sentence}\nEntities:", " {entities}")
    assert data.test[0].target == " org: Rock \\; Roll Ltd; per: A\\\\B; loc: Oslo"
    assert data.references == [{"tokens": r["tokens"], "tags": r["tags"]} for r in records]
    assert data.score(_gold(data))["entity_f1"] == 1.0


def test_references_follow_the_evaluation(mirror):
    root, tasks = mirror
    ranked = load_task(str(tasks / "my-text_classification.yaml")).load(str(root))
    assert ranked.references == [1, 0]  # indices into labels.json [negative, positive]
    generated = load_task(str(tasks / "my-instruction_tuning.yaml")).load(str(root))
    assert generated.references == ["HI", "YO"]  # the targets without their leading space
