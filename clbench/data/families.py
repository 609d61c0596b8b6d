"""Task families: the record fields each one needs, the extra template variables it derives
from a record, how its tasks are evaluated, and its default metric.

docs/data-layout.md describes each family's records and the language names of `LANGUAGES`;
docs/tasks-and-sequences.md how each family is scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clbench.evaluation.scorers import bio_entities, format_entities

LANGUAGES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "cs": "Czech",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ro": "Romanian",
    "fi": "Finnish",
    "tr": "Turkish",
    "et": "Estonian",
    "lv": "Latvian",
    "hi": "Hindi",
    "gu": "Gujarati",
    "kk": "Kazakh",
    "lt": "Lithuanian",
    "ar": "Arabic",
}


@dataclass(frozen=True)
class Family:
    name: str
    fields: tuple[str, ...]  # every record must have them
    evaluation: str  # "rank", "generate", "preference" or "loss"
    metric: str  # default primary metric (a clbench.evaluation.scorers name)
    answer: str | None = None  # the field (or derived variable) holding the gold answer
    provides: tuple[str, ...] = ()  # template variables that `derive` adds
    derive: Callable[[dict], dict[str, Any]] = field(default=lambda record: {})
    check: Callable[[dict], str | None] = field(default=lambda record: None)
    language: str | None = None  # the record field holding the answer's language code
    # What the scorer compares a prediction with, when not the target text (see task.gold).
    reference: Callable[[dict], Any] | None = None
    # Task fields that mean nothing for the family (a task file naming one is refused), and
    # the values the task then takes for those of them that every task has.
    unused: tuple[str, ...] = ()
    task_defaults: dict[str, Any] = field(default_factory=dict)


def _ner_derive(record: dict) -> dict[str, Any]:
    tokens, tags = record["tokens"], record["tags"]
    return {"sentence": " ".join(tokens), "entities": format_entities(bio_entities(tokens, tags))}


def _ner_check(record: dict) -> str | None:
    tokens, tags = record["tokens"], record["tags"]
    if not isinstance(tokens, list) or not isinstance(tags, list):
        return "'tokens' and 'tags' must be lists"
    if len(tokens) != len(tags):
        return f"{len(tokens)} tokens but {len(tags)} BIO tags"
    for tag in tags:
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            return f"{tag!r} is not a BIO tag (O, B-type or I-type)"
    return None


def _re_derive(record: dict) -> dict[str, Any]:
    """The sentence with the head marked [E1] ... [/E1] and the tail [E2] ... [/E2]."""
    tokens = list(record["tokens"])
    marks = [(record["head"]["span"], "[E1]", "[/E1]"), (record["tail"]["span"], "[E2]", "[/E2]")]
    for (start, end), opening, closing in sorted(marks, key=lambda m: -m[0][0]):
        tokens[start:end] = [opening, *tokens[start:end], closing]
    return {
        "head_text": record["head"]["text"],
        "tail_text": record["tail"]["text"],
        "marked_text": " ".join(tokens),
    }


def _re_check(record: dict) -> str | None:
    for role in ("head", "tail"):
        entity = record[role]
        span = entity.get("span") if isinstance(entity, dict) else None
        if not (
            isinstance(span, list)
            and len(span) == 2
            and 0 <= span[0] < span[1] <= len(record["tokens"])
        ):
            return f"'{role}.span' must be [start, end) within the {len(record['tokens'])} tokens"
        if "text" not in entity:
            return f"'{role}' has no 'text'"
    return None


def _mt_derive(record: dict) -> dict[str, Any]:
    return {
        "src_language": LANGUAGES.get(record["src_lang"], record["src_lang"]),
        "tgt_language": LANGUAGES.get(record["tgt_lang"], record["tgt_lang"]),
    }


def _lm_check(record: dict) -> str | None:
    text = record["text"]
    if not isinstance(text, str):
        return f"'text' must be a string, not {type(text).__name__}"
    return None if text.strip() else "'text' is empty"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("text_classification", ("text", "label"), "rank", "accuracy", answer="label"),
        Family(
            "ner",
            ("tokens", "tags"),
            "generate",
            "entity_f1",
            answer="entities",
            provides=("sentence", "entities"),
            derive=_ner_derive,
            check=_ner_check,
            reference=lambda record: {"tokens": record["tokens"], "tags": record["tags"]},
        ),
        Family(
            "relation_extraction",
            ("tokens", "head", "tail", "relation"),
            "rank",
            "accuracy",
            answer="relation",
            provides=("head_text", "tail_text", "marked_text"),
            derive=_re_derive,
            check=_re_check,
        ),
        Family(
            "machine_translation",
            ("src", "tgt", "src_lang", "tgt_lang"),
            "generate",
            "chrf",
            answer="tgt",
            provides=("src_language", "tgt_language"),
            derive=_mt_derive,
            language="tgt_lang",
        ),
        Family(
            "instruction_tuning",
            ("instruction", "input", "output"),
            "generate",
            "rouge_l",
            answer="output",
        ),
        Family(
            "alignment",
            ("prompt", "chosen", "rejected"),
            "preference",
            "preference_accuracy",
            provides=("response",),
        ),
        # Continual pre-training: the whole text is the target, packed into blocks to train
        # (clbench.data.packing) and scored by its mean next-token loss.
        Family(
            "language_modeling",
            ("text",),
            "loss",
            "bits_per_byte",
            check=_lm_check,
            unused=(
                "prompt",
                "target",
                "labels",
                "max_new_tokens",
                "stop",
                "objective",
                "beta",
                "metric_args",
            ),
            task_defaults={"prompt": "", "target": "{text}"},
        ),
    ]
}
