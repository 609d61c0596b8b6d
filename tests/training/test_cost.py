"""The `cost` block of results.json: what a tiny run counts, method by method, and the cost
columns and figure of the reports."""

import dataclasses
import json
import re

import pytest

import clbench.training.train as train_module
from clbench.cli import main
from clbench.training.runner import run


def _run(config, tiny_tasks, method: str, **args) -> dict:
    config = dataclasses.replace(config, method=method, method_args=args)
    run_dir = run(config, include=(str(tiny_tasks),))
    return json.loads((run_dir / "results.json").read_text())


def test_seq_ft_counts_the_tokens_of_its_batches_and_nothing_else(
    tiny_config, tiny_tasks, monkeypatch
):
    masks = []
    real = train_module.collate

    def spy(*args, **kwargs):
        batch = real(*args, **kwargs)
        masks.append(batch["attention_mask"])
        return batch

    monkeypatch.setattr(train_module, "collate", spy)
    cost = _run(tiny_config, tiny_tasks, "seq-ft")["cost"]
    assert cost["train_tokens"] == sum(int(m.sum()) for m in masks) > 0
    assert cost["optimizer_steps"] == 3 * tiny_config.steps_per_task
    assert cost["generated_tokens"] == cost["extra_forward_passes"] == 0
    assert cost["extra_backward_tokens"] == cost["method_parameter_bytes"] == 0
    assert cost["train_seconds"] > 0 and cost["eval_seconds"] > 0
    assert cost["peak_memory_mb"] > 0


def test_ewc_counts_one_forward_and_backward_per_fisher_example(tiny_config, tiny_tasks):
    results = _run(tiny_config, tiny_tasks, "ewc", fisher_examples=5)
    cost = results["cost"]
    assert cost["extra_forward_passes"] == cost["extra_backward_passes"] == 3 * 5
    assert cost["extra_backward_tokens"] == cost["extra_forward_tokens"] > 0
    trainable = results["model"]["trainable_parameters"] * 4  # float32
    assert 2 * trainable <= cost["method_state_bytes"] < 3 * trainable  # Fisher and anchor


def test_lamol_counts_its_pseudo_samples_and_its_second_pass(tiny_config, tiny_tasks):
    cost = _run(tiny_config, tiny_tasks, "lamol", max_gen_tokens=8, gamma=0.5)["cost"]
    assert cost["generated_tokens"] > 0
    # The LM loss's pass on every step's examples, with a gradient.
    assert cost["extra_backward_passes"] == 3 * tiny_config.steps_per_task
    assert cost["method_seconds"] > 0


def test_lwf_counts_the_teachers_pass_on_every_later_step(tiny_config, tiny_tasks):
    cost = _run(tiny_config, tiny_tasks, "lwf")["cost"]
    assert cost["extra_forward_passes"] == 2 * tiny_config.steps_per_task
    assert cost["extra_backward_passes"] == 0


def test_prompt_tuning_counts_the_prompts_it_adds(tiny_config, tiny_tasks):
    results = _run(tiny_config, tiny_tasks, "prompt-tuning", num_virtual_tokens=4)
    prompt_bytes = results["model"]["trainable_parameters"] * 4  # the last prompt, float32
    assert results["cost"]["method_parameter_bytes"] == 3 * prompt_bytes


def _copies(results: dict, tmp_path) -> list[str]:
    """Two seeds of two methods made from one run's results, the second method 10x dearer."""
    paths = []
    for method, factor in [("seq-ft", 1), ("lwf", 10)]:
        for seed in (0, 1):
            content = json.loads(json.dumps(results))
            content["run_id"] = f"{method}-{seed}"
            content["seed"] = seed
            content["method"]["name"] = method
            content["cost"]["train_tokens"] *= factor
            content["cost"]["method_state_bytes"] = factor * 2**20
            path = tmp_path / "copies" / content["run_id"] / "results.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(content))
            paths.append(str(path))
    return paths


