"""Data that clbench generates itself, so the embedded default benchmark needs no download.

Every generator is deterministic: the same arguments give the same records on every machine,
whatever the run's seed, so the tasks' fingerprints never change. Records follow the local
mirror's schema of their family (SPEC section 3) and go through the same loading path.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

Records = dict[str, list[dict]]

# Short product reviews built from word lists. Items are split between train and test, so every
# test review mentions an item never seen in training.
_ITEMS = {
    "food": {
        "train": [
            "pasta",
            "soup",
            "pizza",
            "burger",
            "salad",
            "curry",
            "steak",
            "omelette",
            "noodles",
            "sandwich",
            "risotto",
            "pancakes",
        ],
        "test": ["lasagna", "tacos", "dumplings", "ramen"],
    },
    "gadget": {
        "train": [
            "laptop",
            "phone",
            "camera",
            "speaker",
            "keyboard",
            "monitor",
            "printer",
            "router",
            "tablet",
            "charger",
            "mouse",
            "headset",
        ],
        "test": ["smartwatch", "projector", "scanner", "drone"],
    },
}
_OPINIONS = {
    "positive": [
        "excellent",
        "wonderful",
        "fantastic",
        "great",
        "superb",
        "delightful",
        "impressive",
        "lovely",
    ],
    "negative": [
        "terrible",
        "awful",
        "horrible",
        "disappointing",
        "dreadful",
        "poor",
        "useless",
        "miserable",
    ],
}
_TEMPLATES = [
    "The {item} was {opinion}.",
    "I bought the {item} last week and it was {opinion}.",
    "Honestly, the {item} turned out {opinion}.",
    "My friends agreed that the {item} was {opinion}.",
    "Everyone said the {item} I got was {opinion}.",
]
_QUESTIONS: dict[str, tuple[str, Callable[[str, str], bool]]] = {
    "positive": ("Is this review positive?", lambda domain, sentiment: sentiment == "positive"),
    "negative": ("Is this review negative?", lambda domain, sentiment: sentiment == "negative"),
    "food": ("Is this review about food?", lambda domain, sentiment: domain == "food"),
}


def review_question(question: str, train_size: int, test_size: int, seed: int = 0) -> Records:
    """A yes/no question about a generated review, half "yes" and half "no" in every split.

    All questions share the answer words and the kind of input, so training on one interferes
    with the others (the "negative" question inverts the "positive" one): a small sequence on
    which plain sequential fine-tuning measurably forgets, and a method that keeps earlier
    tasks apart does not have to.
    """
    if question not in _QUESTIONS:
        raise ValueError(f"unknown question {question!r}; known: {', '.join(_QUESTIONS)}")
    text, holds = _QUESTIONS[question]
    rng = random.Random(f"{question}:{seed}")
    records: Records = {}
    for split, size in (("train", train_size), ("test", test_size)):
        combos = {True: [], False: []}
        for domain, items in _ITEMS.items():
            for sentiment, opinions in _OPINIONS.items():
                for item, opinion, template in itertools.product(
                    items[split], opinions, _TEMPLATES
                ):
                    review = template.format(item=item, opinion=opinion)
                    review = review[0].upper() + review[1:]
                    combos[holds(domain, sentiment)].append(review)
        if size - size // 2 > min(len(combos[True]), len(combos[False])):
            raise ValueError(f"{question}: {split}_size {size} is larger than the pool allows")
        chosen = [(r, "yes") for r in rng.sample(combos[True], size // 2)]
        chosen += [(r, "no") for r in rng.sample(combos[False], size - size // 2)]
        rng.shuffle(chosen)
        records[split] = [{"text": f"Review: {r}\n{text}", "label": label} for r, label in chosen]
    return records


GENERATORS: dict[str, Callable[..., Records]] = {"review_question": review_question}
