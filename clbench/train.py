"""Training on one task for one stage, through `accelerate` (device, mixed precision,
gradient accumulation, and data sharding under `accelerate launch`)."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from clbench.config import RunConfig
from clbench.encoding import encode_prompt, encode_target
from clbench.method import Method, Stage
from clbench.task import Example


def collate(tokenizer: Any, batch: list[Example], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ids with the loss on target tokens (and a closing EOS) only."""
    rows = []
    for example in batch:
        target = [*encode_target(tokenizer, example.target), tokenizer.eos_token_id]
        target = target[: max_length - 1]
        prompt = encode_prompt(tokenizer, example.prompt, max_length - len(target))
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(row_labels)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def train_task(
    model: torch.nn.Module,
    tokenizer: Any,
    stage: Stage,
    method: Method,
    config: RunConfig,
    accelerator: Accelerator,
    desc: str,
) -> dict[str, float]:
    """Train `model` on `stage.data.train` for the run's budget; returns steps and last loss."""
    loader = DataLoader(
        stage.data.train,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=list,
        generator=torch.Generator().manual_seed(stage.seed * 1000 + stage.index),
    )
    steps = config.steps_per_task or config.epochs * math.ceil(len(loader) / config.grad_accum)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    # Not prepared by accelerate: it steps once per optimizer step, whatever the process count.
    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=steps,
    )
    optimizer, loader = accelerator.prepare(optimizer, loader)
    task = stage.data.task
    # DPO compares with the model as it was when the stage started.
    reference = _frozen_copy(accelerator.unwrap_model(model)) if task.objective == "dpo" else None
    model.train()
    done, loss_value = 0, float("nan")
    bar = tqdm(total=steps, desc=desc, disable=not accelerator.is_local_main_process)
    while done < steps:
        for batch in loader:
            batch = method.training_batch(batch, stage)
            with accelerator.accumulate(model):
                loss = _loss(model, reference, tokenizer, batch, stage, config, accelerator.device)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                scheduler.step()
                done += 1
                loss_value = float(loss.detach())
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
                if done >= steps:
                    break
    bar.close()
    accelerator.free_memory()  # drop accelerate's references to this stage's optimizer
    return {"steps": done, "final_loss": loss_value}


def _loss(
    model,
    reference,
    tokenizer,
    batch: list[Example],
    stage: Stage,
    config: RunConfig,
    device: torch.device,
) -> torch.Tensor:
    """SFT loss on the targets; DPO loss on preference pairs of the stage's own DPO task.

    Replayed pairs of earlier alignment tasks are trained on their chosen response (SFT).
    """
    task = stage.data.task
    pairs = [e for e in batch if reference is not None and e.task == task.name and e.rejected]
    plain = [e for e in batch if e not in pairs]
    parts = []
    if plain:
        inputs = {k: v.to(device) for k, v in collate(tokenizer, plain, config.max_length).items()}
        parts.append((len(plain), model(**inputs).loss))
    if pairs:
        both = pairs + [dataclasses.replace(e, target=e.rejected) for e in pairs]
        inputs = {k: v.to(device) for k, v in collate(tokenizer, both, config.max_length).items()}
        policy = sequence_logprobs(model, inputs)
        with torch.no_grad():
            ref = sequence_logprobs(reference, inputs)
        n = len(pairs)
        loss = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], task.beta)
        parts.append((n, loss))
    return sum(count * value for count, value in parts) / sum(count for count, _ in parts)


def sequence_logprobs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each row's labelled (target) tokens."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    labels = inputs["labels"][:, 1:]
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (labels != -100)).sum(dim=-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al., 2023, eq. 7), averaged over pairs."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)
    return frozen
