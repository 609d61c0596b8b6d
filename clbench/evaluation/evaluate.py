"""The evaluator: every metric of a task on its test set, batched.

- "rank" tasks (closed label sets) rank the options by their summed log-likelihood after the
  prompt; a tie goes to the option listed first, as with lm-eval's `acc`.
- "generate" tasks decode greedily, at most `max_new_tokens`, and cut the output at the task's
  first stop string.
- "preference" tasks compare the length-normalised log-likelihood of the chosen and the rejected
  response after the prompt.

The LM head runs only at the positions whose log-probabilities are needed: with left padding
these are the last few of every row, which `logits_to_keep` selects. When every option is one
token, one forward pass per example scores all options at once.

Under `accelerate launch` every process scores its share of the examples and the main process
gathers them, so all processes return the same scores.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from clbench.data.encoding import encode_prompt, encode_target, pad_left
from clbench.data.task import TaskData
from clbench.evaluation.scorers import SCORERS

# Logits kept at once: rows x kept positions; bounds memory for long continuations.
MAX_POSITIONS_PER_BATCH = 2048


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TaskData,
    accelerator: Accelerator,
    batch_size: int,
    max_length: int,
) -> dict[str, float]:
    """Every metric of the task's scorer; the primary one is under `data.task.metric`."""
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    task, examples = data.task, data.test
    with accelerator.split_between_processes(list(range(len(examples)))) as mine:
        share = [examples[i] for i in mine]
        prompts = [e.prompt for e in share]
        args = (batch_size, max_length, accelerator.device, task.name)
        if task.evaluation == "rank":
            predictions = rank_options(model, tokenizer, prompts, data.options, *args)
        elif task.evaluation == "preference":
            predictions = compare_responses(
                model,
                tokenizer,
                prompts,
                [e.target for e in share],
                [e.rejected for e in share],
                *args,
            )
        else:
            texts = generate(model, tokenizer, prompts, task.max_new_tokens, *args)
            predictions = [_cut(text, task.stop) for text in texts]
    predictions = _gather(accelerator, predictions)
    model.train(was_training)
    return SCORERS[task.metric](predictions, [_reference(e, task.evaluation) for e in examples])


def _reference(example: Any, evaluation: str) -> Any:
    if evaluation == "rank":
        return example.label
    return example.reference if example.reference is not None else example.target.strip()


def _cut(text: str, stops: list[str]) -> str:
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text.strip()


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
    scores = option_scores(
        model, contexts, option_ids, tokenizer.pad_token_id, batch_size, device, desc
    )
    return scores.argmax(dim=1).tolist()


def option_scores(
    model: torch.nn.Module,
    contexts: list[list[int]],
    option_ids: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    desc: str,
) -> torch.Tensor:
    """Summed log p(option | context), (contexts x options), by the cheapest exact path."""
    if all(len(ids) == 1 for ids in option_ids):  # one position per context scores them all
        queries = [([-1] * len(option_ids), [ids[0] for ids in option_ids])] * len(contexts)
        return torch.stack(_logprobs(model, contexts, queries, pad_id, batch_size, device, desc))
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        # peft prepends its virtual tokens to every forward pass, a cached one too, so the
        # options cannot reuse the context's cache: each (context, option) runs whole.
        queries = [(list(range(-len(ids) - 1, -1)), ids) for _ in contexts for ids in option_ids]
        sequences = [context + ids for context in contexts for ids in option_ids]
        scores = _logprobs(model, sequences, queries, pad_id, batch_size, device, desc)
        return torch.stack([s.sum() for s in scores]).view(len(contexts), len(option_ids))
    return _shared_prompt_scores(model, contexts, option_ids, pad_id, batch_size, device, desc)


