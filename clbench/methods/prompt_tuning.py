import math
from dataclasses import dataclass

import torch
from peft import PeftModel, PromptTuningConfig, get_peft_model

from clbench.data.task import TaskData
from clbench.errors import ClbenchError
from clbench.methods import Method, Stage, refuse_peft


def prompt_name(task: int) -> str:
    return f"task{task}"


class PromptTuning(Method):
    """Prompt tuning (Lester, Al-Rfou and Constant, 2021, "The Power of Scale for
    Parameter-Efficient Prompt Tuning", EMNLP), one soft prompt per task.

    Each task trains its own `num_virtual_tokens` embeddings, prepended to the input (peft);
    the model and the earlier prompts stay frozen, so nothing learned is ever overwritten.
    Needs the task identity at inference: `before_eval` selects the task's prompt. A task not
    trained yet is evaluated with the most recent prompt (before any training: the first
    prompt as initialised). Extra memory: one prompt per task (num_virtual_tokens x hidden).

    `init` = "random" draws the prompt uniformly from [-0.5, 0.5], as in the paper; "text"
    copies the embeddings of `init_text`'s tokens, repeated to the prompt's length (the
    paper's vocabulary / class-label initialisations are close relatives). Row 0 of the
    matrix is evaluated before `before_task` can read the tokenizer, so it always uses the
    randomly initialised first prompt.
    """

    name = "prompt-tuning"
    uses_task_id = True
    changes_model_before_training = True  # row 0 is scored with the first (random) prompt
    extra_memory = "a soft prompt per task (num_virtual_tokens x hidden size)"

    @dataclass
    class Params:
        num_virtual_tokens: int = 20
        init: str = "random"  # "random" or "text"
        init_text: str = "Read the input and answer the question."

    def __init__(self, params=None) -> None:
        super().__init__(params)
        if self.params.init not in ("random", "text") or not self.params.init_text:
            raise ClbenchError(
                "prompt-tuning: init must be 'random' or 'text', with a non-empty init_text"
            )
        self.prompts = 1  # prompts on the model: one per task begun, the first from the start
        self.task_prompt: dict[str, int] = {}  # task name -> the prompt trained on it

    def _config(self) -> PromptTuningConfig:
        return PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=self.params.num_virtual_tokens
        )

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        refuse_peft(model, "prompt-tuning", "adds its own soft prompts")
        model = get_peft_model(model, self._config(), adapter_name=prompt_name(1))
        for task in range(2, self.prompts + 1):  # on --resume: the saved stages' prompts
            model.add_adapter(prompt_name(task), self._config())
        for task in range(1, self.prompts + 1):
            _random_init(model, prompt_name(task))
        model.set_adapter(prompt_name(self.prompts))
        return model

    def before_task(self, stage: Stage) -> None:
        model, name = stage.model, prompt_name(stage.index)
        if stage.index > self.prompts:  # the first task trains the prompt made in wrap_model
            self.prompts = stage.index
            model.add_adapter(name, self._config())
            _random_init(model, name)
        if self.params.init == "text":
            self._text_init(model, name, stage.tokenizer)
        model.set_adapter(name)
        for key, param in model.prompt_encoder.named_parameters():
            param.requires_grad = key.startswith(f"{name}.")  # earlier prompts stay fixed
        self.task_prompt[stage.data.task.name] = stage.index

    def before_eval(self, model: torch.nn.Module, data: TaskData) -> None:
        model.set_adapter(prompt_name(self.task_prompt.get(data.task.name, self.prompts)))

    def _text_init(self, model: PeftModel, name: str, tokenizer) -> None:
        ids = tokenizer(self.params.init_text, add_special_tokens=False)["input_ids"]
        count = self.params.num_virtual_tokens
        ids = (ids * math.ceil(count / len(ids)))[:count]
        weight = model.prompt_encoder[name].embedding.weight
        with torch.no_grad():
            weight.copy_(model.get_input_embeddings()(torch.tensor(ids, device=weight.device)))

    def state_dict(self) -> dict:
        return {"prompts": self.prompts, "task_prompt": self.task_prompt}

    def load_state_dict(self, state: dict) -> None:
        self.prompts, self.task_prompt = state["prompts"], dict(state["task_prompt"])


def _random_init(model: PeftModel, name: str) -> None:
    with torch.no_grad():
        model.prompt_encoder[name].embedding.weight.uniform_(-0.5, 0.5)
