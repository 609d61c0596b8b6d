"""The evaluator: every metric of a task on its test set, batched.

- "rank" tasks (closed label sets) rank the options by their summed log-likelihood after the
  prompt; a tie goes to the option listed first, as with lm-eval's `acc`.
- "generate" tasks decode greedily, at most `max_new_tokens`, and cut the output at the task's
  first stop string.
- "preference" tasks compare the length-normalised log-likelihood of the chosen and the rejected
  response after the prompt.
- "loss" tasks (language modelling) sum the next-token loss over each held-out document, in the
  windows of `clbench.data.packing.windows`, for bits per byte and perplexity.

What each pass computes, and why:

- The LM head runs only at the positions whose log-probabilities are needed: with left padding
  these are the last few of every row, which `logits_to_keep` selects.
- Every batch holds examples of similar length: examples are sorted by length (longest first)
  before they are cut into batches, so little of each batch is padding. `TokenCounts` records
  how much was.
- Options of a ranked task (`option_scores`): when every option is one token, one position per
  prompt scores them all. Otherwise one of two exact strategies runs the prompt only once:
  "one-pass" puts the prompt and every option (but its last token) in one row, under a mask
  that lets each option's tokens see the prompt and themselves only, with positions that
  restart after the prompt for each option; "shared-cache" runs the prompt, scores every
  option's first token from its last position, and runs the options longer than one token on
  the prompt's KV cache repeated once per such option. `choose_strategy` picks between them.
- Generation (`generate`) decodes greedily with a KV cache, row by row as far as stopping goes:
  a row leaves the batch at its end-of-sequence token, or once its text holds a stop string
  (and no later stop string could still begin earlier), so the batch shrinks as rows finish.

Under `accelerate launch` every process scores its share of the examples and the main process
gathers them, so all processes return the same scores.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from clbench.data import packing
from clbench.data.encoding import collate, encode_prompt, encode_target, pad_left
from clbench.data.task import Example, Task, TaskData
from clbench.errors import ClbenchError
from clbench.evaluation.scorers import exact_match
from clbench.training.loss import prepended_positions, target_logits

# Logits kept at once: rows x kept positions; bounds memory for long continuations.
MAX_POSITIONS_PER_BATCH = 2048
# Options of a ranked task: "auto" runs "one-pass" when at least this many options are longer
# than one token (with none, one position scores every option). Measured by benchmarks/speed.py
# on SmolLM2, 100 prompts, one thread (benchmarks/README.md): one-pass took 32.7 s against 36.0 s
# with 1 such option (agnews), 48.4 s against 62.6 s with 8 (yahoo), 41.9 s against 51.4 s with 7
# (dbpedia); giving up attention's causal fast path costs less than a second pass.
ONE_PASS_MIN_LONGER_OPTIONS = 1
STRATEGIES = ("auto", "one-pass", "shared-cache")
# Attention implementations that take a ready 4D mask as it is (transformers passes a 4D
# `attention_mask` through unchanged): SDPA takes booleans, eager an additive float mask.
_MASKABLE_ATTENTION = ("sdpa", "eager")
# A UTF-8 character cut short leaves at most 3 of its bytes.
_MAX_INCOMPLETE_BYTES = 3


@dataclass
class TokenCounts:
    """Positions the evaluator ran through the model, split into real tokens and padding."""

    real: int = 0
    padding: int = 0

    def add(self, attention_mask: torch.Tensor) -> None:
        real = int(attention_mask.sum())
        self.real += real
        self.padding += attention_mask.numel() - real

    @property
    def padded_fraction(self) -> float:
        """Padding's share of all positions run (0.0 before anything ran)."""
        total = self.real + self.padding
        return self.padding / total if total else 0.0


_COUNTS: contextvars.ContextVar[TokenCounts | None] = contextvars.ContextVar(
    "clbench_eval_counts", default=None
)


