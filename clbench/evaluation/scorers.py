"""Per-task metrics, looked up by name in `SCORERS`.

Every scorer takes `(predictions, references)` of equal, non-zero length and returns a dict of
Python floats: its primary metric under its own registry name, secondary metrics under other
keys. Values lie in [0, 1] (library percentages are divided by 100); the one exception is
`reward_margin_mean` from `preference_accuracy`, a difference of log-likelihoods.

Ranked tasks give predictions as option indices, generative tasks the generated strings, and the
preference task (chosen, rejected) score pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import sacrebleu
from rouge_score import rouge_scorer
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
# seqeval's entity extraction applies to both sides.


def bio_entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """The (type, span text) entities of a BIO-tagged sentence, in order of appearance."""
    # get_entities returns (type, start, end) with `end` inclusive.
    return [(kind, " ".join(tokens[start : end + 1])) for kind, start, end in get_entities(tags)]


def format_entities(items: list[tuple[str, str]]) -> str:
    """Render entities as the target text "type: span; type: span", or "none" when empty."""
    return "; ".join(f"{kind}: {span}" for kind, span in items) if items else "none"


def parse_entities(text: str) -> list[tuple[str, str]]:
    """Parse "type: span; type: span" into (type, span) items, the inverse of format_entities.

    Items are split on the first colon, so a span may contain colons. Items without a colon or
    with an empty type or span are ignored as malformed, which also makes "none" and "" yield no
    items. Runs of white space inside a span collapse to one space (spans are compared as
    tokens). Types are case-sensitive.
    """
    items = []
    for item in text.split(";"):
        kind, colon, span = item.partition(":")
        kind, span = kind.strip(), " ".join(span.split())
        if colon and kind and span:
            items.append((kind, span))
    return items


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


def chrf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus chrF (primary) and BLEU from sacrebleu, rescaled from percentages to [0, 1]."""
    _check_lengths(predictions, references)
    hypotheses = [p.strip() for p in predictions]
    # sacrebleu takes a list of reference streams; there is one reference per example.
    streams = [list(references)]
    return {
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, streams).score / 100),
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, streams).score / 100),
    }


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-example ROUGE-L F-measure (with stemming), plus exact match."""
    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
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


SCORERS: dict[str, Callable[[Sequence, Sequence], dict[str, float]]] = {
    "accuracy": accuracy,
    "exact_match": exact_match,
    "entity_f1": entity_f1,
    "chrf": chrf,
    "rouge_l": rouge_l,
    "preference_accuracy": preference_accuracy,
}
