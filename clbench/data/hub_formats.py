"""Hub layouts that a column mapping cannot express, converted row by row to mirror records.

A task names one with `source.hub.format`; its `fields` mapping (if any) then applies to the
converted record. Each converter takes one Hub row, with class labels already turned into names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from clbench.errors import ClbenchError

# The tag markers of SemEval-2010 Task 8, then words (keeping inner hyphens and apostrophes),
# then single punctuation characters.
_SEMEVAL_TOKEN = re.compile(r"</?e[12]>|\w+(?:[-'’]\w+)*|[^\w\s]")
_ASSISTANT = "\n\nAssistant:"


def fewrel(row: dict) -> dict:
    """thunlp/few_rel: entities carry `indices` (lists of token positions); the relation's
    Wikidata id is in `relation` and its name in `names[0]`."""

    def entity(value: dict) -> dict:
        positions = value["indices"][0]  # the first mention, as FewRel's own models use
        return {
            "text": value["text"],
            "span": [min(positions), max(positions) + 1],
            "id": value["type"],
        }

    tokens = list(row["tokens"])
    return {
        "text": " ".join(tokens),
        "tokens": tokens,
        "head": entity(row["head"]),
        "tail": entity(row["tail"]),
        "relation": row["names"][0],
    }


def semeval_tags(row: dict) -> dict:
    """SemEvalWorkshop/sem_eval_2010_task_8: one `sentence` with <e1>..</e1> and <e2>..</e2>
    around the nominals, `relation` a class name; head = e1 and tail = e2."""
    tokens, spans, opened = [], {}, {}
    for piece in _SEMEVAL_TOKEN.findall(row["sentence"]):
        if piece.startswith("<"):
            tag = piece.strip("</>")
            if piece.startswith("</"):
                spans[tag] = [opened[tag], len(tokens)]
            else:
                opened[tag] = len(tokens)
        else:
            tokens.append(piece)
    if set(spans) != {"e1", "e2"}:
        raise ClbenchError(f"sentence without both <e1> and <e2> marks: {row['sentence']!r}")

    def entity(tag: str) -> dict:
        start, end = spans[tag]
        return {"text": " ".join(tokens[start:end]), "span": [start, end]}

    return {
        "text": " ".join(tokens),
        "tokens": tokens,
        "head": entity("e1"),
        "tail": entity("e2"),
        "relation": row["relation"],
    }


def hh_dialogue(row: dict) -> dict:
    """Anthropic/hh-rlhf: `chosen` and `rejected` are whole dialogues that differ only in the
    last assistant turn. The prompt is their shared prefix up to that turn's "Assistant:"."""
    chosen, rejected = row["chosen"], row["rejected"]
    shared = next(
        (i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b),
        min(len(chosen), len(rejected)),
    )
    cut = chosen[:shared].rfind(_ASSISTANT)
    if cut < 0:
        raise ClbenchError(f"no shared '{_ASSISTANT.strip()}' turn in {chosen[:80]!r}")
    end = cut + len(_ASSISTANT)
    return {
        "prompt": chosen[:end].lstrip(),
        "chosen": chosen[end:].strip(),
        "rejected": rejected[end:].strip(),
    }


FORMATS: dict[str, Callable[[dict], dict]] = {
    "fewrel": fewrel,
    "semeval_tags": semeval_tags,
    "hh_dialogue": hh_dialogue,
}
