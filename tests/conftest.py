import os

# No test may reach the network; an unknown model name then fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gc
from pathlib import Path

import pytest
import yaml

from clbench.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# The data mirror tests read: $CLBENCH_DATA_DIR, else the shared folder beside the checkout.
MIRROR = Path(os.environ.get("CLBENCH_DATA_DIR") or SHARED_DATA)


def write_task(folder: Path, name: str, question: str, train: int = 16, test: int = 8) -> None:
    spec = {
        "name": name,
        "family": "text_classification",
        "source": {
            "generator": "review_question",
            "args": {"question": question, "train_size": train, "test_size": test},
        },
        "prompt": "{text}\nAnswer:",
        "target": " {label}",
        "labels": ["yes", "no"],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")


@pytest.fixture(autouse=True, scope="session")
def _untracked_imports() -> None:
    """The runner ends each stage with a full garbage collection (accelerate's free_memory),
    whose time grows with the objects alive, most of them made by importing torch and
    transformers. Freezing those out of the collector's reach halves the time of a tiny run."""
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401  (the tiny model's)

    gc.collect()
    gc.freeze()


@pytest.fixture
def tiny_tasks(tmp_path: Path) -> Path:
    """An include folder with three small generated tasks and the sequence `tiny`."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, question in [("t-pos", "positive"), ("t-food", "food"), ("t-neg", "negative")]:
        write_task(folder, name, question)
    (folder / "tiny.yaml").write_text(
        yaml.safe_dump({"name": "tiny", "tasks": ["t-pos", "t-food", "t-neg"]}), encoding="utf-8"
    )
    return folder


@pytest.fixture
def tiny_config(tmp_path: Path) -> RunConfig:
    """A run of `tiny` on the random 2-layer model: a few seconds on a CPU."""
    return RunConfig(
        sequence="tiny",
        model="tiny-random",
        steps_per_task=3,
        batch_size=4,
        lr=1e-2,
        eval_batch_size=4,
        output=str(tmp_path / "runs"),
    )


@pytest.fixture(scope="session")
def default_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three seeds of the generated `default` sequence on the random tiny model (read only)."""
    from clbench.training.runner import run

    output = tmp_path_factory.mktemp("default-runs")
    config = dict(sequence="default", model="tiny-random", steps_per_task=1, batch_size=4)
    config |= dict(max_test_examples=8, eval_batch_size=8, output=str(output))
    return [run(RunConfig(**config, seed=seed)) for seed in range(3)]
