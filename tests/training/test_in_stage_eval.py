"""Scores within a stage (`--eval-every N`): the language-modelling tasks are scored every N
optimizer steps, the points are kept in results.json, survive a resume, and do not change
training."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clbench.config import RunConfig
from clbench.errors import ClbenchError
from clbench.results.io import read_json, read_results
from clbench.training import train
from clbench.training.runner import run, run_dir_of


class _Crash(Exception):
    """Stands for a process that dies in the middle of an optimizer step."""


def _corpus(tasks: Path, data: Path, name: str, seed: int) -> None:
    """A language-modelling dataset in the mirror layout and its one-file task."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "dogs", "ran", "far", "from", "red", "house"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) for _ in range(40)]
    folder = data / "language_modeling" / name
    folder.mkdir(parents=True)
    for split, part in (("train", texts[:32]), ("test", texts[32:])):
        lines = [json.dumps({"text": f"{name} {i}: {t}"}) for i, t in enumerate(part)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = {"name": name, "family": "language_modeling", "source": {"dataset": name}}
    (tasks / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")


@pytest.fixture
def mixed(tiny_tasks: Path, tmp_path: Path) -> Path:
    """Two corpora and a classification task between them, in the include folder."""
    _corpus(tiny_tasks, tmp_path / "data", "lm-a", 1)
    _corpus(tiny_tasks, tmp_path / "data", "lm-b", 2)
    sequence = {"name": "mixed", "tasks": ["lm-a", "t-pos", "lm-b"]}
    (tiny_tasks / "mixed.yaml").write_text(yaml.safe_dump(sequence), encoding="utf-8")
    return tiny_tasks


def _config(tmp_path: Path, name: str, **fields) -> RunConfig:
    """Five steps a stage: points after steps 2 and 4, none at the stage's end (step 5)."""
    values = dict(sequence="mixed", model="tiny-random", method="replay", steps_per_task=5)
    values |= dict(batch_size=4, lr=1e-2, max_length=32, eval_batch_size=8)
    values |= dict(data_dir=str(tmp_path / "data"), output=str(tmp_path / name))
    values["method_args"] = {"buffer_size": 8}  # replay draws with its own generator
    return RunConfig(**(values | fields))


def _record_losses(monkeypatch, crash_at: tuple[int, int] | None = None) -> dict:
    """(stage, step) -> loss of every optimizer step; with `crash_at`, fail in that step."""
    losses = {}
    real = train.check_loss

    def check(value, stage, step, accelerator):
        if (stage.index, step) == crash_at:
            raise _Crash
        losses[(stage.index, step)] = value
        return real(value, stage, step, accelerator)

    monkeypatch.setattr(train, "check_loss", check)
    return losses


def _points(results) -> list[dict]:
    return [point.dump() for point in results.curves_in_stage.points]


def test_scoring_within_stages_changes_no_training_and_keeps_the_points(
    mixed, tmp_path, monkeypatch
):
    include = (str(mixed),)
    plain_losses = _record_losses(monkeypatch)
    plain = read_results(run(_config(tmp_path, "plain"), include=include))
    monkeypatch.undo()
    losses = _record_losses(monkeypatch)
    scored = read_results(run(_config(tmp_path, "scored", eval_every=2), include=include))
    # Training and the matrix are those of the run that scored nothing within its stages.
    assert losses == plain_losses and len(losses) == 15
    assert scored.matrix == plain.matrix
    assert plain.curves_in_stage is None

    block = scored.curves_in_stage
    assert (block.eval_every, block.tasks) == (2, ["lm-a", "lm-b"])  # not the classification
    assert [(p.stage, p.step) for p in block.points] == [(k, n) for k in (1, 2, 3) for n in (2, 4)]
    assert all(set(p.scores) == {"lm-a", "lm-b"} for p in block.points)
    assert all(
        set(s) == {"bits_per_byte", "perplexity", "loss"}
        for p in block.points
        for s in p.scores.values()
    )
    # Tokens trained so far in the run: between the ends of the stages, which the stage records
    # give.
    per_stage = [record["train_tokens"] for record in scored.timings["stages"][1:]]
    assert per_stage == [r["train_tokens"] for r in plain.timings["stages"][1:]]
    assert sum(per_stage) == scored.cost.train_tokens
    ends = [sum(per_stage[:k]) for k in range(4)]
    for p in block.points:
        assert ends[p.stage - 1] < p.train_tokens < ends[p.stage]
    lm_steps = [p.train_tokens - ends[p.stage - 1] for p in block.points if p.stage == 1]
    assert lm_steps[0] == 2 * 4 * 32 < lm_steps[1]  # 4 full blocks of 32 tokens a step
    # The first stage trains lm-a: its loss after step 4 is below its loss before training.
    first = block.points[1].scores["lm-a"]["bits_per_byte"]
    assert first < scored.matrix[0][0]
    # Their time is evaluation time: the cost's eval seconds are the stages' records'.
    stage_eval = sum(record["eval_seconds"] for record in scored.timings["stages"])
    assert scored.cost.eval_seconds == pytest.approx(stage_eval)


def test_the_points_survive_a_step_checkpoint_and_a_stage_checkpoint(mixed, tmp_path, monkeypatch):
    include = (str(mixed),)
    whole = read_results(run(_config(tmp_path, "whole", eval_every=2), include=include))

    # Stopped in stage 2 at step 5, after the point of step 4 and its step checkpoint.
    config = _config(tmp_path, "stopped", eval_every=2, save_every=3)
    _record_losses(monkeypatch, crash_at=(2, 5))
    with pytest.raises(_Crash):
        run(config, include=include)
    state = read_json(run_dir_of(config) / "state.json")
    assert state["step_checkpoint"]["step"] == 3
    assert [p["step"] for p in state["in_stage"][2]] == [2]  # the point of step 4 was lost
    monkeypatch.undo()
    run(config, include=include, stop_after=1)  # stage 2 from its step 3
    state = read_json(run_dir_of(config) / "state.json")
    assert len(state["rows"]) == 3 and [p["step"] for p in state["in_stage"][2]] == [2, 4]
    finished = read_results(run(config, include=include))  # stage 3, from its checkpoint
    assert finished.matrix == whole.matrix
    assert _points(finished) == _points(whole)


def test_a_negative_eval_every_is_refused():
    with pytest.raises(ClbenchError, match="'eval_every' must be >= 0"):
        RunConfig(eval_every=-1).validate()


def test_scoring_puts_back_the_random_generators_and_the_training_mode():
    model = torch.nn.Linear(2, 2)
    model.train()
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    with train._untouched(model):  # an evaluation that draws and switches to eval mode
        torch.rand(5), random.random(), np.random.rand(4)
        model.eval()
    assert model.training
    drawn = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]
