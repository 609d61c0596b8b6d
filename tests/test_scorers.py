"""Hand-made examples with known scores for every scorer in clbench.evaluation.scorers."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from seqeval.metrics import f1_score, precision_score, recall_score

from clbench.evaluation.scorers import (
    SCORERS,
    accuracy,
    bio_entities,
    chrf,
    entity_f1,
    exact_match,
    format_entities,
    parse_entities,
    preference_accuracy,
    rouge_l,
)


def test_registry_names() -> None:
    assert set(SCORERS) == {
        "accuracy",
        "exact_match",
        "entity_f1",
        "chrf",
        "rouge_l",
        "preference_accuracy",
    }


# One valid (predictions, references) pair per scorer, to check the shared contract.
VALID_INPUTS = {
    "accuracy": ([1, 0], [1, 1]),
    "exact_match": (["a", "b"], ["a", "c"]),
    "entity_f1": (
        ["PER: Ann", "none"],
        [{"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"]}, {"tokens": ["x"], "tags": ["O"]}],
    ),
    "chrf": (["the cat sat down", "a dog"], ["the cat sat down", "the dog"]),
    "rouge_l": (["the cat sat", "a dog"], ["the cat sat", "the dog"]),
    "preference_accuracy": ([(-1.0, -2.0), (-2.0, -1.0)], [None, None]),
}


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_contract_primary_key_and_python_floats(name: str) -> None:
    scores = SCORERS[name](*VALID_INPUTS[name])
    assert name in scores
    assert all(type(value) is float for value in scores.values())
    bounded = {k: v for k, v in scores.items() if k != "reward_margin_mean"}
    assert all(0.0 <= value <= 1.0 for value in bounded.values())


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_length_mismatch_raises_naming_both_lengths(name: str) -> None:
    predictions, references = VALID_INPUTS[name]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        SCORERS[name](predictions, references[:1])


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_empty_input_raises(name: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        SCORERS[name]([], [])


# --- accuracy / exact match ----------------------------------------------------------------


def test_accuracy() -> None:
    # Indices 0, 1 and 3 agree, index 2 does not: 3/4.
    assert accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == {"accuracy": 0.75}


def test_exact_match_strips_but_keeps_case() -> None:
    # " Paris " == "Paris" after stripping; "paris" != "Paris" (case kept); "Rome" == "Rome ".
    # 2/3.
    scores = exact_match([" Paris ", "paris", "Rome"], ["Paris", "Paris", "Rome "])
    assert scores == {"exact_match": pytest.approx(2 / 3)}


# --- named entities ------------------------------------------------------------------------

SENTENCE = {
    "tokens": ["John", "Smith", "flew", "from", "New", "York", "to", "Paris", "with", "Mary"],
    "tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "B-LOC", "O", "B-PER"],
}


def test_bio_entities() -> None:
    assert bio_entities(SENTENCE["tokens"], SENTENCE["tags"]) == [
        ("PER", "John Smith"),
        ("LOC", "New York"),
        ("LOC", "Paris"),
        ("PER", "Mary"),
    ]


def test_entity_f1_perfect_prediction() -> None:
    prediction = "PER: John Smith; LOC: New York; LOC: Paris; PER: Mary"
    assert entity_f1([prediction], [SENTENCE]) == {
        "entity_f1": 1.0,
        "entity_precision": 1.0,
        "entity_recall": 1.0,
    }


def test_entity_f1_mixed_errors_by_hand() -> None:
    # Sentence 1 (4 gold): "John Smith" right; "Paris" tagged ORG (wrong type); "York" instead of
    # "New York" (wrong boundary); "Mary" missing; "London" is not in the sentence (unplaceable
    # false positive). Sentence 2 (2 gold): "Ann" right, "Bob" missing.
    # tp = 1 + 1 = 2, predicted = 4 + 1 = 5, gold = 4 + 2 = 6.
    # P = 2/5, R = 2/6 = 1/3, F1 = 2PR / (P + R) = (4/15) / (11/15) = 4/11.
    predictions = ["PER: John Smith; ORG: Paris; LOC: York; LOC: London", "PER: Ann"]
    references = [SENTENCE, {"tokens": ["Ann", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]}]
    scores = entity_f1(predictions, references)
    assert scores["entity_precision"] == pytest.approx(2 / 5)
    assert scores["entity_recall"] == pytest.approx(1 / 3)
    assert scores["entity_f1"] == pytest.approx(4 / 11)


# Five sentences with hand-written predicted tags; every predicted span occurs once in its
# sentence, so the string form places back onto exactly these tags.
SEQEVAL_CASES = [
    (
        ["Angela", "Merkel", "visited", "Washington", "on", "Monday"],
        ["B-PER", "I-PER", "O", "B-LOC", "O", "B-DATE"],
        ["B-PER", "I-PER", "O", "B-ORG", "O", "B-DATE"],
    ),
    (
        ["The", "United", "Nations", "met", "in", "Geneva"],
        ["O", "B-ORG", "I-ORG", "O", "O", "B-LOC"],
        ["O", "O", "B-ORG", "O", "O", "B-LOC"],
    ),
    (
        ["Apple", "hired", "Tim", "Cook"],
        ["B-ORG", "O", "B-PER", "I-PER"],
        ["B-ORG", "O", "B-PER", "I-PER"],
    ),
    (
        ["Rain", "fell", "in", "Oslo", "and", "Bergen"],
        ["O", "O", "O", "B-LOC", "O", "B-LOC"],
        ["B-MISC", "O", "O", "B-LOC", "O", "O"],
    ),
    (
        ["Nothing", "happened", "here"],
        ["O", "O", "O"],
        ["O", "B-LOC", "O"],
    ),
]


def test_entity_f1_equals_seqeval_when_all_items_are_placeable() -> None:
    y_true = [gold for _, gold, _ in SEQEVAL_CASES]
    y_pred = [pred for _, _, pred in SEQEVAL_CASES]
    predictions = [format_entities(bio_entities(tokens, pred)) for tokens, _, pred in SEQEVAL_CASES]
    references = [{"tokens": tokens, "tags": gold} for tokens, gold, _ in SEQEVAL_CASES]
    scores = entity_f1(predictions, references)
    assert scores["entity_f1"] == f1_score(y_true, y_pred)
    assert scores["entity_precision"] == precision_score(y_true, y_pred)
    assert scores["entity_recall"] == recall_score(y_true, y_pred)
    # Guard against a degenerate fixture. tp = 2 + 1 + 2 + 1 + 0 = 6 (Angela Merkel, Monday,
    # Geneva, Apple, Tim Cook, Oslo); predicted = 3 + 2 + 2 + 2 + 1 = 10; gold = 3 + 2 + 2 + 2 +
    # 0 = 9. P = 6/10, R = 6/9, F1 = 2 * 6 / (10 + 9) = 12/19.
    assert scores["entity_precision"] == pytest.approx(6 / 10)
    assert scores["entity_recall"] == pytest.approx(6 / 9)
    assert scores["entity_f1"] == pytest.approx(12 / 19)


def test_entity_f1_none_and_empty_predictions() -> None:
    empty_sentence = {"tokens": ["It", "rained"], "tags": ["O", "O"]}
    one_entity = {"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"]}
    # No gold and no predicted entities anywhere: nothing to find, nothing wrongly found.
    assert entity_f1(["none", ""], [empty_sentence, empty_sentence])["entity_f1"] == 1.0
    # "none" where one entity exists, plus one correct: tp = 1, predicted = 1, gold = 2.
    # P = 1, R = 1/2, F1 = 2/3.
    scores = entity_f1(["none", "PER: Ann"], [one_entity, one_entity])
    assert scores["entity_precision"] == 1.0
    assert scores["entity_recall"] == 0.5
    assert scores["entity_f1"] == pytest.approx(2 / 3)
    # Only gold entities, nothing predicted: 0, not the no-entity 1.0.
    assert entity_f1([""], [one_entity])["entity_f1"] == 0.0


def test_parse_entities_strips_and_ignores_malformed_items() -> None:
    assert parse_entities("  person :  John  Smith ") == [("person", "John Smith")]
    # No colon, empty type, empty span: all ignored; types stay case-sensitive.
    assert parse_entities("John; : Mary; PER: ; per: Ann ;") == [("per", "Ann")]
    assert parse_entities("none") == parse_entities("") == []
    sentence = {"tokens": ["John", "Smith", "ran"], "tags": ["B-person", "I-person", "O"]}
    assert entity_f1(["  person :  John  Smith "], [sentence])["entity_f1"] == 1.0
    # "Person" is not "person": one false positive, one miss.
    assert entity_f1(["Person: John Smith"], [sentence])["entity_f1"] == 0.0


def test_repeated_span_is_placed_at_first_free_occurrence() -> None:
    sentence = {"tokens": ["Paris", "and", "Paris"], "tags": ["B-LOC", "O", "B-LOC"]}
    # The second "Paris" skips the already tagged first occurrence: both correct.
    assert entity_f1(["LOC: Paris; LOC: Paris"], [sentence])["entity_f1"] == 1.0
    # A third has nowhere left to go: P = 2/3, R = 1.
    scores = entity_f1(["LOC: Paris; LOC: Paris; LOC: Paris"], [sentence])
    assert scores["entity_precision"] == pytest.approx(2 / 3)
    assert scores["entity_recall"] == 1.0


def test_format_and_parse_round_trip() -> None:
    items = [("PER", "John Smith"), ("LOC", "New York"), ("MISC", "Star Wars: Episode IV")]
    text = format_entities(items)
    assert text == "PER: John Smith; LOC: New York; MISC: Star Wars: Episode IV"
    assert parse_entities(text) == items
    assert format_entities([]) == "none"
    assert parse_entities(format_entities([])) == []


# --- translation ---------------------------------------------------------------------------

HYPOTHESES = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the dog",
    "it is raining heavily in the city today",
]
TRANSLATIONS = [
    "the cat is sitting on the mat",
    "the quick brown fox jumps over the lazy dog",
    "it rains heavily in the city today",
]


def test_chrf_and_bleu_equal_sacrebleu() -> None:
    # Surrounding white space on predictions is stripped before scoring.
    scores = chrf([f"  {h}\n" for h in HYPOTHESES], TRANSLATIONS)
    expected_chrf = sacrebleu.corpus_chrf(HYPOTHESES, [TRANSLATIONS]).score / 100
    expected_bleu = sacrebleu.corpus_bleu(HYPOTHESES, [TRANSLATIONS]).score / 100
    assert scores == {"chrf": pytest.approx(expected_chrf), "bleu": pytest.approx(expected_bleu)}
    assert 0.0 < scores["bleu"] < scores["chrf"] < 1.0


def test_chrf_identical_is_one() -> None:
    scores = chrf(TRANSLATIONS, TRANSLATIONS)
    assert scores["chrf"] == pytest.approx(1.0)
    assert scores["bleu"] == pytest.approx(1.0)


# --- instruction following -----------------------------------------------------------------


def test_rouge_l_equals_rouge_score() -> None:
    predictions = ["the cat sat ", "a dog running fast"]
    references = ["the cat sat", "the dog runs"]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [
        scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)
    ]
    scores = rouge_l(predictions, references)
    assert scores["rouge_l"] == pytest.approx(sum(expected) / 2)
    # By hand: 1.0 for the first; in the second the stemmer maps "running" and "runs" to "run",
    # so LCS "dog run" = 2, P = 2/4, R = 2/3, F = 2PR / (P + R) = 4/7. Mean = (1 + 4/7) / 2 =
    # 11/14. (Without stemming the LCS would be "dog" alone.)
    assert scores["rouge_l"] == pytest.approx(11 / 14)
    # Only the first matches exactly after stripping.
    assert scores["exact_match"] == 0.5


# --- preferences ---------------------------------------------------------------------------


def test_preference_accuracy() -> None:
    # chosen > rejected only in the first pair (the tie counts as wrong): 1/3.
    # Margins 1, -2 and 0: mean -1/3, outside [0, 1] by design.
    scores = preference_accuracy([(-1.0, -2.0), (-3.0, -1.0), (-1.0, -1.0)], [None] * 3)
    assert scores["preference_accuracy"] == pytest.approx(1 / 3)
    assert scores["reward_margin_mean"] == pytest.approx((1 - 2 + 0) / 3)