def test_report_shows_the_cost_and_the_cost_plot_renders(tiny_config, tiny_tasks, tmp_path, capsys):
    results = _run(tiny_config, tiny_tasks, "seq-ft")
    assert main(["report", str(tmp_path / "runs")]) == 0
    single = capsys.readouterr().out
    assert "### cost" in single and "train tokens" in single
    assert f"{results['cost']['train_tokens']:,}" in single
    paths = _copies(results, tmp_path)
    assert main(["report", *paths]) == 0
    table = capsys.readouterr().out
    row = [line for line in table.splitlines() if line.startswith("| lwf")][-1]  # the cost
    cells = [cell.strip() for cell in row.split("|")]
    assert f"{10 * results['cost']['train_tokens']:,}" in cells and "10.00" in cells
    out = tmp_path / "cost.png"
    assert main(["plot", *paths, "--kind", "cost", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_the_cost_plot_labels_its_axis_when_the_runs_span_less_than_a_decade(
    tiny_config, tiny_tasks, tmp_path
):
    from clbench.reporting.plots import plot

    results = _run(tiny_config, tiny_tasks, "seq-ft")
    runs = []
    for tokens in (200_000, 300_000, 700_000):  # no power of ten inside
        copy = json.loads(json.dumps(results))
        copy["run_id"] += f"-{tokens}"
        copy["cost"].update(train_tokens=tokens, extra_forward_tokens=0)
        copy["cost"].update(extra_backward_tokens=0, generated_tokens=0)
        runs.append(copy)
    fig = plot(runs, "cost")
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
    labels = [text for text in shown if text]
    assert len(labels) >= 2 and all(re.fullmatch(r"\d+[kM]", text) for text in labels), labels


def test_the_cost_plot_refuses_runs_without_a_cost_block(tiny_config, tiny_tasks, tmp_path):
    from clbench.errors import ClbenchError
    from clbench.reporting.plots import plot

    results = _run(tiny_config, tiny_tasks, "seq-ft")
    del results["cost"]
    with pytest.raises(ClbenchError, match="without a cost block"):
        plot([results], "cost")


def test_a_resumed_run_counts_what_an_uninterrupted_one_does(tiny_config, tiny_tasks, tmp_path):
    from clbench.training.cost import COUNTERS

    include = (str(tiny_tasks),)
    config = dataclasses.replace(tiny_config, method="ewc", method_args={"fisher_examples": 2})
    run(config, include=include, stop_after=1)
    resumed = json.loads((run(config, include=include) / "results.json").read_text())["cost"]
    whole = _run(
        dataclasses.replace(config, output=str(tmp_path / "whole")),
        tiny_tasks,
        "ewc",
        fisher_examples=2,
    )
    assert {k: resumed[k] for k in COUNTERS} == {k: whole["cost"][k] for k in COUNTERS}
    assert resumed["method_state_bytes"] == whole["cost"]["method_state_bytes"] > 0


def test_agem_counts_a_reference_gradient_on_every_later_step(tiny_config, tiny_tasks):
    cost = _run(tiny_config, tiny_tasks, "agem", memory_per_task=4, sample_size=2)["cost"]
    assert cost["extra_forward_passes"] == cost["extra_backward_passes"]
    assert cost["extra_backward_passes"] == 2 * tiny_config.steps_per_task


def test_ssr_counts_its_synthetic_samples_and_its_frozen_base_copy(tiny_config, tiny_tasks):
    args = {"num_candidates": 4, "num_synthetic": 2, "max_new_tokens": 8}
    results = _run(tiny_config, tiny_tasks, "ssr", **args)
    cost = results["cost"]
    assert cost["generated_tokens"] > 0 and cost["extra_forward_passes"] > 0  # the embeddings
    assert cost["extra_backward_passes"] == 0
    assert cost["method_state_bytes"] > results["model"]["parameters"] * 4  # the base copy