def _shared_prompt_scores(
    model: torch.nn.Module,
    contexts: list[list[int]],
    option_ids: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    desc: str,
) -> torch.Tensor:
    """Summed log p(option | context), (contexts x options). Each context runs once, and its
    last position scores every option's first token; its KV cache is then repeated for the
    options longer than one token, which run only their tokens but the last."""
    n = len(option_ids)
    first_tokens = torch.tensor([ids[0] for ids in option_ids], device=device)
    longer = [i for i, ids in enumerate(option_ids) if len(ids) > 1]
    width = max((len(option_ids[i]) - 1 for i in longer), default=0)
    # Inputs are each longer option but its last token; targets are its tokens from the second.
    inputs = torch.full((len(longer), width), pad_id, dtype=torch.long)
    targets = torch.zeros((len(longer), width), dtype=torch.long)
    mask = torch.zeros((len(longer), width), dtype=torch.long)
    for row, i in enumerate(longer):
        ids = option_ids[i]
        inputs[row, : len(ids) - 1], targets[row, : len(ids) - 1] = (
            torch.tensor(ids[:-1]),
            torch.tensor(ids[1:]),
        )
        mask[row, : len(ids) - 1] = 1
    inputs, targets, mask = inputs.to(device), targets.to(device), mask.to(device)
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    out = torch.empty((len(contexts), n))
    rows = max(1, min(batch_size, MAX_POSITIONS_PER_BATCH // max(1, len(longer) * width)))
    bar = tqdm(total=len(order), desc=f"eval {desc}", leave=False, disable=len(order) <= rows)
    for start in range(0, len(order), rows):
        chunk = order[start : start + rows]
        batch = {k: v.to(device) for k, v in pad_left([contexts[i] for i in chunk], pad_id).items()}
        first = model(**batch, logits_to_keep=1, use_cache=bool(longer))
        totals = torch.log_softmax(first.logits[:, -1].float(), dim=-1)[:, first_tokens]
        if longer:
            totals[:, longer] += _continuation_scores(
                model, first.past_key_values, batch["attention_mask"], inputs, targets, mask
            ).view(len(chunk), len(longer))
        out[torch.tensor(chunk)] = totals.cpu()
        bar.update(len(chunk))
    bar.close()
    return out


def _continuation_scores(
    model: torch.nn.Module,
    cache: Any,
    context_mask: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Summed log p of each option's tokens after its first, for every (context, option) pair
    (context-major), from the contexts' KV cache."""
    rows, count = context_mask.shape[0], inputs.shape[0]
    cache.batch_repeat_interleave(count)
    lengths = context_mask.sum(dim=1).repeat_interleave(count)
    follow = model(
        input_ids=inputs.repeat(rows, 1),
        attention_mask=torch.cat(
            [context_mask.repeat_interleave(count, dim=0), mask.repeat(rows, 1)], dim=1
        ),
        position_ids=lengths[:, None] + torch.arange(inputs.shape[1], device=inputs.device),
        past_key_values=cache,
        use_cache=False,
    )
    logprobs = torch.log_softmax(follow.logits.float(), dim=-1)
    picked = logprobs.gather(-1, targets.repeat(rows, 1).unsqueeze(-1)).squeeze(-1)
    return (picked * mask.repeat(rows, 1)).sum(dim=-1)


@torch.inference_mode()
def compare_responses(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    chosen: list[str],
    rejected: list[str],
    batch_size: int,
    max_length: int,
    device: torch.device,
    desc: str,
) -> list[tuple[float, float]]:
    """(chosen, rejected) mean log-probability per response token, for each prompt."""
    pairs = []
    for prompt, *responses in zip(prompts, chosen, rejected, strict=True):
        for response in responses:
            ids = encode_target(tokenizer, response)[: max_length // 2]
            pairs.append((encode_prompt(tokenizer, prompt, max_length - len(ids)), ids))
    means = [
        float(s.mean()) for s in _continuations(model, pairs, tokenizer, batch_size, device, desc)
    ]
    return list(zip(means[0::2], means[1::2], strict=True))


def _continuations(model, pairs, tokenizer, batch_size, device, desc) -> list[torch.Tensor]:
    """log p of every continuation token after its context, for each (context, continuation)."""
    # Position -(m+1)+i of context+continuation predicts continuation token i.
    queries = [(list(range(-len(cont) - 1, -1)), cont) for _, cont in pairs]
    sequences = [ctx + cont for ctx, cont in pairs]
    return _logprobs(model, sequences, queries, tokenizer.pad_token_id, batch_size, device, desc)


def _logprobs(
    model: torch.nn.Module,
    sequences: list[list[int]],
    queries: list[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    desc: str,
) -> list[torch.Tensor]:
    """For each sequence, log p(token) at each (position from the end, token) of its query."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # less padding
    out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    bar = tqdm(total=len(order), desc=f"eval {desc}", leave=False, disable=len(order) <= batch_size)
    start = 0
    while start < len(order):
        keep = max(-min(queries[order[start]][0]), 1)
        rows = max(1, min(batch_size, MAX_POSITIONS_PER_BATCH // keep))
        chunk = order[start : start + rows]
        keep = max(-min(queries[i][0]) for i in chunk)
        batch = pad_left([sequences[i] for i in chunk], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch, logits_to_keep=keep, use_cache=False).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, index in enumerate(chunk):
            positions, tokens = queries[index]
            out[index] = logprobs[row, torch.tensor(positions), torch.tensor(tokens)].cpu()
        start += len(chunk)
        bar.update(len(chunk))
    bar.close()
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
