"""Training on one task for one stage, through `accelerate` (device, mixed precision,
gradient accumulation, and data sharding under `accelerate launch`).

Batches are grouped by length within shuffled buckets (`length_grouped_batches`), so they
carry little padding; their order is a function of the run's seed and the stage. The loss
runs the LM head only where a target token is predicted (clbench.training.loss). A DPO stage
computes the reference log-probabilities of its pairs once, before its first step, instead of
keeping a frozen copy of the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clbench.data.encoding import collate, length_grouped_batches
from clbench.data.task import Example
from clbench.errors import ClbenchError
from clbench.methods import Method, Stage, Step
from clbench.training.checkpoints import (
    StepCheckpoints,
    join_optimizer_state,
    rng_states,
    set_rng_states,
    split_optimizer_state,
)
from clbench.training.cost import COUNTERS
from clbench.training.guard import check_loss
from clbench.training.loss import prepended_positions, target_logits
from clbench.training.signals import Preempted, deferred, requested

PairKey = tuple[str, str, str]  # (prompt, chosen, rejected)
# Called after optimizer step n of a stage (not its last) to score the model in the middle of
# training; its time goes to `stage.cost.eval_seconds`.
InStageEval = Callable[[int], None]


def train_task(
    model: torch.nn.Module,
    stage: Stage,
    method: Method,
    accelerator: Accelerator,
    desc: str,
    saves: StepCheckpoints | None = None,
    in_stage: InStageEval | None = None,
) -> dict[str, float]:
    """Train `model` (prepared by accelerate) on `stage.data.train` for the run's budget, as
    the method's `stage_steps` sets it; returns the steps done, the first and last loss and
    the share of padding in the batches' tokens. A loss that is not finite raises a LossError
    (clbench.training.guard).

    With `saves`, the stage continues from its step checkpoint if it has one, writes one every
    `saves.every` optimizer steps, and on SIGTERM or SIGUSR1 finishes the step in progress,
    writes one and raises `Preempted`; it also writes one after the stage's last step
    (docs/reliability.md#step-checkpoints).

    `in_stage` is called after every optimizer step but the last, with the steps done, before
    a step checkpoint of that step is written; training goes on as if it had not been."""
    config = stage.config
    started = time.perf_counter()
    method_seconds, eval_seconds = stage.cost.method_seconds, stage.cost.eval_seconds
    sampler = LengthGroupedSampler(
        [_length(e) for e in stage.data.train], config.batch_size, stage.seed * 1000 + stage.index
    )
    loader = DataLoader(stage.data.train, batch_sampler=sampler, collate_fn=list)
    budget = config.steps_per_task or config.epochs * math.ceil(len(loader) / config.grad_accum)
    steps = method.stage_steps(stage, budget)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The scheduler is not prepared by accelerate: it steps once per optimizer step, whatever
    # the process count.
    optimizer, scheduler = method.configure_optimizer(trainable, stage, steps)
    optimizer, loader = accelerator.prepare(optimizer, loader)
    reference = None
    if stage.data.task.objective == "dpo":
        # After `before_task`: the reference is the model this stage starts training.
        pairs = _planned_pairs(stage, method, sampler, len(loader), steps, accelerator)
        reference = reference_logprobs(stage, pairs)
    model.train()
    progress = _Progress(stage, method, optimizer, scheduler, sampler)
    if saves is not None and saves.resume is not None:
        progress.load(saves)  # last: the random generators continue from the saved step
    bar = tqdm(
        total=steps, initial=progress.done, desc=desc, disable=not accelerator.is_local_main_process
    )
    with deferred() if saves is not None else contextlib.nullcontext():
        while progress.done < steps:
            for position, batch in enumerate(loader, start=1):
                if position <= progress.skip:  # trained before the step checkpoint
                    continue
                with stage.cost.method_time():
                    batch = method.training_batch(batch, stage)
                with accelerator.accumulate(model):
                    loss = _loss(
                        model, reference, batch, stage, method, progress.done, progress.padding
                    )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        with stage.cost.method_time():
                            method.after_backward(stage)
                    optimizer.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:
                    scheduler.step()
                    progress.stepped(float(loss.detach()), position)
                    check_loss(progress.loss, stage, progress.done, accelerator)
                    bar.update(1)
                    bar.set_postfix(loss=f"{progress.loss:.4f}")
                    if in_stage is not None and progress.done < steps:
                        with _untouched(model):
                            in_stage(progress.done)
                    if saves is not None:
                        progress.save_if_due(saves, last=progress.done >= steps)
                    if progress.done >= steps:
                        break
            progress.skip = 0
    bar.close()
    accelerator.free_memory()  # drop accelerate's references to this stage's optimizer
    stage.cost.optimizer_steps += progress.done
    # Time in the method's hooks is the method's (stage.cost.method_seconds), and time scoring
    # the model within the stage is evaluation's, not training's.
    elsewhere = stage.cost.method_seconds - method_seconds + stage.cost.eval_seconds - eval_seconds
    stage.cost.train_seconds += time.perf_counter() - started - elsewhere
    return {
        "steps": progress.done,
        "first_loss": progress.first_loss,
        "final_loss": progress.loss,
        "padded_fraction": progress.padding.fraction(),
    }


@contextlib.contextmanager
def _untouched(model: torch.nn.Module) -> Iterator[None]:
    """Put back the random generators and the model's train/eval mode after the block, so
    that scoring the model within a stage leaves its training as it would have been."""
    tensors, values = rng_states()
    training = model.training
    try:
        yield
    finally:
        set_rng_states(tensors, values)
        model.train(training)


class _Progress:
    """Where a stage's training stands after an optimizer step, and what a step checkpoint
    holds of it: everything training changes, so that a resumed stage trains on as if it had
    never stopped."""

    def __init__(self, stage: Stage, method: Method, optimizer, scheduler, sampler) -> None:
        self.stage, self.method = stage, method
        self.optimizer, self.scheduler, self.sampler = optimizer, scheduler, sampler
        self.done, self.loss, self.first_loss = 0, float("nan"), float("nan")
        self.padding = _Padding()
        self.position = 0  # batches of the current pass over the data trained on
        self.skip = 0  # batches of the first pass to pass over: trained before a resume

    def stepped(self, loss: float, position: int) -> None:
        self.done += 1
        self.loss, self.position = loss, position
        self.first_loss = loss if self.done == 1 else self.first_loss

    def _weights(self) -> dict[str, torch.Tensor]:
        named = self.stage.model.named_parameters()
        return {name: p for name, p in named if p.requires_grad}

    def save_if_due(self, saves: StepCheckpoints, last: bool) -> None:
        """Write a step checkpoint if one is due, a preemption signal came or this is the
        stage's `last` step (a signal during the method's `after_task` or the evaluation then
        keeps the stage's training); then stop on the signal."""
        signal_name = requested()
        if not (signal_name or last or saves.due(self.done)):
            return
        rng_tensors, rng_values = rng_states()
        files = {"model.safetensors": self._weights(), "rng.safetensors": rng_tensors}
        values = {
            "step": self.done,
            "loss": self.loss,
            "first_loss": self.first_loss,
            "padding": [self.padding.padded, self.padding.total],
            # The sampler's passes begun (the last is the current one) and the batches of it
            # trained on.
            "data": {"passes": self.sampler.passes, "position": self.position},
            "cost": {key: getattr(self.stage.cost, key) for key in COUNTERS},
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_values,
            "method": self.method.step_state(),
        }
        if not last:  # each stage has a new optimizer: after its last step nothing reads it
            tensors, values["optimizer"] = split_optimizer_state(self.optimizer.state_dict())
            files["optimizer.safetensors"] = tensors
        saves.save(self.done, files, values)
        if signal_name:
            print(
                f"clbench: {signal_name}: stage {self.stage.index} is saved at optimizer step "
                f"{self.done} ({saves.state['step_checkpoint']['name']})",
                file=sys.stderr,
            )
            raise Preempted(signal_name)

    def load(self, saves: StepCheckpoints) -> None:
        """Continue from the verified step checkpoint `saves.resume`."""
        files, values = saves.load()
        weights, current = files["model.safetensors"], self._weights()
        if weights.keys() != current.keys():
            raise ClbenchError(
                f"{saves.run_dir / saves.resume['name']}: the step checkpoint does not fit the "
                f"model ({len(current.keys() - weights.keys())} missing, "
                f"{len(weights.keys() - current.keys())} unexpected tensors)"
            )
        with torch.no_grad():
            for name, parameter in current.items():
                parameter.copy_(weights[name])
        if "optimizer" in values:  # not after the stage's last step
            self.optimizer.load_state_dict(
                join_optimizer_state(files["optimizer.safetensors"], values["optimizer"])
            )
        self.scheduler.load_state_dict(values["scheduler"])
        self.method.load_step_state(values["method"])
        for key, value in values["cost"].items():
            setattr(self.stage.cost, key, value)
        self.done, self.position = values["step"], values["data"]["position"]
        self.loss, self.first_loss = (_float(values[k]) for k in ("loss", "first_loss"))
        self.padding.padded, self.padding.total = values["padding"]
        self.sampler.passes = values["data"]["passes"] - 1  # its next pass is the current one
        self.skip = self.position
        set_rng_states(files["rng.safetensors"], values["rng"])


def _float(value: float | None) -> float:
    """A loss read back from JSON, where NaN was written as null."""
    return float("nan") if value is None else value


class LengthGroupedSampler:
    """A batch sampler that draws `length_grouped_batches` afresh for every pass over the
    data; pass p's batches are a function of (seed, p). It has no `batch_size`: under several
    processes accelerate then shards batches of varying size as they come."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.size, self.seed = lengths, batch_size, seed
        self.passes = 0  # passes begun, which numbers the next one

    def batches(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.size, f"{self.seed}:{epoch}")

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.size)

    def __iter__(self) -> Iterator[list[int]]:
        self.passes += 1
        return iter(self.batches(self.passes - 1))


def _length(example: Example) -> int:
    """Characters, a proxy for tokens that needs no tokenization of the whole training set;
    a DPO batch holds both responses of a pair."""
    return len(example.prompt) + max(len(example.target), len(example.rejected or ""))


class _Padding:
    """Padded and all token slots of the batches a stage trains on."""

    def __init__(self) -> None:
        self.padded = self.total = 0

    def add(self, attention_mask: torch.Tensor) -> None:
        self.padded += int((attention_mask == 0).sum())
        self.total += attention_mask.numel()

    def fraction(self) -> float:
        return self.padded / self.total if self.total else 0.0


def _loss(
    model,
    reference: dict[PairKey, torch.Tensor] | None,
    batch: list[Example],
    stage: Stage,
    method: Method,
    done: int,
    padding: _Padding,
) -> torch.Tensor:
    """SFT loss on the targets; DPO loss on preference pairs of the stage's own DPO task; then
    the method's `training_loss`.

    Replayed pairs of earlier alignment tasks are trained on their chosen response (SFT).
    """
    task = stage.data.task
    pairs = [e for e in batch if reference is not None and e.task == task.name and e.rejected]
    plain = [e for e in batch if e not in pairs]
    missing = [e for e in pairs if _pair_key(e) not in reference]
    if missing:
        raise ClbenchError(
            f"method {method.name!r} trained a DPO pair of task {task.name!r} that the stage's "
            "batches did not hold, so it has no reference log-probabilities; a method whose "
            "training_batch draws examples of the task being trained must set "
            "draws_current_task = True"
        )
    # One forward pass for the whole batch: under several processes, every process then runs
    # the same number of passes of the wrapped model, whatever its batch holds.
    inputs = _inputs(stage, plain + _with_rejected(pairs), next(stage.model.parameters()).device)
    padding.add(inputs["attention_mask"])
    stage.cost.trained(inputs["attention_mask"])
    sft, dpo = target_logits(model, inputs, prepended_positions(stage.model)).split(len(plain))
    parts, step = [], Step(done, plain, None, None)
    if plain:
        plain_inputs = {k: v[: len(plain)] for k, v in inputs.items()}
        step = Step(done, plain, plain_inputs, sft.logits, sft.targets, sft.keep)
        parts.append((len(plain), sft.loss()))
    if pairs:
        n = len(pairs)
        policy = dpo.row_logprobs(2 * n)
        ref = torch.stack([reference[_pair_key(e)] for e in pairs]).to(policy.device)
        parts.append((n, dpo_loss(policy[:n], policy[n:], ref[:, 0], ref[:, 1], task.beta)))
    loss = sum(count * value for count, value in parts) / sum(count for count, _ in parts)
    with stage.cost.method_time():
        return method.training_loss(loss, step, stage)


def _inputs(stage: Stage, examples: list[Example], device: torch.device) -> dict:
    batch = collate(stage.tokenizer, examples, stage.config.max_length)
    return {k: v.to(device) for k, v in batch.items()}


def _with_rejected(pairs: list[Example]) -> list[Example]:
    """The pairs with their chosen responses, then the same pairs with their rejected ones."""
    return pairs + [dataclasses.replace(e, target=e.rejected) for e in pairs]


def _pair_key(example: Example) -> PairKey:
    return (example.prompt, example.target, example.rejected)


def _planned_pairs(
    stage: Stage,
    method: Method,
    sampler: LengthGroupedSampler,
    per_process: int,
    steps: int,
    accelerator: Accelerator,
) -> list[Example]:
    """The preference pairs the stage will train on, over all processes. The batch order is
    a function of the seed, so the batches that `steps` optimizer steps take from each pass
    (`per_process` batches a process, the last of a pass closing a step) are known before
    the first; the loader gives process r the batches r, r + P, r + 2P, ... of a pass."""
    train = stage.data.train
    if method.draws_current_task:
        chosen = list(train)
    else:
        chosen, epoch, left, accum = [], 0, steps, stage.config.grad_accum
        while left > 0 and per_process:
            taken = min(per_process, left * accum) * accelerator.num_processes
            chosen += [train[i] for batch in sampler.batches(epoch)[:taken] for i in batch]
            left -= math.ceil(per_process / accum)
            epoch += 1
    return list({_pair_key(e): e for e in chosen if e.rejected}.values())


@torch.no_grad()
def reference_logprobs(stage: Stage, pairs: list[Example]) -> dict[PairKey, torch.Tensor]:
    """DPO's reference: for each pair, the summed log-probabilities of its chosen and its
    rejected response (a tensor of 2) under `stage.model` as it stands, in eval mode."""
    model, size = stage.model, stage.config.eval_batch_size
    device, prepended = next(model.parameters()).device, prepended_positions(model)
    training = model.training
    model.eval()
    table = {}
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        inputs = _inputs(stage, _with_rejected(chunk), device)
        stage.cost.extra_forward(inputs["attention_mask"])
        logprobs = sequence_logprobs(model, inputs, prepended)
        for i, example in enumerate(chunk):
            table[_pair_key(example)] = logprobs[[i, len(chunk) + i]]
    model.train(training)
    return table


def sequence_logprobs(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], prepended: int = 0
) -> torch.Tensor:
    """Summed log-probability of each row's labelled (target) tokens."""
    return target_logits(model, inputs, prepended).row_logprobs(inputs["labels"].shape[0])


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
