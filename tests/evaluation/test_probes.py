"""General-ability probes (clbench.evaluation.probes): lm-eval tasks from local files and clbench
tasks, scored before training and after every stage; bad probes fail before any training."""

import json
from pathlib import Path

import pytest
import yaml

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.results.io import load_results
from clbench.training.runner import run

pytest.importorskip("lm_eval")


def write_lm_eval_probe(
    folder: Path, name: str = "local-yesno", n: int = 6, answers=lambda i: i % 2
) -> Path:
    """An lm-eval multiple-choice task reading a local JSON-lines file (`dataset_path: json`)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    rows = [{"question": f"Is {i} even?", "answer": answers(i)} for i in range(n)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}\nAnswer:",
        "doc_to_choice": ["A", "B"],
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return folder


def test_probe_matrix_has_a_row_per_stage(tiny_tasks, tiny_config, tmp_path):
    probes = write_lm_eval_probe(tmp_path / "probes")
    tiny_config.probes = ["local-yesno", "review-food"]  # an lm-eval task and a clbench task
    tiny_config.probe_include = [str(probes)]
    tiny_config.probe_limit = 4
    results = load_results(run(tiny_config, include=(str(tiny_tasks),)))
    block = results["probes"]
    assert block["names"] == ["local-yesno", "review-food"]
    assert block["sources"] == ["lm-eval", "clbench"]
    assert block["metrics"] == ["acc,none", "accuracy"]
    assert block["limit"] == 4 and block["batch_size"] == tiny_config.eval_batch_size
    assert block["lm_eval_version"]
    matrix = block["matrix"]
    assert len(matrix) == len(results["matrix"]) and all(len(row) == 2 for row in matrix)
    assert all(0.0 <= value <= 1.0 for row in matrix for value in row)
    assert block["general_forgetting"] == [matrix[0][j] - matrix[-1][j] for j in range(2)]
    assert all("probe_seconds" in stage for stage in results["timings"]["stages"])


def test_lm_eval_probe_scores_the_model_in_memory(tmp_path):
    """lm-eval scores the model object itself: pushing its logits toward one choice moves the
    probe's accuracy to 1 or 0 (every gold answer is the first choice, "A")."""
    import torch
    from accelerate import Accelerator

    from clbench.config import RunConfig
    from clbench.evaluation.probes import evaluate_probes, load_probes
    from clbench.training.models import load_model

    folder = write_lm_eval_probe(tmp_path / "probes", n=6, answers=lambda i: 0)
    config = RunConfig(probes=["local-yesno"], probe_include=[str(folder)], eval_batch_size=4)
    probes = load_probes(config, (), [])
    loaded = load_model("tiny-random")
    accelerator = Accelerator(cpu=True)
    scores = {}
    for letter in "AB":
        token = loaded.tokenizer(f" {letter}", add_special_tokens=False)["input_ids"][-1]
        boost = torch.zeros(loaded.model.config.vocab_size)
        boost[token] = 100.0
        hook = loaded.model.lm_head.register_forward_hook(lambda m, i, out, b=boost: out + b)
        (scores[letter],) = evaluate_probes(
            probes, loaded.model, loaded.tokenizer, accelerator, config
        )
        hook.remove()
    assert scores == {"A": 1.0, "B": 0.0}


def test_a_local_probe_loads_without_lm_evals_own_index(tmp_path, monkeypatch):
    """Indexing lm-eval's own tasks takes about 20 s; a probe of --probe-include needs none."""
    import lm_eval.tasks

    from clbench.config import RunConfig
    from clbench.evaluation.probes import load_probes

    built = []

    class Recording(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("include_defaults", True))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", Recording)
    folder = write_lm_eval_probe(tmp_path / "probes")
    config = RunConfig(probes=["local-yesno"], probe_include=[str(folder)], probe_limit=2)
    (probe,) = load_probes(config, (), [])
    assert probe.target is not None and built == [False]


