import contextlib
import copy
import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from sklearn.cluster import KMeans

from clbench.data.encoding import encode_prompt, pad_left
from clbench.data.task import Example
from clbench.errors import ClbenchError
from clbench.evaluation.evaluate import complete_text
from clbench.methods import Method, Stage

# Closes every demonstration in an in-context prompt; a generated input ends where it appears.
DELIMITER = "\n###\n"
DEMOS = "num_demos real training examples per task (in-context demonstrations)"


class SSR(Method):
    """Self-Synthesized Rehearsal (Huang et al., 2024, "Mitigating Catastrophic Forgetting in
    Large Language Models with Self-Synthesized Rehearsal", ACL).

    After each task, `num_demos` of its training examples are kept as demonstrations. Before
    each later task, for every earlier task: (1) the base model (as it was before any training)
    writes `num_candidates` new inputs by in-context learning, each sampled (temperature, top-p,
    top-k) after `shots` of that task's demonstration prompts; empty inputs, repeats and copies
    of a demonstration are dropped; (2) the latest model, the one the previous task ended with,
    answers each input greedily (cut at the task's stop strings; empty answers dropped), so the
    synthetic targets are its own outputs, labels of ranked tasks included;
    (3) the inputs are embedded, clustered into `num_synthetic` groups with K-means
    (scikit-learn), and the member nearest each centroid is kept; (4) every training batch gets
    `replay_ratio` x its size of these synthetic examples.

    The base model is the latest one with its adapters disabled under `--peft lora` (no extra
    memory), else a frozen copy taken by `wrap_model`. `synthesizer: latest` lets the latest
    model write the inputs too, as a variant that keeps no second model. The synthetic set is made
    afresh at every stage for every earlier task. Embeddings are the L2-normalised mean of the
    model's last hidden states (the paper's code uses a SimCSE encoder), and each cluster gives
    one example (the paper's code takes several per cluster, in proportion to its size).
    No task identity at inference; extra memory: `num_demos` real training examples per task,
    and with `synthesizer: base` and no `--peft lora`, one frozen copy of the base model.
    """

    name = "ssr"
    needs_prompts = True
    # With the default `synthesizer: base`; `describe` leaves the copy out for "latest".
    extra_memory = DEMOS + "; one frozen copy of the base model, unless --peft lora"

    @dataclass
    class Params:
        num_demos: int = 4  # real examples kept per task
        shots: int = 2  # demonstrations in each generation prompt
        num_candidates: int = 40  # synthetic inputs generated per earlier task
        num_synthetic: int = 20  # kept per earlier task after clustering
        replay_ratio: float = 0.5
        temperature: float = 1.0
        top_p: float = 0.9
        top_k: int = 0  # 0: no top-k filtering
        max_new_tokens: int = 64  # length of a generated input
        synthesizer: str = "base"  # writes the inputs: "base" (the paper's) or "latest"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        if self.params.synthesizer not in ("base", "latest"):
            raise ClbenchError(
                f"method 'ssr': synthesizer must be 'base' or 'latest', "
                f"got {self.params.synthesizer!r}"
            )
        self.base: torch.nn.Module | None = None  # the frozen copy, when there is one
        self.demos: list[Example] = []
        self.answers: dict[str, dict] = {}  # task -> its stop strings and max_new_tokens
        self.synthetic: list[Example] = []
        self.rng = random.Random(0)

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # On --resume this runs before the checkpoint is loaded: the model is still the base.
        if self.params.synthesizer == "base" and not isinstance(model, PeftModel):
            self.base = copy.deepcopy(model).eval().requires_grad_(False)
        return model

    def describe(self) -> dict[str, Any]:
        memory = self.extra_memory if self.params.synthesizer == "base" else DEMOS
        return {**super().describe(), "extra_memory": memory}

    @contextlib.contextmanager
    def _synthesizer(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model that writes the inputs: the latest, or the base (see the class)."""
        if self.params.synthesizer == "latest":
            yield model
        elif isinstance(model, PeftModel):
            with model.disable_adapter():
                yield model
        else:
            if self.base is None:
                raise ClbenchError("method 'ssr': wrap_model must run before the first task")
            yield self.base.to(next(model.parameters()).device)

    def before_task(self, stage: Stage) -> None:
        self.rng = random.Random(f"ssr:{stage.seed}:{stage.index}")
        if not self.demos:
            return
        model, seed = stage.model, stage.seed * 1000 + stage.index
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        # Sampling draws on its own seeded stream; training's random state is left untouched.
        with torch.no_grad(), torch.random.fork_rng([device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            self.synthetic = [
                x for task in self.answers for x in self._synthesize(task, stage, seed)
            ]
        model.train(was_training)

    def _synthesize(self, task: str, stage: Stage, seed: int) -> list[Example]:
        p, model, tokenizer = self.params, stage.model, stage.tokenizer
        demos = [d for d in self.demos if d.task == task]
        contexts = [
            "".join(
                d.prompt.strip() + DELIMITER
                for d in self.rng.sample(demos, min(p.shots, len(demos)))
            )
            for _ in range(p.num_candidates)
        ]
        sampling = {"do_sample": True, "temperature": p.temperature, "top_p": p.top_p}
        with self._synthesizer(model) as writer:
            texts = _generate(
                writer, tokenizer, contexts, p.max_new_tokens, stage, top_k=p.top_k, **sampling
            )
        seen, inputs = {d.prompt.strip() for d in demos}, []
        for text in texts:
            text = text.split(DELIMITER.strip())[0].strip()
            if text and text not in seen:
                seen.add(text)
                inputs.append(text)
        # Refinement: the latest model's own greedy answer becomes the target.
        spec = self.answers[task]
        outputs = _generate(
            model, tokenizer, inputs, spec["max_new_tokens"], stage, do_sample=False
        )
        pairs = [(x, _cut(y, spec["stop"])) for x, y in zip(inputs, outputs, strict=True)]
        pairs = [(x, y) for x, y in pairs if y.strip()]
        if not pairs:
            return []
        embeddings = _embed(model, tokenizer, [x for x, _ in pairs], stage)
        keep = select(embeddings, p.num_synthetic, seed)
        return [Example(prompt=pairs[i][0], target=pairs[i][1], task=task) for i in keep]

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        count = min(round(len(batch) * self.params.replay_ratio), len(self.synthetic))
        return batch + self.rng.sample(self.synthetic, count)

    def after_task(self, stage: Stage) -> None:
        train, task = stage.data.train, stage.data.task
        self.demos += self.rng.sample(train, min(self.params.num_demos, len(train)))
        self.answers[task.name] = {"stop": list(task.stop), "max_new_tokens": task.max_new_tokens}

    def state_dict(self) -> dict:
        return {
            "demos": [dataclasses.asdict(x) for x in self.demos],
            "answers": self.answers,
            "synthetic": [dataclasses.asdict(x) for x in self.synthetic],
        }

    def load_state_dict(self, state: dict) -> None:
        self.demos = [Example(**x) for x in state["demos"]]
        self.answers = state["answers"]
        self.synthetic = [Example(**x) for x in state["synthetic"]]


def select(embeddings: np.ndarray, count: int, seed: int) -> list[int]:
    """Indices of a diverse subset: K-means into `count` clusters, then the member nearest each
    centroid (distinct, since every item belongs to one cluster)."""
    if len(embeddings) <= count:
        return list(range(len(embeddings)))
    kmeans = KMeans(n_clusters=count, n_init=4, random_state=seed).fit(embeddings)
    distances = kmeans.transform(embeddings)
    picks = []
    for cluster in range(count):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if len(members):
            picks.append(int(members[distances[members, cluster].argmin()]))
    return sorted(picks)


def _batches(tokenizer, prompts: list[str], config, room: int, device) -> Iterator[dict]:
    """Left-padded batches of `eval_batch_size` prompts, each cut to its last `room` tokens."""
    for start in range(0, len(prompts), config.eval_batch_size):
        chunk = prompts[start : start + config.eval_batch_size]
        ids = [encode_prompt(tokenizer, x, room) for x in chunk]
        yield {k: v.to(device) for k, v in pad_left(ids, tokenizer.pad_token_id).items()}


def _generate(
    model, tokenizer, prompts: list[str], new: int, stage: Stage, **kwargs: Any
) -> list[str]:
    """At most `new` tokens after each prompt, decoded without special tokens; counted in the
    stage's cost."""
    device, texts, config = next(model.parameters()).device, [], stage.config
    for batch in _batches(tokenizer, prompts, config, config.max_length - new, device):
        batch.pop("position_ids")  # generate() derives positions from the attention mask
        out = model.generate(
            **batch,
            max_new_tokens=new,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **kwargs,
        )
        new_ids = out[:, batch["input_ids"].shape[1] :]
        stage.cost.generated(new_ids != tokenizer.pad_token_id)
        # Decoded as the evaluator decodes.
        texts += [complete_text(tokenizer, ids) for ids in new_ids.tolist()]
    return texts


def _embed(model, tokenizer, prompts: list[str], stage: Stage) -> np.ndarray:
    """L2-normalised mean of the last hidden states over each prompt's tokens."""
    device, rows = next(model.parameters()).device, []
    for batch in _batches(tokenizer, prompts, stage.config, stage.config.max_length, device):
        stage.cost.extra_forward(batch["attention_mask"])
        out = model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        mask = batch["attention_mask"].unsqueeze(-1)
        mean = (out.hidden_states[-1] * mask).sum(1) / mask.sum(1)
        rows.append(torch.nn.functional.normalize(mean.float(), dim=-1).cpu())
    return torch.cat(rows).numpy()


def _cut(text: str, stops: list[str]) -> str:
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text
