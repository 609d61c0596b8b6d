"""A bare loop of the CL workloads: torch, transformers and peft only.

    python benchmarks/bare_loop.py --data-dir DATA_DIR [--workload generation] [--out FILE]
        [--threads N]

The reference that benchmarks/speed.py times clbench against. It takes from clbench only the
examples (clbench's data loading, so both see the same inputs) and the weights and tokenizer
(clbench's model loader, which resolves `smollm2-135m` offline); no runner, trainer or
evaluator. What it does is what a careful hand-written loop does:

- LoRA (peft) on every linear layer, seeded as clbench seeds it (the seed, then the adapter).
- Training: AdamW at a constant learning rate, on the batches clbench would draw: clbench's
  `length_grouped_batches` of the examples' lengths in characters, seeded with
  "{seed * 1000 + stage}:{pass}" (so that both sides train on the same batches). The loss is
  the mean next-token loss on the target tokens and a closing end-of-sequence token; the
  decoder runs once and the LM head only at those positions.
- Evaluation of the full (T+1) x T matrix, in batches of prompts in the data's order,
  left-padded.
  - classification (agnews, yahoo, dbpedia; 100 test examples a task): label ranking; each
    prompt runs once, its last position scores every option's first token, and each option
    longer than one token runs its remaining tokens on the prompt's KV cache, which is cut
    back after every option.
  - generation (multi30k_en-de, multi30k_en-fr; 32 test examples a task, the size of the
    `generate_until` comparison of benchmarks/speed.py, since each example decodes up to 64
    tokens where ranking runs a prompt once): transformers' `model.generate`, greedy, with
    its KV cache, at most the task's `max_new_tokens`, stopping at the task's stop strings;
    the prompt is cut on the left to leave room for them, as clbench cuts it. The text is
    then cut at the first stop string and stripped, and scored by the task's own scorer
    (clbench's, for scoring only: chrF).

Prints its progress; writes the matrix, the per-step losses, the seconds of training and
evaluation (per stage and row) and of the whole run, and for generation every cell's texts,
as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import set_seed

from clbench.data import registry
from clbench.data.encoding import length_grouped_batches
from clbench.training.models import load_model

# Each workload's tasks and test examples per task; everything else is shared.
WORKLOADS: dict[str, dict[str, Any]] = {
    "classification": {"tasks": ["agnews", "yahoo", "dbpedia"], "test": 100},
    "generation": {"tasks": ["multi30k_en-de", "multi30k_en-fr"], "test": 32},
}


def arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The workload's options, shared with benchmarks/speed.py; defaults are the full one
    (`--tasks` and `--test` default to the workload's, see `for_workload`)."""
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", help="default: the workload's")
    parser.add_argument("--train", type=int, default=64, help="training examples per task")
    parser.add_argument("--test", type=int, help="test examples per task (default: the workload's)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    return parser


def for_workload(args: argparse.Namespace, workload: str) -> argparse.Namespace:
    """`args` for `workload`: its tasks and test size unless `args` gives them."""
    resolved = argparse.Namespace(**vars(args))
    resolved.workload = workload
    resolved.tasks = args.tasks or WORKLOADS[workload]["tasks"]
    resolved.test = args.test or WORKLOADS[workload]["test"]
    return resolved


def main() -> None:
    parser = arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--workload", choices=list(WORKLOADS), default="classification")
    parser.add_argument("--out", help="JSON file for the record (default: print only)")
    args = parser.parse_args()
    args = for_workload(args, args.workload)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: record[k] for k in ("matrix", "whole_seconds")}))


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    tasks = [
        registry.load_task(name).load(args.data_dir, args.train, args.test) for name in args.tasks
    ]
    set_seed(args.seed)  # LoRA's initialisation depends on it
    loaded = load_model(args.model)
    tokenizer = loaded.tokenizer
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(loaded.model, config)
    record: dict[str, Any] = {"matrix": [], "train_seconds": [], "eval_seconds": [], "losses": []}
    if args.workload == "generation":
        record["predictions"] = []  # [row][task]: the texts scored

    def evaluate_row(when: str) -> None:
        begun = time.perf_counter()
        if args.workload == "generation":
            texts = [generate(model, tokenizer, data, args) for data in tasks]
            row = [d.score(t)[d.task.metric] for d, t in zip(tasks, texts, strict=True)]
            record["predictions"].append(texts)
        else:
            row = [evaluate(model, tokenizer, data, args) for data in tasks]
        record["eval_seconds"].append(time.perf_counter() - begun)
        record["matrix"].append(row)
        cells = ", ".join(f"{d.task.name} {a:.3f}" for d, a in zip(tasks, row, strict=True))
        print(f"bare loop: {when}: {cells} ({record['eval_seconds'][-1]:.0f} s)", flush=True)

    evaluate_row("before training")
    for k, data in enumerate(tasks, start=1):
        begun = time.perf_counter()
        losses = train(model, tokenizer, data.train, args, seed=args.seed * 1000 + k)
        record["train_seconds"].append(time.perf_counter() - begun)
        record["losses"].append(losses)
        print(
            f"bare loop: stage {k}/{len(tasks)} {data.task.name}: {len(losses)} steps, "
            f"last loss {losses[-1]:.4f} ({record['train_seconds'][-1]:.0f} s)",
            flush=True,
        )
        evaluate_row(f"after {data.task.name}")
    record["whole_seconds"] = time.perf_counter() - started
    record["threads"] = torch.get_num_threads()
    return record


