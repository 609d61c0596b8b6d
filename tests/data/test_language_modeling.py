"""Language modelling: packing, bits per byte, the direction of loss-based scores in the
metrics, the task files of the family, and runs of language-modelling and mixed sequences on the
tiny model."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from clbench import metrics
from clbench.config import RunConfig
from clbench.data import packing
from clbench.data.registry import load_task
from clbench.data.task import Example, Task
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import document_losses
from clbench.evaluation.scorers import bits_per_byte
from clbench.methods import Stage, create_method
from clbench.reporting.tables import report
from clbench.results.io import load_results
from clbench.training.models import load_model
from clbench.training.runner import run

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "far",
    "away",
    "from",
    "the",
    "big",
    "red",
    "house",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny-random").tokenizer


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [[rng.choice(WORDS) for _ in range(rng.randint(3, 20))] for _ in range(count)]
    return [f"{seed}.{i} " + " ".join(w) for i, w in enumerate(words)]  # all distinct


def write_corpus(root: Path, name: str, train: list[str], test: list[str]) -> None:
    """A language-modelling dataset in the mirror layout, and its one-file task."""
    folder = root / "data" / "language_modeling" / name
    folder.mkdir(parents=True)
    for split, texts in (("train", train), ("test", test)):
        lines = [json.dumps({"text": t}) for t in texts]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = {"name": name, "family": "language_modeling", "source": {"dataset": name}}
    tasks = root / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")


# ---- packing -----------------------------------------------------------------------------------


def test_packing_fills_every_block_and_depends_only_on_the_seed(tokenizer):
    texts = _texts(30, seed=1)
    blocks = packing.pack(tokenizer, texts, 16, seed=7)
    stream = [i for text in texts for i in [*tokenizer(text)["input_ids"], tokenizer.eos_token_id]]
    assert all(len(b) == 16 for b in blocks) and len(blocks) == len(stream) // 16
    assert sorted(i for b in blocks for i in b) != []  # something to train on
    assert blocks == packing.pack(tokenizer, texts, 16, seed=7)
    assert blocks != packing.pack(tokenizer, texts, 16, seed=8)  # the order follows the seed
    # Documents end with EOS: as many separators as whole documents in the kept stream.
    kept = sum(b.count(tokenizer.eos_token_id) for b in blocks)
    assert len(texts) - 1 <= kept <= len(texts)


def test_windows_predict_every_token_once(tokenizer):
    text = " ".join(WORDS * 3)
    ids = [tokenizer.eos_token_id, *tokenizer(text)["input_ids"], tokenizer.eos_token_id]
    windows = packing.windows(tokenizer, text, 10)
    predicted = [i for w in windows for i in w[1:]]
    assert predicted == ids[1:] and all(len(w) <= 10 for w in windows)


def test_document_loss_is_the_models_next_token_loss(tokenizer):
    model = load_model("tiny-random").model.eval()
    texts = ["the cat sat on the mat", "a dog ran"]
    found = document_losses(model, tokenizer, texts, 2, 64, torch.device("cpu"), "t")
    for text, (nats, tokens, size) in zip(texts, found, strict=True):
        ids = torch.tensor([[tokenizer.eos_token_id, *tokenizer(text)["input_ids"], 2]])
        ids[0, -1] = tokenizer.eos_token_id
        with torch.no_grad():
            mean = model(input_ids=ids, labels=ids).loss.item()
        assert tokens == ids.shape[1] - 1 and size == len(text.encode("utf-8"))
        assert nats == pytest.approx(mean * tokens, rel=1e-4)
    # Cut into windows of 8 the same text costs more (less context) but counts the same tokens.
    short = document_losses(model, tokenizer, texts, 2, 8, torch.device("cpu"), "t")
    assert [t for _, t, _ in short] == [t for _, t, _ in found]


def test_bits_per_byte_is_total_nats_over_ln2_bytes():
    scores = bits_per_byte([(10.0, 5, 8), (6.0, 3, 4)], [None, None])
    assert scores["bits_per_byte"] == pytest.approx(16 / (math.log(2) * 12))
    assert scores["loss"] == pytest.approx(2.0)
    assert scores["perplexity"] == pytest.approx(math.exp(2.0))


# ---- the direction of loss-based scores --------------------------------------------------------


def test_metrics_read_a_loss_negated_so_improvement_is_positive_bwt():
    # Two bits-per-byte tasks: the first gets worse (forgotten) after the second is trained.
    losses = [[2.0, 2.0], [1.0, 1.8], [1.5, 1.2]]
    found = metrics.compute(losses, task_metrics=["bits_per_byte"] * 2)
    assert found["bwt"] == pytest.approx(-0.5) and found["fgt"] == pytest.approx(0.5)
    assert found["aa"] == pytest.approx(-1.35)
    assert found["fwt"] == pytest.approx(0.2)  # task 2 improved before it was trained
    improved = metrics.compute([[2.0, 2.0], [1.0, 1.8], [0.9, 1.2]], None, ["bits_per_byte"] * 2)
    assert improved["bwt"] == pytest.approx(0.1) and improved["fgt"] == pytest.approx(-0.1)
    # Fractions keep their reading; without task_metrics every column is higher-is-better.
    accuracy = [[0.5, 0.5], [0.9, 0.6], [0.7, 0.8]]
    assert metrics.compute(accuracy) == metrics.compute(accuracy, None, ["accuracy"] * 2)
    mixed = metrics.compute([[2.0, 0.5], [1.0, 0.6], [1.5, 0.8]], None, ["bits_per_byte", None])
    assert mixed["bwt"] == pytest.approx(-0.5)
    curves = metrics.curves(losses, None, ["bits_per_byte"] * 2)
    assert curves["bwt_k"][-1] == found["bwt"]
    with pytest.raises(ValueError, match="task_metrics has 1 names"):
        metrics.compute(losses, None, ["bits_per_byte"])


# ---- task files and bad input ------------------------------------------------------------------


def test_shipped_corpora_read_the_mirror_through_a_column_mapping():
    english = load_task("lm_multi30k_en")
    assert english.mirror_family == "machine_translation"
    assert english.source["fields"] == {"text": "src"}
    assert english.source["hub"]["fields"] == {"text": "en"}  # the Hub fallback
    assert load_task("lm_multi30k_de").source["fields"] == {"text": "tgt"}
    assert load_task("lm_agnews").metric == "bits_per_byte"


def test_a_field_that_is_not_language_modelling_is_one_error_naming_it(tmp_path):
    spec = {"name": "x", "family": "language_modeling", "source": {"dataset": "x"}}
    with pytest.raises(ClbenchError, match=r"^t\.yaml: field\(s\) labels do not belong"):
        Task.from_dict({**spec, "labels": ["a", "b"]}, origin="t.yaml")
    with pytest.raises(ClbenchError, match=r"field\(s\) max_new_tokens, prompt do not belong"):
        Task.from_dict({**spec, "prompt": "{text}", "max_new_tokens": 4}, origin="t.yaml")
    with pytest.raises(ClbenchError, match=r"'source\.family' is 'nope'"):
        Task.from_dict({**spec, "source": {"dataset": "x", "family": "nope"}})


def test_empty_corpus_and_empty_text_are_clear_errors(tmp_path):
    write_corpus(tmp_path, "empty", [], ["some text"])
    task = load_task(str(tmp_path / "tasks" / "empty.yaml"))
    with pytest.raises(ClbenchError, match=r"empty/train\.jsonl: the split is empty"):
        task.load(str(tmp_path / "data"))
    write_corpus(tmp_path, "blank", ["fine text", "   "], ["some text"])
    task = load_task(str(tmp_path / "tasks" / "blank.yaml"))
    with pytest.raises(ClbenchError, match=r"blank/train\.jsonl:2: 'text' is empty"):
        task.load(str(tmp_path / "data"))


def test_a_missing_mapped_column_names_the_line(tmp_path):
    folder = tmp_path / "machine_translation" / "pairs"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text('{"src": "a", "tgt": "b"}\n', encoding="utf-8")
    spec = {
        "name": "x",
        "family": "language_modeling",
        "source": {"dataset": "pairs", "family": "machine_translation", "fields": {"text": "de"}},
    }
    with pytest.raises(ClbenchError, match=r"pairs/train\.jsonl:1: no column de .*src, tgt"):
        Task.from_dict(spec).load(str(tmp_path))


def test_text_shorter_than_one_block_leaves_nothing_to_train(tmp_path, tokenizer):
    write_corpus(tmp_path, "tiny", ["a cat", "a dog"], ["a bird"])
    data = load_task(str(tmp_path / "tasks" / "tiny.yaml")).load(str(tmp_path / "data"))
    method = create_method("seq-ft")
    with pytest.raises(ClbenchError, match=r"'tiny' .*2 training document\(s\) hold 12 tokens"):
        packing.packed_tasks([data], method, tokenizer, 64, seed=0)
    [packed] = packing.packed_tasks([data], method, tokenizer, 4, seed=0)
    assert [len(e.ids) for e in packed.train] == [4, 4, 4]


def test_a_method_that_needs_prompts_is_refused_next_to_language_modelling(tmp_path, tokenizer):
    write_corpus(tmp_path, "corpus", _texts(20, 1), _texts(3, 2))
    data = load_task(str(tmp_path / "tasks" / "corpus.yaml")).load(str(tmp_path / "data"))
    for name in ("lamol", "ssr"):
        with pytest.raises(ClbenchError, match=f"method '{name}' makes its training examples"):
            packing.packed_tasks([data], create_method(name), tokenizer, 16, seed=0)


# ---- the paper's strategies --------------------------------------------------------------------


def test_fractional_replay_holds_its_share_on_average(tiny_tasks, tiny_config):
    method = create_method("cpt-rewarm", {"replay_fraction": 0.01})
    method.buffer = [Example("", "", "old", ids=(1, 2))] * 50
    method.before_task(Stage(2, None, None, 0, None, tiny_config))
    batch = [Example("", "", "new", ids=(3, 4))] * 8
    drawn = [method.training_batch(batch, None) for _ in range(20_000)]
    assert all(len(b) == 8 for b in drawn)  # replay replaces, the batch size stays
    share = sum(e.task == "old" for b in drawn for e in b) / (8 * len(drawn))
    assert share == pytest.approx(0.01, abs=0.002)


# ---- runs on the tiny model --------------------------------------------------------------------


def _config(tmp_path: Path, sequence: str, method: str, **extra) -> RunConfig:
    return RunConfig(
        sequence=sequence,
        model="tiny-random",
        method=method,
        steps_per_task=2,
        batch_size=4,
        max_length=32,
        eval_batch_size=8,
        max_test_examples=4,
        data_dir=str(tmp_path / "data"),
        output=str(tmp_path / "runs"),
        **extra,
    )


def test_a_language_shift_run_scores_bits_per_byte_and_reports_units(tmp_path):
    write_corpus(tmp_path, "lm-en", _texts(40, 1), _texts(4, 2))
    write_corpus(tmp_path, "lm-xx", [t.upper() for t in _texts(40, 3)], _texts(4, 4))
    (tmp_path / "tasks" / "shift.yaml").write_text(
        yaml.safe_dump({"name": "shift", "tasks": ["lm-en", "lm-xx"]}), encoding="utf-8"
    )
    args = {"replay_fraction": 0.25, "warmup_fraction": 0.5}
    config = _config(tmp_path, "shift", "cpt-rewarm", method_args=args, lr=1e-2)
    results = load_results(run(config, include=(str(tmp_path / "tasks"),)))
    matrix = results["matrix"]
    assert all(1.0 < cell < 20.0 for row in matrix for cell in row)  # bits, not fractions
    last = results["scores"][-1][0]
    assert set(last) == {"bits_per_byte", "perplexity", "loss"}
    assert last["bits_per_byte"] == matrix[-1][0]
    assert results["metrics"]["bwt"] == pytest.approx(matrix[1][0] - matrix[2][0])
    assert [t["metric"] for t in results["sequence"]["tasks"]] == ["bits_per_byte"] * 2
    # Padding-free training: every block is full.
    assert all(s["padded_fraction"] == 0 for s in results["timings"]["stages"][1:])
    table = report([results])
    assert "lm-en (bits/byte ↓)" in table and "bits/byte, negated" in table


@pytest.mark.parametrize("method", ["replay", "joint"])
def test_a_mixed_sequence_pretrains_then_fine_tunes(tmp_path, tiny_tasks, method):
    write_corpus(tmp_path, "reviews-text", _texts(40, 1), _texts(4, 2))
    (tmp_path / "tasks" / "mixed.yaml").write_text(
        yaml.safe_dump({"name": "mixed", "tasks": ["reviews-text", "t-pos", "t-food"]}),
        encoding="utf-8",
    )
    config = _config(tmp_path, "mixed", method)
    assert tiny_tasks == tmp_path / "tasks"  # the generated tasks are beside the corpus
    results = load_results(run(config, include=(str(tiny_tasks),)))
    metrics_of = [t["metric"] for t in results["sequence"]["tasks"]]
    assert metrics_of == ["bits_per_byte", "accuracy", "accuracy"]
    matrix = results["matrix"]
    assert matrix[-1][0] > 1.0 and all(0.0 <= row[1] <= 1.0 for row in matrix)
    expected = metrics.compute(matrix, None, metrics_of)
    assert results["metrics"]["aa"] == pytest.approx(expected["aa"])


def test_tables_and_leaderboard_show_losses_in_bits_per_byte():
    assert metrics.metrics_unit(["bits_per_byte"] * 2) == (1.0, "bits/byte")
    assert metrics.metrics_unit(["bits_per_byte", "accuracy"]) == (100.0, "%")
    from clbench.leaderboard.build import readme

    stat = {"mean": -1.23456, "std": 0.01, "n": 3}
    entry = {"table": "cpt-en-de", "name": "x", "model": "m", "n": 3, "flags": []}
    entry |= {"metrics": dict.fromkeys(metrics.METRIC_KEYS), "unit": "bits/byte"}
    entry["status"] = "self-reported"
    entry["metrics"]["aa"] = stat
    page = readme([entry])
    assert "-1.235 ± 0.010" in page and "Metrics in bits/byte" in page
    percent = readme([entry | {"unit": "%", "table": "other"}])
    assert "-123.5 ± 1.0" in percent and "Metrics in" not in percent


def test_a_study_sweep_reports_in_bits_per_byte_with_the_loss_figure(tmp_path, monkeypatch):
    # The continual pre-training study's shape in small: a sweep over cpt-rewarm's replay
    # share, one worker; its report names the rows by that share and is in bits per byte, and
    # its figures include the loss against training tokens.
    from clbench.sweep.driver import run_sweep, write_report
    from clbench.sweep.grid import load_grid

    monkeypatch.chdir(tmp_path)  # the sweep folder is relative to it
    write_corpus(tmp_path, "lm-en", _texts(40, 1), _texts(4, 2))
    write_corpus(tmp_path, "lm-xx", [t.upper() for t in _texts(40, 3)], _texts(4, 4))
    (tmp_path / "tasks" / "shift.yaml").write_text(
        yaml.safe_dump({"name": "shift", "tasks": ["lm-en", "lm-xx"]}), encoding="utf-8"
    )
    base = _config(tmp_path, "shift", "cpt-rewarm", eval_every=1).to_dict()
    base = {k: base[k] for k in ("sequence", "model", "steps_per_task", "batch_size")}
    shares = [{"name": "cpt-rewarm", "method_args": {"replay_fraction": f}} for f in (0.0, 0.5)]
    grid = {
        "include": ["tasks"],
        "output": "sweep",
        "base": base | {"max_length": 32, "max_test_examples": 4, "eval_every": 1, "lr": 1e-2},
        "axes": {"seed": [0], "method": shares},
        "report": {"metrics": "aa,fgt", "decimals": 3},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid), encoding="utf-8")
    loaded = load_grid(tmp_path / "grid.yaml", {"base": {"data_dir": str(tmp_path / "data")}})
    statuses = run_sweep(loaded, out=lambda _: None)
    assert {s.state for s in statuses} == {"done"}, [s.detail for s in statuses]
    written = write_report(loaded)
    text = written[0].read_text(encoding="utf-8")
    assert "### shift, tiny-random, in bits/byte" in text
    assert "| cpt-rewarm (replay_fraction=0.0) " in text
    assert "| cpt-rewarm (replay_fraction=0.5) " in text
    assert "shift-loss-vs-tokens.pdf" in {path.name for path in written}
