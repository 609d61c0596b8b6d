"""`clbench export-lm-eval`, and the cross-check: on the same model, data and prompts, clbench's
label ranking and lm-eval's `multiple_choice` give the same log-likelihoods, predictions and
accuracy."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from conftest import SHARED_DATA

from clbench.cli import main
from clbench.data import registry
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import encode_prompt, encode_target, option_scores
from clbench.evaluation.scorers import accuracy
from clbench.reporting.lm_eval_export import export
from clbench.training.models import load_model

pytest.importorskip("lm_eval")


def lm_eval_samples(model, tokenizer, folder: Path, task: str) -> list[dict]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    output = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = sorted(output["samples"][task], key=lambda s: s["doc_id"])
    return samples, output["results"][task]["acc,none"]


def crosscheck(task_name: str, model_name: str, n: int, tmp_path: Path, data_dir=None) -> None:
    export(task_name, tmp_path / "lm-eval", data_dir=data_dir, max_test_examples=n)
    loaded = load_model(model_name)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    data = registry.load_task(task_name).load(data_dir, max_test=n)
    option_ids = [encode_target(tokenizer, option) for option in data.options]
    contexts = [encode_prompt(tokenizer, e.prompt, 10_000) for e in data.test]
    with torch.inference_mode():
        ours = option_scores(
            model, contexts, option_ids, tokenizer.pad_token_id, 8, torch.device("cpu"), task_name
        )
    samples, their_accuracy = lm_eval_samples(model, tokenizer, tmp_path / "lm-eval", task_name)
    theirs = torch.tensor([[resp[0] for resp in s["filtered_resps"]] for s in samples])
    assert theirs.shape == ours.shape == (n, len(data.options))
    assert torch.allclose(ours, theirs.to(ours.dtype), atol=1e-3), (ours - theirs).abs().max()
    predictions = ours.argmax(dim=1).tolist()  # a tie goes to the first option, in both
    assert predictions == [int(torch.tensor(s["filtered_resps"])[:, 0].argmax()) for s in samples]
    ours_accuracy = accuracy(predictions, [e.label for e in data.test])["accuracy"]
    assert ours_accuracy == their_accuracy
    # and the evaluator clbench runs gives that same accuracy
    from clbench.evaluation.evaluate import evaluate_task

    scored = evaluate_task(model, tokenizer, data, Accelerator(cpu=True), 8, 10_000)
    assert scored["accuracy"] == their_accuracy


def test_clbench_and_lm_eval_agree_on_a_tiny_model(tmp_path):
    crosscheck("review-positive", "tiny-random", 24, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "text_classification" / "agnews").is_dir(), reason="no data mirror"
)
def test_clbench_and_lm_eval_agree_on_smollm2(tmp_path):
    crosscheck("agnews", "smollm2-135m", 32, tmp_path, data_dir=str(SHARED_DATA))


def test_export_writes_a_multiple_choice_task(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export-lm-eval", "--task", "review-food", "--out", str(out)]) == 0
    assert "lm_eval --model hf --include_path" in capsys.readouterr().out
    config = yaml.safe_load((out / "review-food.yaml").read_text())
    assert config["output_type"] == "multiple_choice" and config["target_delimiter"] == ""
    assert config["dataset_kwargs"]["data_files"]["test"] == str(out / "review-food.jsonl")
    rows = [json.loads(line) for line in (out / "review-food.jsonl").read_text().splitlines()]
    data = registry.load_task("review-food").load()
    assert [r["prompt"] for r in rows] == [e.prompt for e in data.test]
    assert rows[0]["choices"] == [" yes", " no"] and {r["label"] for r in rows} == {0, 1}
    assert config["metadata"]["test_fingerprint"] == data.fingerprints["test"]


def test_export_of_a_generation_task_scores_with_clbench(tmp_path):
    """lm-eval scores the exported NER task with clbench's own entity F1."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    export("offline-ner-news", tmp_path, max_test_examples=6)
    config = (tmp_path / "offline-ner-news.yaml").read_text()
    assert "aggregation: !function utils.aggregate" in config
    loaded = load_model("tiny-random")
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=6)
    output = simple_evaluate(
        model=lm,
        tasks=["offline-ner-news"],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = sorted(output["samples"]["offline-ner-news"], key=lambda s: s["doc_id"])
    from clbench.evaluation.scorers import entity_f1

    predictions = [s["filtered_resps"][0].strip() for s in samples]
    references = [json.loads(s["doc"]["reference"]) for s in samples]
    expected = entity_f1(predictions, references)["entity_f1"]
    assert output["results"]["offline-ner-news"]["entity_f1,none"] == expected
    # A random model finds no entity; the gold targets, passed through the exported hooks,
    # score 1, and half of them wrong scores what clbench's scorer says.
    spec = importlib.util.spec_from_file_location("exported_utils", tmp_path / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    docs = [s["doc"] for s in samples]
    gold = [utils.process_results(d, [d["target"]])["entity_f1"] for d in docs]
    assert utils.aggregate(gold) == 1.0
    mixed = [
        utils.process_results(d, [d["target"] if i % 2 else " none"]) for i, d in enumerate(docs)
    ]
    wanted = entity_f1([m["entity_f1"][0] for m in mixed], references)["entity_f1"]
    assert 0 < utils.aggregate([m["entity_f1"] for m in mixed]) == wanted < 1


def test_export_refuses_preference_tasks_and_unknown_names(tmp_path):
    with pytest.raises(ClbenchError, match="is a preference task"):
        export("offline-align-helpful", tmp_path)
    with pytest.raises(ClbenchError, match="no-such-task"):
        export("no-such-task", tmp_path)
    assert not os.listdir(tmp_path)
