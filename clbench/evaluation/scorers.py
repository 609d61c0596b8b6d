"""Per-task metrics, looked up by name in `SCORERS`.

Every scorer takes `(predictions, references)` of equal, non-zero length and returns a dict of
Python floats: its primary metric under its own registry name, secondary metrics under other
keys. Values lie in [0, 1] (library percentages are divided by 100); the one exception is
`reward_margin_mean` from `preference_accuracy`, a difference of log-likelihoods.

Ranked tasks give predictions as option indices, generative tasks the generated strings, the
preference task (chosen, rejected) score pairs, and language modelling (nats, tokens, bytes)
per document. `bits_per_byte` and its companions are losses: lower is better, and they are not
bounded by 1 (clbench.metrics.higher_is_better says which scores are so).

A scorer may also take keyword-only options, which a task sets with `metric_args` in its YAML
and `check_options` validates before any training (docs/tasks-and-sequences.md). `chrf` takes
`language`, the target language's code (clbench passes a translation task's `tgt_lang`), and
`tokenize`, a sacrebleu tokenizer for BLEU that overrides the one the language implies.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer, tokenizers
from seqeval.metrics.sequence_labeling import get_entities


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "the lengths must match"
        )
    if not predictions:
        raise ValueError("cannot score an empty set of predictions")


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    """Share of predicted option indices equal to the reference index.

    For single-label classification this is also the micro-averaged F1, so no separate F1 is
    reported.
    """
    _check_lengths(predictions, references)
    return {"accuracy": _mean([p == r for p, r in zip(predictions, references, strict=True)])}


def _exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    # Surrounding white space is an artefact of generation; case is kept because it can matter.
    return _mean([p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)])


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Share of strings equal after stripping white space at both ends (case-sensitive)."""
    _check_lengths(predictions, references)
    return {"exact_match": _exact_match(predictions, references)}


# --- Named entities -------------------------------------------------------------------------
# Models generate entities as text, "type: span; type: span" (or "none"); references are BIO
# tagged tokens. The prediction is projected onto the reference tokens as BIO tags so that
# seqeval's entity extraction applies to both sides. A backslash escapes the next character, so
# a span may contain ";" (written `\;`) and a type ":" (`\:`); a backslash itself is `\\`.


def bio_entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """The (type, span text) entities of a BIO-tagged sentence, in order of appearance."""
    # get_entities returns (type, start, end) with `end` inclusive.
    return [(kind, " ".join(tokens[start : end + 1])) for kind, start, end in get_entities(tags)]


_TYPE_SPECIALS = re.compile(r"([\\;:])")
_SPAN_SPECIALS = re.compile(r"([\\;])")


def format_entities(items: list[tuple[str, str]]) -> str:
    """Render entities as the target text "type: span; type: span", or "none" when empty."""
    if not items:
        return "none"
    escaped = [
        (_TYPE_SPECIALS.sub(r"\\\1", kind), _SPAN_SPECIALS.sub(r"\\\1", span))
        for kind, span in items
    ]
    return "; ".join(f"{kind}: {span}" for kind, span in escaped)


def parse_entities(text: str) -> list[tuple[str, str]]:
    """Parse "type: span; type: span" into (type, span) items, the inverse of format_entities.

    Items are split at each unescaped ";" and then at their first unescaped ":", so a span may
    contain colons. Items without a colon or with an empty type or span are ignored as malformed,
    which also makes "none" and "" yield no items. Runs of white space inside a span collapse to
    one space (spans are compared as tokens). Types are case-sensitive.
    """
    items: list[tuple[str, str]] = []
    fields = [""]  # the type, then the span once the item's first unescaped colon is read
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            fields[-1] += text[position + 1]
            position += 1
        elif char == ";":
            _add_item(items, fields)
            fields = [""]
        elif char == ":" and len(fields) == 1:
            fields.append("")
        else:
            fields[-1] += char
        position += 1
    _add_item(items, fields)
    return items


def _add_item(items: list[tuple[str, str]], fields: list[str]) -> None:
    if len(fields) == 2:
        kind, span = fields[0].strip(), " ".join(fields[1].split())
        if kind and span:
            items.append((kind, span))


def _first_free_occurrence(words: list[str], tokens: list[str], tags: list[str]) -> int | None:
    """Start of the first occurrence of `words` in `tokens` whose positions are all untagged."""
    n = len(words)
    for start in range(len(tokens) - n + 1):
        if tokens[start : start + n] == words and set(tags[start : start + n]) == {"O"}:
            return start
    return None


