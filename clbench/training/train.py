"""Training on one task for one stage, through `accelerate` (device, mixed precision,
gradient accumulation, and data sharding under `accelerate launch`)."""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clbench.data.encoding import collate
from clbench.data.task import Example
from clbench.methods import Method, Stage, Step


def train_task(
    model: torch.nn.Module,
    stage: Stage,
    method: Method,
    accelerator: Accelerator,
    desc: str,
) -> dict[str, float]:
    """Train `model` (prepared by accelerate) on `stage.data.train` for the run's budget;
    returns the steps done and the last loss."""
    config, tokenizer = stage.config, stage.tokenizer
    loader = DataLoader(
        stage.data.train,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=list,
        generator=torch.Generator().manual_seed(stage.seed * 1000 + stage.index),
    )
    steps = config.steps_per_task or config.epochs * math.ceil(len(loader) / config.grad_accum)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The scheduler is not prepared by accelerate: it steps once per optimizer step, whatever
    # the process count.
    optimizer, scheduler = method.configure_optimizer(trainable, stage, steps)
    optimizer, loader = accelerator.prepare(optimizer, loader)
    task = stage.data.task
    # DPO compares with the model as it was when the stage started.
    reference = _frozen_copy(stage.model) if task.objective == "dpo" else None
    model.train()
    done, loss_value = 0, float("nan")
    bar = tqdm(total=steps, desc=desc, disable=not accelerator.is_local_main_process)
    while done < steps:
        for batch in loader:
            batch = method.training_batch(batch, stage)
            with accelerator.accumulate(model):
                loss = _loss(model, reference, tokenizer, batch, stage, method, done)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    method.after_backward(stage)
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
    method: Method,
    done: int,
) -> torch.Tensor:
    """SFT loss on the targets; DPO loss on preference pairs of the stage's own DPO task; then
    the method's `training_loss`.

    Replayed pairs of earlier alignment tasks are trained on their chosen response (SFT).
    """
    task, max_length = stage.data.task, stage.config.max_length
    device = next(stage.model.parameters()).device
    pairs = [e for e in batch if reference is not None and e.task == task.name and e.rejected]
    plain = [e for e in batch if e not in pairs]
    parts, step = [], Step(done, plain, None, None)
    if plain:
        inputs = {k: v.to(device) for k, v in collate(tokenizer, plain, max_length).items()}
        outputs = model(**inputs)
        step = Step(done, plain, inputs, outputs.logits)
        parts.append((len(plain), outputs.loss))
    if pairs:
        both = pairs + [dataclasses.replace(e, target=e.rejected) for e in pairs]
        inputs = {k: v.to(device) for k, v in collate(tokenizer, both, max_length).items()}
        policy = sequence_logprobs(model, inputs)
        with torch.no_grad():
            ref = sequence_logprobs(reference, inputs)
        n = len(pairs)
        loss = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], task.beta)
        parts.append((n, loss))
    loss = sum(count * value for count, value in parts) / sum(count for count, _ in parts)
    return method.training_loss(loss, step, stage)


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
