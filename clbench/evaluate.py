"""The evaluator: one score per task, batched.

Closed-label tasks rank the options by their summed log-likelihood given the prompt (ties go
to the first option, as with lm-eval's `acc`). The LM head runs only at the positions that
predict option tokens: with left padding these are the last few of every row, which
`logits_to_keep` selects. When every option is one token, one forward pass per example scores
all options at once. Generative tasks use batched greedy decoding.

Under `accelerate launch` every process scores its share of the examples and the main process
gathers them, so all processes return the same score.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from clbench.encoding import encode_prompt, encode_target, pad_left
from clbench.scorers import SCORERS
from clbench.task import TaskData


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TaskData,
    accelerator: Accelerator,
    batch_size: int,
    max_length: int,
) -> float:
    """The task's primary metric on its test set, in [0, 1]."""
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    examples = data.test
    with accelerator.split_between_processes(list(range(len(examples)))) as mine:
        share = [examples[i] for i in mine]
        prompts = [e.prompt for e in share]
        if data.options is not None:
            predictions = rank_options(
                model,
                tokenizer,
                prompts,
                data.options,
                batch_size,
                max_length,
                accelerator.device,
                data.task.name,
            )
        else:
            predictions = generate(
                model,
                tokenizer,
                prompts,
                data.task.max_new_tokens,
                batch_size,
                max_length,
                accelerator.device,
                data.task.name,
            )
    predictions = _gather(accelerator, predictions)
    references = [e.label if data.options is not None else e.target for e in examples]
    model.train(was_training)
    return float(SCORERS[data.task.metric](predictions, references))


@torch.inference_mode()
def rank_options(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    options: list[str],
    batch_size: int,
    max_length: int,
    device: torch.device,
    desc: str,
) -> list[int]:
    """Index of the most likely option for each prompt."""
    option_ids = [encode_target(tokenizer, option) for option in options]
    longest = max(len(ids) for ids in option_ids)
    contexts = [encode_prompt(tokenizer, p, max_length - longest) for p in prompts]
    if longest == 1:  # one position per prompt scores every option
        firsts = torch.tensor([ids[0] for ids in option_ids])
        rows = _tail_logprobs(model, contexts, 1, tokenizer.pad_token_id, batch_size, device, desc)
        return [int(row[-1, firsts].argmax()) for row in rows]
    pairs = [(c, o) for c in contexts for o in option_ids]
    rows = _tail_logprobs(
        model,
        [c + o for c, o in pairs],
        longest + 1,
        tokenizer.pad_token_id,
        batch_size,
        device,
        desc,
    )
    scores = []
    for (_, cont), row in zip(pairs, rows, strict=True):
        # Position i of the last len(cont)+1 predicts token i of the continuation.
        predicting = row[-len(cont) - 1 : -1]
        scores.append(float(predicting.gather(1, torch.tensor(cont)[:, None]).sum()))
    per_prompt = torch.tensor(scores).view(len(contexts), len(options))
    return per_prompt.argmax(dim=1).tolist()


def _tail_logprobs(
    model: torch.nn.Module,
    sequences: list[list[int]],
    keep: int,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    desc: str,
) -> list[torch.Tensor]:
    """Log-softmax over the vocabulary at the last `keep` positions of every sequence."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # less padding
    out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"eval {desc}", leave=False, disable=len(starts) < 2):
        chunk = order[start : start + batch_size]
        batch = {
            k: v.to(device) for k, v in pad_left([sequences[i] for i in chunk], pad_id).items()
        }
        logits = model(**batch, logits_to_keep=keep, use_cache=False).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, index in enumerate(chunk):
            out[index] = logprobs[row]
    return out


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    max_length: int,
    device: torch.device,
    desc: str,
) -> list[str]:
    """Greedy continuations, decoded without special tokens."""
    contexts = [encode_prompt(tokenizer, p, max_length - max_new_tokens) for p in prompts]
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    outputs = [""] * len(contexts)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"generate {desc}", leave=False, disable=len(starts) < 2):
        chunk = order[start : start + batch_size]
        batch = pad_left([contexts[i] for i in chunk], tokenizer.pad_token_id)
        batch.pop("position_ids")  # generate() derives positions from the attention mask
        batch = {k: v.to(device) for k, v in batch.items()}
        generated = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        for row, index in enumerate(chunk):
            outputs[index] = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
    return outputs


def _gather(accelerator: Accelerator, predictions: list) -> list:
    if accelerator.num_processes == 1:
        return predictions
    from accelerate.utils import gather_object

    return gather_object(predictions)