@contextlib.contextmanager
def counting(counts: TokenCounts | None) -> Iterator[None]:
    """Add the positions of every forward pass of the evaluator inside to `counts`."""
    token = _COUNTS.set(counts)
    try:
        yield
    finally:
        _COUNTS.reset(token)


def _count(attention_mask: torch.Tensor) -> None:
    counts = _COUNTS.get()
    if counts is not None:
        counts.add(attention_mask)


_OPTION_SCORES: contextvars.ContextVar[list[list[float]] | None] = contextvars.ContextVar(
    "clbench_option_scores", default=None
)


@contextlib.contextmanager
def keeping_option_scores() -> Iterator[list[list[float]]]:
    """Yield a list that `rank_options` extends with every option's summed log-likelihood, one
    row per prompt of this process, in order (logged predictions keep them)."""
    kept: list[list[float]] = []
    token = _OPTION_SCORES.set(kept)
    try:
        yield kept
    finally:
        _OPTION_SCORES.reset(token)


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TaskData,
    accelerator: Accelerator,
    batch_size: int,
    max_length: int,
    counts: TokenCounts | None = None,
    samples: list[dict[str, Any]] | None = None,
    mode: str = "rank",
) -> dict[str, float]:
    """Every metric of the task's scorer; the primary one is under `data.task.metric`.
    `mode` is the run's `eval_mode` (see `evaluation_of`).

    With `counts`, the real and padded positions of this process's forward passes are added
    to it (its `padded_fraction` is then the evaluation's padded-token fraction). With
    `samples`, one dict per test example is added to it, in order: its `prediction` and, for
    a ranked task, `option_scores`, every option's summed log-likelihood."""
    with keeping_option_scores() as option_scores:
        predictions = predict_task(
            model, tokenizer, data, accelerator, batch_size, max_length, counts, mode
        )
    if samples is not None:
        rows = _gather(accelerator, option_scores) or [None] * len(predictions)
        samples += [
            {"prediction": p} if row is None else {"prediction": p, "option_scores": row}
            for p, row in zip(predictions, rows, strict=True)
        ]
    return score_predictions(data, predictions, mode)


def score_predictions(
    data: TaskData, predictions: list[Any], mode: str = "rank"
) -> dict[str, float]:
    """The task's scores of `predictions` (what `predict_task` returns) under `eval_mode`."""
    if evaluation_of(data.task, mode) != data.task.evaluation:
        return _generated_label_scores(data, predictions)
    return data.score(predictions)


def evaluation_of(task: Task, mode: str) -> str:
    """How `task` is scored under the run's `eval_mode`: "generate" makes a ranked task generate
    its label greedily, scored by exact match (as O-LoRA and TRACE score classification)."""
    return "generate" if mode == "generate" and task.evaluation == "rank" else task.evaluation


def _generated_label_scores(data: TaskData, texts: list[str]) -> dict[str, float]:
    """The task's own scores, a generated text counting as the label it spells exactly (as
    none otherwise), and exact match against the gold label's text."""
    labels = [option.strip() for option in data.options or []]
    chosen = [labels.index(text) if text in labels else -1 for text in texts]
    golds = [example.target.strip() for example in data.test]
    return data.score(chosen) | exact_match(texts, golds)


def predict_task(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TaskData,
    accelerator: Accelerator,
    batch_size: int,
    max_length: int,
    counts: TokenCounts | None = None,
    mode: str = "rank",
) -> list[Any]:
    """What the scorer compares with the references, one per test example: the option's index
    ("rank"), the text cut at the first stop string ("generate"), or the (chosen, rejected)
    mean log-probabilities ("preference"). Every process returns all of them. `mode` is the
    run's `eval_mode` (see `evaluation_of`)."""
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    task, examples = data.task, data.test
    with (
        accelerator.split_between_processes(list(range(len(examples)))) as mine,
        counting(counts),
    ):
        share = [examples[i] for i in mine]
        prompts = [e.prompt for e in share]
        args = (batch_size, max_length, accelerator.device, task.name)
        evaluation = evaluation_of(task, mode)
        if evaluation == "rank":
            predictions = rank_options(model, tokenizer, prompts, data.options, *args)
        elif evaluation == "preference":
            predictions = compare_responses(
                model,
                tokenizer,
                prompts,
                [e.target for e in share],
                [e.rejected for e in share],
                *args,
            )
        elif evaluation == "loss":
            predictions = document_losses(model, tokenizer, [e.target for e in share], *args)
        else:
            texts = generate(model, tokenizer, prompts, task.max_new_tokens, *args, stop=task.stop)
            predictions = [_cut(text, task.stop) for text in texts]
    predictions = _gather(accelerator, predictions)
    model.train(was_training)
    return predictions


