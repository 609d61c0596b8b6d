"""`clbench export-lm-eval`: a clbench task as an lm-eval task folder (YAML plus local data).

    <out>/<task>.jsonl   the exact test examples a clbench run scores (same subsample)
    <out>/<task>.yaml    an lm-eval task reading that file (`dataset_path: json`)
    <out>/utils.py       for generated-text tasks only: scores with clbench's own scorer

Ranked tasks become `multiple_choice` tasks whose choices are clbench's rendered options, so
lm-eval's `acc` is clbench's accuracy. Generated-text tasks become `generate_until` tasks that
stop at the task's stop strings and score the whole test set with the same scorer clbench
uses. Preference tasks have no lm-eval equivalent (lm-eval's `acc_norm` divides by bytes,
clbench's preference score by tokens), so they are refused.

The YAML names the data file by its absolute path, because lm-eval resolves `data_files`
against the working directory; export again after moving the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from clbench import __version__
from clbench.data import registry
from clbench.data.task import TaskData
from clbench.errors import ClbenchError
from clbench.results.io import write_text

UTILS = '''"""Written by `clbench export-lm-eval`: lm-eval's generations, clbench's scorer."""

import json

from clbench.evaluation.scorers import SCORERS


def process_results(doc, results):
    # lm-eval has already cut the generation at the task's stop strings.
    reference = json.loads(doc["reference"])
    return {doc["metric"]: (results[0].strip(), reference, doc["metric"], doc["metric_args"])}


def aggregate(items):
    predictions, references, metrics, options = zip(*items)
    scorer = SCORERS[metrics[0]]
    return scorer(list(predictions), list(references), **json.loads(options[0]))[metrics[0]]
'''


def export(
    task_name: str,
    out: str | Path,
    data_dir: str | None = None,
    include: tuple[str, ...] = (),
    max_test_examples: int | None = None,
    name: str | None = None,
) -> list[Path]:
    """Write the lm-eval folder for `task_name` (as lm-eval task `name`, by default the same);
    returns the files written."""
    data = registry.load_task(task_name, include).load(data_dir, max_test=max_test_examples)
    task = data.task
    if task.evaluation == "preference":
        raise ClbenchError(
            f"task {task.name!r} is a preference task; lm-eval has no metric equal to clbench's "
            "(mean log-probability per token of the chosen vs the rejected response)"
        )
    name = name or task.name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_file = (out / f"{name}.jsonl").resolve()
    records = _records(data)
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "doc_to_text": "prompt",
        "metadata": {
            "version": 1,
            "clbench_task": task.name,
            "clbench_version": __version__,
            "clbench_metric": task.metric,
            "test_fingerprint": data.fingerprints["test"],
        },
    }
    if task.evaluation == "rank":
        config |= {
            "output_type": "multiple_choice",
            "doc_to_choice": "choices",
            "doc_to_target": "label",
            # The options already start with their own separator (" World").
            "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        functions = ""
    else:
        config |= {
            "output_type": "generate_until",
            "doc_to_target": "target",
            "target_delimiter": "",
            "generation_kwargs": {
                "until": task.stop,
                "max_gen_toks": task.max_new_tokens,
                "do_sample": False,
            },
        }
        functions = (
            "process_results: !function utils.process_results\n"
            "metric_list:\n"
            f"  - metric: {task.metric}\n"
            "    aggregation: !function utils.aggregate\n"
            "    higher_is_better: true\n"
        )
    header = f"# Written by `clbench export-lm-eval --task {task.name}`; run it with\n"
    header += f"#   lm_eval --model hf --include_path {out} --tasks {name} ...\n"
    written = [data_file, out / f"{name}.yaml"]
    write_text(data_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_text(written[1], header + yaml.safe_dump(config, sort_keys=False) + functions)
    if functions:
        written.append(out / "utils.py")
        write_text(written[2], UTILS)
    return written


def _records(data: TaskData) -> list[dict]:
    if data.task.evaluation == "rank":
        return [{"prompt": e.prompt, "choices": data.options, "label": e.label} for e in data.test]
    return [
        {
            "prompt": e.prompt,
            "target": e.target,
            # JSON strings: references may be structured (NER's tokens and tags).
            "reference": json.dumps(reference),
            "metric": data.task.metric,
            "metric_args": json.dumps(data.metric_args),  # the BLEU tokenizer, say
        }
        for e, reference in zip(data.test, data.references, strict=True)
    ]