@pytest.mark.parametrize(
    ("probes", "message"),
    [
        (["no-such-probe"], "unknown probe 'no-such-probe'"),
        (["t-pos"], "is a task of the sequence"),
        (["missing-data"], "lm-eval could not load it, its data or its prompts"),
        (["bad-template"], "lm-eval could not load it, its data or its prompts"),
    ],
)
def test_bad_probes_fail_before_training(tiny_tasks, tiny_config, tmp_path, probes, message):
    folder = write_lm_eval_probe(tmp_path / "probes")
    spec = yaml.safe_load((folder / "local-yesno.yaml").read_text())
    spec |= {
        "task": "missing-data",
        "dataset_kwargs": {"data_files": {"test": "/nonexistent.jsonl"}},
    }
    (folder / "missing-data.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    spec = yaml.safe_load((folder / "local-yesno.yaml").read_text())
    spec |= {"task": "bad-template", "doc_to_target": "{{no_such_field}}"}
    (folder / "bad-template.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    tiny_config.probes, tiny_config.probe_include = probes, [str(folder)]
    with pytest.raises(ClbenchError, match=message):
        run(tiny_config, include=(str(tiny_tasks),))
    assert not Path(tiny_config.output).exists()  # nothing written, nothing trained


def test_prompt_learning_is_refused_before_training(tiny_tasks, tiny_config, tmp_path):
    tiny_config.method = "prompt-tuning"
    tiny_config.probes = ["local-yesno"]
    tiny_config.probe_include = [str(write_lm_eval_probe(tmp_path / "probes"))]
    with pytest.raises(ClbenchError, match="cannot score a prompt-learning model"):
        run(tiny_config, include=(str(tiny_tasks),))
    assert not Path(tiny_config.output).exists()


def test_cli_probes_flags(tiny_tasks, tmp_path, capsys):
    folder = write_lm_eval_probe(tmp_path / "probes")
    args = ["run", "--sequence", "tiny", "--model", "tiny-random", "--steps-per-task", "1"]
    args += ["--include-path", str(tiny_tasks), "--output", str(tmp_path / "runs")]
    args += ["--probes", "local-yesno", "--probe-include", str(folder), "--probe-limit", "3"]
    args += ["--probe-batch-size", "2", "--eval-batch-size", "4"]
    assert main(args) == 0
    (found,) = (tmp_path / "runs").glob("*/results.json")
    block = json.loads(found.read_text())["probes"]
    assert block["limit"] == 3 and block["batch_size"] == 2
    assert "general forgetting" in capsys.readouterr().out


def test_config_rejects_bad_probe_fields():
    from clbench.config import RunConfig

    with pytest.raises(ClbenchError, match="'probes' names a probe twice"):
        RunConfig.from_dict({"probes": ["a", "a"]})
    with pytest.raises(ClbenchError, match="'probe_limit' must be >= 1"):
        RunConfig.from_dict({"probe_limit": 0})
    with pytest.raises(ClbenchError, match="'probes' must be a list"):
        RunConfig.from_dict({"probes": [""]})


def test_an_exported_task_scores_the_same_as_a_probe_through_both_harnesses(
    tiny_tasks, tiny_config, tmp_path
):
    """review-food as a clbench probe and, exported, as an lm-eval probe: equal every stage."""
    from clbench.reporting.lm_eval_export import export

    folder = tmp_path / "exported"
    export("review-food", folder, max_test_examples=8, name="review-food-lm")
    tiny_config.probes = ["review-food", "review-food-lm"]
    tiny_config.probe_include, tiny_config.probe_limit = [str(folder)], 8
    block = load_results(run(tiny_config, include=(str(tiny_tasks),)))["probes"]
    assert block["sources"] == ["clbench", "lm-eval"]
    assert [row[0] for row in block["matrix"]] == [row[1] for row in block["matrix"]]
