import math
import random
import string
from dataclasses import dataclass

import torch

from clbench.data.encoding import encode_prompt
from clbench.data.task import Example
from clbench.errors import ClbenchError
from clbench.methods import Method, Stage, Step


class LAMOL(Method):
    """LAMOL: language modeling for lifelong language learning (Sun, Ho and Lee, 2020, "LAMOL:
    LAnguage MOdeling for Lifelong Language Learning", ICLR), with task-specific generation
    tokens.

    The model learns each task and also to generate its examples: loss = QA loss +
    gen_lambda x LM loss, a loss term whose LM loss is the mean next-token loss of each batch
    example's text (prompt + target) after its task's generation marker, computed in a second
    forward pass as in the paper's code. The marker is the plain text "[GEN:<task name>] ",
    since the tokenizer is fixed. Before each later task, the model samples
    ceil(gamma x |train of the new task|) pseudo-examples, an equal share (rounded up) for each
    earlier task, prompted by that task's marker (top-k sampling). A sample is split into
    (prompt, target) at the last occurrence of the task's template boundary (the prompt
    template's literal ending, e.g. "\nAnswer:", then the target template's literal beginning,
    e.g. " "); samples without it, with an empty target or, for ranked tasks, a target outside
    the label options are dropped, as the paper drops samples without its ANS token. The
    pseudo-examples join the new task's batches at their share of the data (|pseudo| / |train|
    per example, a fractional count rounded at random) and get both losses, like real ones.

    No example of an earlier task is stored; the parse needs each earlier task's name, prompt
    and target templates and label options, which are kept. A task whose prompt template ends
    with a placeholder has no boundary and is refused. Sampling draws from the runner's
    per-stage seed, so a resumed stage makes the same pseudo-examples again. No task identity
    at inference; extra memory: none (task templates only).
    """

    name = "lamol"
    needs_prompts = True
    extra_memory = None

    @dataclass
    class Params:
        gen_lambda: float = 0.25
        gamma: float = 0.2  # pseudo-examples per example of the new task
        max_gen_tokens: int = 128
        top_k: int = 20
        temperature: float = 1.0

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.tasks: list[dict] = []  # earlier tasks: name, templates and options only
        self.pseudo: list[Example] = []
        self.ratio = 0.0  # pseudo-examples per training example of the stage
        self.rng = random.Random(0)

    @staticmethod
    def marker(task: str) -> str:
        return f"[GEN:{task}] "

    def before_task(self, stage: Stage) -> None:
        if not _boundary(stage.data.task.prompt, stage.data.task.target)[1]:
            raise ClbenchError(
                f"lamol: the prompt template of task {stage.data.task.name!r} ends with a "
                "placeholder, so generated samples cannot be split into prompt and target"
            )
        self.rng = random.Random(f"lamol:{stage.seed}:{stage.index}")
        self.pseudo = []
        if self.tasks:
            total = math.ceil(self.params.gamma * len(stage.data.train))
            for task in self.tasks:
                texts = self.sample(stage, task["name"], math.ceil(total / len(self.tasks)))
                self.pseudo += [e for e in (parse(t, task) for t in texts) if e is not None]
        self.ratio = len(self.pseudo) / len(stage.data.train)

    @torch.no_grad()
    def sample(self, stage: Stage, task: str, count: int) -> list[str]:
        """`count` texts sampled from the model after the task's generation marker."""
        model, tokenizer = stage.model, stage.tokenizer
        device = next(model.parameters()).device
        prompt = encode_prompt(tokenizer, self.marker(task), stage.config.max_length)
        new_tokens = min(self.params.max_gen_tokens, stage.config.max_length - len(prompt))
        training = model.training
        model.eval()
        texts = []
        for start in range(0, count, stage.config.eval_batch_size):
            rows = min(stage.config.eval_batch_size, count - start)
            ids = torch.tensor([prompt] * rows, device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=self.params.top_k,
                temperature=self.params.temperature,
                max_new_tokens=new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts += tokenizer.batch_decode(out[:, len(prompt) :], skip_special_tokens=True)
            stage.cost.generated(out[:, len(prompt) :] != tokenizer.pad_token_id)
        model.train(training)
        return texts

    def training_batch(self, batch: list[Example], stage: Stage) -> list[Example]:
        share = self.ratio * len(batch)
        count = math.floor(share) + (self.rng.random() < share - math.floor(share))
        return batch + self.rng.sample(self.pseudo, min(count, len(self.pseudo)))

    def training_loss(self, loss: torch.Tensor, step: Step, stage: Stage) -> torch.Tensor:
        if not step.examples:
            return loss
        generation = [
            Example(self.marker(e.task), e.prompt + e.target, e.task) for e in step.examples
        ]
        return loss + self.params.gen_lambda * stage.loss(generation, backward=True)

    def after_task(self, stage: Stage) -> None:
        task = stage.data.task
        if task.name not in [t["name"] for t in self.tasks]:
            self.tasks.append(
                {
                    "name": task.name,
                    "prompt": task.prompt,
                    "target": task.target,
                    "options": stage.data.options,
                }
            )

    def state_dict(self) -> dict:
        return {"tasks": self.tasks}

    def load_state_dict(self, state: dict) -> None:
        self.tasks = state["tasks"]


def _boundary(prompt: str, target: str) -> tuple[str, str, str]:
    """The prompt template's literal beginning and ending, and the target's literal beginning."""
    prompt_parts = list(string.Formatter().parse(prompt))
    head = prompt_parts[0][0]
    tail = prompt_parts[-1][0] if prompt_parts[-1][1] is None else ""
    return head, tail, next(string.Formatter().parse(target))[0]


def parse(text: str, task: dict) -> Example | None:
    """A generated sample split into (prompt, target) at the last template boundary, or None
    when it does not have the task's format."""
    head, tail, target_head = _boundary(task["prompt"], task["target"])
    cut = text.rfind(tail + target_head)
    if cut < 0 or not text[: cut + len(tail)].startswith(head):
        return None
    prompt, target = text[: cut + len(tail)], text[cut + len(tail) :]
    options = task["options"]
    if not target.strip() or (options is not None and target not in options):
        return None
    return Example(prompt, target, task["name"], options.index(target) if options else None)