def _place_entities(items: list[tuple[str, str]], tokens: list[str]) -> tuple[list[str], int]:
    """Tag each item, in order, at its first occurrence that overlaps no already placed item.

    Returns the BIO tags and the number of items that could not be placed.
    """
    tags = ["O"] * len(tokens)
    unplaced = 0
    for kind, span in items:
        words = span.split()
        start = _first_free_occurrence(words, tokens, tags)
        if start is None:
            unplaced += 1
        else:
            tags[start : start + len(words)] = [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
    return tags, unplaced


def entity_f1(
    predictions: Sequence[str], references: Sequence[Mapping[str, list[str]]]
) -> dict[str, float]:
    """Micro entity-level F1, precision and recall, with seqeval's exact span-and-type match.

    References are {"tokens": [...], "tags": [BIO tags]}. Predicted items are placed on the
    reference tokens (see `_place_entities`); for placeable items the scores equal seqeval's
    default-mode micro `precision_score`, `recall_score` and `f1_score`. A predicted item whose
    span is absent from the sentence cannot be tagged, so it is counted separately as a false
    positive in the precision denominator. If no example has any gold or predicted entity, all
    three scores are 1.0: there was nothing to find and nothing was wrongly found.
    """
    _check_lengths(predictions, references)
    true_positives = n_predicted = n_gold = 0
    for prediction, reference in zip(predictions, references, strict=True):
        tokens, gold_tags = reference["tokens"], reference["tags"]
        if len(tokens) != len(gold_tags):
            raise ValueError(f"reference has {len(tokens)} tokens but {len(gold_tags)} tags")
        predicted_tags, unplaced = _place_entities(parse_entities(prediction), tokens)
        gold = set(get_entities(list(gold_tags)))
        predicted = set(get_entities(predicted_tags))
        true_positives += len(gold & predicted)
        n_predicted += len(predicted) + unplaced
        n_gold += len(gold)
    if n_predicted == n_gold == 0:
        return {"entity_f1": 1.0, "entity_precision": 1.0, "entity_recall": 1.0}
    precision = true_positives / n_predicted if n_predicted else 0.0
    recall = true_positives / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "entity_f1": float(f1),
        "entity_precision": float(precision),
        "entity_recall": float(recall),
    }


# --- Generation -----------------------------------------------------------------------------


def bleu_tokenizer(language: str | None) -> str:
    """sacrebleu's BLEU tokenizer for text in `language` (a code such as "zh" or "zh-Hant"):
    `zh` for Chinese, `ja-mecab` for Japanese where MeCab is installed, `13a` otherwise.

    Without MeCab, Japanese falls back to `char` with a warning: `13a` splits only at spaces,
    which Japanese does not write, so every sentence would be one word.
    """
    primary = (language or "").replace("_", "-").split("-")[0].lower()
    if primary == "zh":
        return "zh"
    if primary == "ja":
        if importlib.util.find_spec("MeCab") and importlib.util.find_spec("ipadic"):
            return "ja-mecab"
        warnings.warn(
            "BLEU of Japanese uses sacrebleu's 'char' tokenizer: 'ja-mecab' needs "
            "`pip install sacrebleu[ja]`",
            stacklevel=2,
        )
        return "char"
    return "13a"


def chrf(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None = None,
    tokenize: str | None = None,
) -> dict[str, float]:
    """Corpus chrF (primary) and BLEU from sacrebleu, rescaled from percentages to [0, 1].

    chrF compares characters and needs no tokenizer. BLEU tokenizes with `tokenize`, else with
    the tokenizer of the target `language` (`bleu_tokenizer`).
    """
    _check_lengths(predictions, references)
    hypotheses = [p.strip() for p in predictions]
    # sacrebleu takes a list of reference streams; there is one reference per example.
    streams = [list(references)]
    bleu = sacrebleu.BLEU(tokenize=tokenize or bleu_tokenizer(language))
    return {
        "chrf": _fraction(sacrebleu.corpus_chrf(hypotheses, streams).score),
        "bleu": _fraction(bleu.corpus_score(hypotheses, streams).score),
    }


def _fraction(percent: float) -> float:
    # sacrebleu's exp-of-mean-log arithmetic gives 100.00000000000004 for a perfect match.
    return float(min(percent / 100, 1.0))


# Scripts written without spaces between words, whose characters ROUGE counts one by one: Han
# (with its extensions and compatibility ideographs), Hiragana and Katakana (with half-width).
_PER_CHARACTER = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f]"
)