def train(model, tokenizer, examples: list, args: argparse.Namespace, seed: int) -> list[float]:
    """`args.steps` AdamW steps (passes over the data as needed)."""
    lengths = [len(e.prompt) + len(e.target) for e in examples]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    epoch = 0
    while len(losses) < args.steps:
        batches = length_grouped_batches(lengths, args.batch_size, f"{seed}:{epoch}")
        for indices in batches[: args.steps - len(losses)]:
            ids, mask, labels = training_batch(
                tokenizer, [examples[i] for i in indices], args.max_length
            )
            loss = loss_at_targets(model, ids, mask, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        epoch += 1
    return losses


def training_batch(tokenizer, batch: list, max_length: int) -> tuple[torch.Tensor, ...]:
    """Right-padded prompt + target + end-of-sequence ids; labels -100 off the target. A long
    prompt loses its beginning, so that the whole target fits."""
    rows = []
    for example in batch:
        target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
        target = [*target, tokenizer.eos_token_id][: max_length - 1]
        prompt = tokenizer(example.prompt)["input_ids"][-(max_length - len(target)) :]
        rows.append((prompt, target))
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, target) in enumerate(rows):
        n = len(prompt) + len(target)
        ids[i, :n] = torch.tensor(prompt + target)
        labels[i, len(prompt) : n] = torch.tensor(target)
        mask[i, :n] = 1
    return ids, mask, labels


def loss_at_targets(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """Mean cross-entropy of the target tokens: the decoder once, the LM head only where a
    position predicts a target token."""
    causal_lm = model.get_base_model()  # its linear layers carry the LoRA adapters
    hidden = causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    where = targets != -100
    logits = causal_lm.lm_head(hidden[:, :-1][where])
    return F.cross_entropy(logits.float(), targets[where])


@torch.inference_mode()
def evaluate(model, tokenizer, data, args: argparse.Namespace) -> float:
    """Accuracy of label ranking: each prompt runs once; options share its KV cache."""
    model.eval()
    options = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in data.options]
    room = args.max_length - max(len(o) for o in options)
    correct = 0
    for start in range(0, len(data.test), args.eval_batch_size):
        examples = data.test[start : start + args.eval_batch_size]
        ids, mask = left_padded(tokenizer, examples, room)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        scores = first[:, [o[0] for o in options]]
        cache, lengths = out.past_key_values, mask.sum(dim=1, keepdim=True)
        for k, option in enumerate(options):
            rest = len(option) - 1
            if not rest:
                continue
            follow = model(
                input_ids=torch.tensor([option[:-1]] * len(examples)),
                attention_mask=torch.cat(
                    [mask, torch.ones((len(examples), rest), dtype=torch.long)], 1
                ),
                position_ids=lengths + torch.arange(rest),
                past_key_values=cache,
                use_cache=True,
            )
            cache.crop(-rest)  # back to the prompts alone, for the next option
            logprobs = torch.log_softmax(follow.logits.float(), dim=-1)
            scores[:, k] += logprobs[:, torch.arange(rest), option[1:]].sum(dim=1)
        predicted = scores.argmax(dim=1).tolist()
        correct += sum(p == e.label for p, e in zip(predicted, examples, strict=True))
    model.train()
    return correct / len(data.test)


@torch.inference_mode()
def generate(model, tokenizer, data, args: argparse.Namespace) -> list[str]:
    """Each test example's greedy text by `model.generate`, cut at the first stop string."""
    model.eval()
    room = args.max_length - data.task.max_new_tokens
    texts = []
    for start in range(0, len(data.test), args.eval_batch_size):
        examples = data.test[start : start + args.eval_batch_size]
        ids, mask = left_padded(tokenizer, examples, room)
        width = ids.shape[1]
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=data.task.max_new_tokens,
            stop_strings=data.task.stop,
            tokenizer=tokenizer,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True):
            for stop in data.task.stop:
                row = row.split(stop, 1)[0]
            texts.append(row.strip())
    model.train()
    return texts


def left_padded(tokenizer, examples: list, room: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts' ids, each cut on the left to `room` tokens, left-padded; and their mask."""
    prompts = [tokenizer(e.prompt)["input_ids"][-room:] for e in examples]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


if __name__ == "__main__":
    main()