@torch.inference_mode()
def document_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    batch_size: int,
    max_length: int,
    device: torch.device,
    desc: str,
) -> list[tuple[float, int, int]]:
    """(summed next-token loss in nats, tokens predicted, UTF-8 bytes) of each text."""
    spans = [packing.windows(tokenizer, text, max_length) for text in texts]
    owner = [i for i, found in enumerate(spans) for _ in found]
    blocks = [Example("", "", desc, ids=tuple(w)) for found in spans for w in found]
    nats, prepended = [0.0] * len(texts), prepended_positions(model)
    for chunk in _by_length([list(b.ids) for b in blocks], batch_size, desc):
        inputs = collate(tokenizer, [blocks[i] for i in chunk], max_length)
        _count(inputs["attention_mask"])
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logprobs = target_logits(model, inputs, prepended).row_logprobs(len(chunk))
        for i, value in zip(chunk, logprobs.tolist(), strict=True):
            nats[owner[i]] -= value
    tokens = [sum(len(w) - 1 for w in found) for found in spans]
    return [(nats[i], tokens[i], len(text.encode("utf-8"))) for i, text in enumerate(texts)]


def _cut(text: str, stops: Sequence[str]) -> str:
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text.strip()


def _padded(sequences: list[list[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """`pad_left` on `device`, its positions counted."""
    batch = pad_left(sequences, pad_id)
    _count(batch["attention_mask"])
    return {k: v.to(device) for k, v in batch.items()}


def _by_length(sequences: list[list[int]], rows: int, desc: str) -> Iterator[list[int]]:
    """Indices of `sequences` in batches of `rows`, longest first (so little of a batch is
    padding), with a progress bar."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    bar = tqdm(total=len(order), desc=desc, leave=False, disable=len(order) <= rows)
    for start in range(0, len(order), rows):
        chunk = order[start : start + rows]
        yield chunk
        bar.update(len(chunk))
    bar.close()


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
    # Cut on the left so that the prompt and its longest option fit in `max_length` tokens.
    contexts = [encode_prompt(tokenizer, p, max_length - longest) for p in prompts]
    scores = option_scores(
        model, contexts, option_ids, tokenizer.pad_token_id, batch_size, device, desc
    )
    kept = _OPTION_SCORES.get()
    if kept is not None:
        kept += scores.tolist()
    return scores.argmax(dim=1).tolist()


def option_scores(
    model: torch.nn.Module,
    contexts: list[list[int]],
    option_ids: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    desc: str,
    strategy: str = "auto",
) -> torch.Tensor:
    """Summed log p(option | context), (contexts x options), by the cheapest exact path.

    `strategy` ("auto", "one-pass" or "shared-cache") says how options longer than one token
    are scored; `choose_strategy` resolves "auto". All give the same scores."""
    if strategy not in STRATEGIES:
        raise ClbenchError(f"unknown option-scoring strategy {strategy!r}; one of {STRATEGIES}")
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
    score = (
        _one_pass_scores
        if choose_strategy(model, option_ids, strategy) == "one-pass"
        else _shared_prompt_scores
    )
    return score(model, contexts, option_ids, pad_id, batch_size, device, desc)


def choose_strategy(
    model: torch.nn.Module, option_ids: list[list[int]], strategy: str = "auto"
) -> str:
    """ "one-pass" or "shared-cache": the strategy asked for, or for "auto" one-pass when at
    least `ONE_PASS_MIN_LONGER_OPTIONS` options are longer than one token and the model's
    attention takes a custom mask. A model with a sliding attention window never runs one
    pass: the custom mask would replace the window's."""
    config = getattr(model, "config", None)
    attention = getattr(config, "_attn_implementation", None)
    window = getattr(config, "sliding_window", None)
    maskable = attention in _MASKABLE_ATTENTION and window is None
    if strategy == "one-pass" and not maskable:
        raise ClbenchError(
            "one-pass option scoring needs sdpa or eager attention and no sliding window; the "
            f"model uses {attention!r} attention and sliding window {window!r}"
        )
    if strategy != "auto":
        return strategy
    longer = sum(len(ids) > 1 for ids in option_ids)
    return "one-pass" if maskable and longer >= ONE_PASS_MIN_LONGER_OPTIONS else "shared-cache"


def _one_pass_scores(
    model: torch.nn.Module,
    contexts: list[list[int]],
    option_ids: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    desc: str,
) -> torch.Tensor:
    """Summed log p(option | context), (contexts x options), one forward pass per batch.

    Each row is [padding, context, every option but its last token] (the options' part, the
    tail, is the same in every row). A 4D mask lets each option's tokens attend to the context
    and to their own earlier tokens only, and their positions restart after the context, so
    each option is computed as if it alone followed the context. Option o's first token is
    predicted at the context's last position, its token j at its own token j - 1."""
    tail: list[int] = []
    segment: list[int] = []  # o + 1 for option o's tokens in the tail
    restart: list[int] = []  # position of each tail token after the context's end
    kept, tokens, owner = [], [], []  # per option token: the kept position that predicts it
    for o, ids in enumerate(option_ids):
        # Kept positions: 0 is the context's last token, 1 + k is tail token k.
        kept += [0] + [len(tail) + j for j in range(1, len(ids))]
        tokens += ids
        owner += [o] * len(ids)
        tail += ids[:-1]
        segment += [o + 1] * (len(ids) - 1)
        restart += range(len(ids) - 1)
    keep = len(tail) + 1
    kept_at, tokens_at = torch.tensor(kept, device=device), torch.tensor(tokens, device=device)
    owner_at = torch.tensor(owner, device=device)
    out = torch.empty((len(contexts), len(option_ids)))
    rows = max(1, min(batch_size, MAX_POSITIONS_PER_BATCH // keep))
    for chunk in _by_length(contexts, rows, f"eval {desc}"):
        batch = pad_left([contexts[i] + tail for i in chunk], pad_id)
        _count(batch["attention_mask"])
        lengths = torch.tensor([len(contexts[i]) for i in chunk])
        batch["position_ids"][:, -len(tail) :] = lengths[:, None] + torch.tensor(restart)
        seen = batch["attention_mask"].long() - 1  # 0 for the context, -1 for padding
        seen[:, -len(tail) :] = torch.tensor(segment)
        batch["attention_mask"] = _block_mask(seen, model)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch, logits_to_keep=keep, use_cache=False).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)[:, kept_at, tokens_at]
        totals = logprobs.new_zeros((len(chunk), len(option_ids)))
        out[torch.tensor(chunk)] = totals.index_add_(1, owner_at, logprobs).cpu()
    return out


def _block_mask(segment: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """The (rows, 1, width, width) attention mask of `segment` (rows x width: -1 padding, 0 a
    shared prefix, k > 0 the k-th branch): causal, where a branch sees the prefix and itself.
    Every position sees itself, so no row of the mask is empty (SDPA gives NaN on one)."""
    width = segment.shape[1]
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)
    allowed = allowed[:, None]
    if model.config._attn_implementation == "sdpa":
        return allowed
    dtype = next(model.parameters()).dtype  # eager adds the mask to its attention scores
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)


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
    out = torch.empty((len(contexts), n))
    rows = max(1, min(batch_size, MAX_POSITIONS_PER_BATCH // max(1, len(longer) * width)))
    for chunk in _by_length(contexts, rows, f"eval {desc}"):
        batch = _padded([contexts[i] for i in chunk], pad_id, device)
        first = model(**batch, logits_to_keep=1, use_cache=bool(longer))
        totals = torch.log_softmax(first.logits[:, -1].float(), dim=-1)[:, first_tokens]
        if longer:
            totals[:, longer] += _continuation_scores(
                model, first.past_key_values, batch["attention_mask"], inputs, targets, mask
            ).view(len(chunk), len(longer))
        out[torch.tensor(chunk)] = totals.cpu()
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
    _count(mask.repeat(rows, 1))
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
        batch = _padded([sequences[i] for i in chunk], pad_id, device)
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
    stop: Sequence[str] = (),
) -> list[str]:
    """Greedy continuations of at most `max_new_tokens` (ending before the end-of-sequence
    token), decoded without special tokens and without a last character cut short.

    With `stop`, a row may end once its text holds a stop string: what follows is then cut
    off by `_cut` anyway, so `_cut(text, stop)` is the same as on the whole continuation."""
    contexts = [encode_prompt(tokenizer, p, max_length - max_new_tokens) for p in prompts]
    outputs = [""] * len(contexts)
    for chunk in _by_length(contexts, batch_size, f"generate {desc}"):
        batch = _padded([contexts[i] for i in chunk], tokenizer.pad_token_id, device)
        texts = _greedy(model, tokenizer, batch, max_new_tokens, stop)
        for index, text in zip(chunk, texts, strict=True):
            outputs[index] = text
    return outputs


def _greedy(
    model: torch.nn.Module,
    tokenizer: Any,
    batch: dict[str, torch.Tensor],
    max_new_tokens: int,
    stop: Sequence[str],
) -> list[str]:
    """The greedy text of each row of a left-padded batch. Finished rows leave the batch (and
    its KV cache); decoding ends when no row is left."""
    tokens: list[list[int]] = [[] for _ in range(batch["input_ids"].shape[0])]
    texts = [""] * len(tokens)
    live = list(range(len(tokens)))  # the batch's rows that are still decoding
    mask, positions = batch["attention_mask"], batch["position_ids"]
    out = model(**batch, logits_to_keep=1, use_cache=True)
    while live:
        chosen = out.logits[:, -1].argmax(dim=-1)
        going = []
        for r, (row, token) in enumerate(zip(live, chosen.tolist(), strict=True)):
            if token == tokenizer.eos_token_id:
                continue
            tokens[row].append(token)
            texts[row] = complete_text(tokenizer, tokens[row])
            if len(tokens[row]) < max_new_tokens and not _stop_reached(texts[row], stop):
                going.append(r)
        if len(going) < len(live):
            if not going:
                break
            index = torch.tensor(going, device=chosen.device)
            out.past_key_values.batch_select_indices(index)
            mask, positions, chosen = mask[index], positions[index], chosen[index]
            live = [live[r] for r in going]
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        positions = positions[:, -1:] + 1
        _count(mask[:, -1:])
        out = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return texts


def complete_text(tokenizer: Any, ids: list[int]) -> str:
    """`ids` decoded without special tokens, less a last character cut short: decoders turn
    its bytes into U+FFFD (byte-level ones into one, byte-fallback ones into one per byte)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    incomplete = len(text) - len(text.rstrip("\ufffd"))
    return text[: len(text) - min(incomplete, _MAX_INCOMPLETE_BYTES)]


def _stop_reached(text: str, stops: Sequence[str]) -> bool:
    """Whether `_cut` of every continuation of `text` equals `_cut(text)`: a stop string
    starts at p, and any stop string completed later would start after p."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return bool(found) and min(found) <= len(text) - max(len(s) for s in stops)


def _gather(accelerator: Accelerator, predictions: list) -> list:
    if accelerator.num_processes == 1:
        return predictions
    from accelerate.utils import gather_object

    return gather_object(predictions)