class RougeTokenizer(tokenizers.Tokenizer):
    """rouge-score's default tokenizer (lower case, Porter stemming) for text in any script.

    The default keeps only ASCII letters and digits, so it scores Chinese 0 even against itself
    and cuts "naïve" in two. Here a word is a run of letters, marks and digits in any script;
    Han and Kana characters are words on their own; the stemmer sees ASCII words only. On ASCII
    text the tokens are exactly the default tokenizer's.
    """

    def __init__(self) -> None:
        self._default = tokenizers.DefaultTokenizer(use_stemmer=True)

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        word = ""
        for char in text.lower() + " ":  # the final space ends the last word
            if unicodedata.category(char)[0] in "LMN" and not _PER_CHARACTER.match(char):
                word += char
                continue
            if word:
                tokens += self._default.tokenize(word) if word.isascii() else [word]
                word = ""
            if _PER_CHARACTER.match(char):
                tokens.append(char)
        return tokens


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-example ROUGE-L F-measure (with stemming), plus exact match."""
    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())
    # RougeScorer.score takes (target, prediction).
    scores = [
        scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)
    ]
    return {"rouge_l": _mean(scores), "exact_match": _exact_match(predictions, references)}


# --- Preferences ----------------------------------------------------------------------------


def preference_accuracy(
    predictions: Sequence[tuple[float, float]], references: Sequence[object]
) -> dict[str, float]:
    """Share of pairs whose chosen response outscores the rejected one, and the mean margin.

    Predictions are (chosen_score, rejected_score) length-normalised log-likelihoods; references
    carry no information (they may be None) but must match in length. Ties count as wrong.
    `reward_margin_mean` is mean(chosen - rejected) and is NOT bounded to [0, 1].
    """
    _check_lengths(predictions, references)
    return {
        "preference_accuracy": _mean([chosen > rejected for chosen, rejected in predictions]),
        "reward_margin_mean": _mean([chosen - rejected for chosen, rejected in predictions]),
    }


# --- Language modelling ---------------------------------------------------------------------


def bits_per_byte(
    predictions: Sequence[tuple[float, int, int]], references: Sequence[object]
) -> dict[str, float]:
    """Bits per UTF-8 byte (primary), perplexity and the mean next-token loss over a held-out
    text, from each document's summed loss in nats, its predicted tokens and its bytes.

    bits per byte = total nats / (ln 2 x total bytes), which does not depend on the tokenizer;
    perplexity = exp(total nats / total tokens). References carry no information.
    """
    _check_lengths(predictions, references)
    nats = sum(p[0] for p in predictions)
    tokens = sum(p[1] for p in predictions)
    size = sum(p[2] for p in predictions)
    loss = nats / tokens
    return {
        "bits_per_byte": nats / (math.log(2) * size),
        "perplexity": math.exp(min(loss, 700.0)),  # exp overflows a float past ~709
        "loss": loss,
    }


SCORERS: dict[str, Callable[..., dict[str, float]]] = {
    "accuracy": accuracy,
    "exact_match": exact_match,
    "entity_f1": entity_f1,
    "chrf": chrf,
    "rouge_l": rouge_l,
    "preference_accuracy": preference_accuracy,
    "bits_per_byte": bits_per_byte,
}


def scorer_options(metric: str) -> list[str]:
    """The keyword-only options that scorer `metric` takes."""
    parameters = inspect.signature(SCORERS[metric]).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]


def check_options(metric: str, options: Mapping[str, Any]) -> str | None:
    """What is wrong with a task's `metric_args` for scorer `metric`, or None."""
    accepted = scorer_options(metric)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        return f"metric {metric!r} has no option(s) {', '.join(unknown)}; {takes}"
    for name, value in options.items():
        if value is not None and not isinstance(value, str):
            return f"option {name!r} must be a string, got {value!r}"
    tokenize = options.get("tokenize")
    if tokenize is not None and tokenize not in sacrebleu.BLEU.TOKENIZERS:
        return f"'tokenize' is {tokenize!r}; sacrebleu has {', '.join(sacrebleu.BLEU.TOKENIZERS)}"
    if tokenize is not None:
        try:  # some need extra packages (ja-mecab) or files (spm): find out before training
            sacrebleu.BLEU(tokenize=tokenize)
        except Exception as err:  # sacrebleu raises several types; all mean "cannot use it"
            return f"sacrebleu cannot use tokenizer {tokenize!r}: {str(err).strip()}"
    return None
