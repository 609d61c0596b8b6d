"""Hand-made examples with known scores for every scorer in clbench.evaluation.scorers."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest
import sacrebleu
from rouge_score import rouge_scorer, tokenizers
from seqeval.metrics import f1_score, precision_score, recall_score

from clbench.evaluation.scorers import (
    SCORERS,
    RougeTokenizer,
    accuracy,
    bio_entities,
    bleu_tokenizer,
    check_options,
    chrf,
    entity_f1,
    exact_match,
    format_entities,
    parse_entities,
    preference_accuracy,
    rouge_l,
)

HAS_MECAB = bool(importlib.util.find_spec("MeCab") and importlib.util.find_spec("ipadic"))


def test_registry_names() -> None:
    assert set(SCORERS) == {
        "accuracy",
        "exact_match",
        "entity_f1",
        "chrf",
        "rouge_l",
        "preference_accuracy",
        "bits_per_byte",
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
    "bits_per_byte": ([(3.0, 2, 5), (4.0, 3, 6)], [None, None]),
}


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_contract_primary_key_and_python_floats(name: str) -> None:
    scores = SCORERS[name](*VALID_INPUTS[name])
    assert name in scores
    assert all(type(value) is float for value in scores.values())
    # A margin of log-likelihoods and the losses of language modelling are not fractions.
    unbounded = {"reward_margin_mean", "bits_per_byte", "perplexity", "loss"}
    bounded = {k: v for k, v in scores.items() if k not in unbounded}
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


def test_separators_inside_entities_are_escaped_and_parsed_back_exactly() -> None:
    items = [("org", "Rock ; Roll Inc"), ("misc", "C:\\ drive"), ("a:b", "x"), ("per", "none")]
    text = format_entities(items)
    assert text == "org: Rock \\; Roll Inc; misc: C:\\\\ drive; a\\:b: x; per: none"
    assert parse_entities(text) == items
    # A lone trailing backslash is kept as it is.
    assert parse_entities("per: Ann\\") == [("per", "Ann\\")]


def test_gold_entities_with_separators_score_exactly_one() -> None:
    sentence = {
        "tokens": ["Rock", ";", "Roll", "Inc", "met", "A\\B", "in", "Rome", ";", "twice"],
        "tags": ["B-org", "I-org", "I-org", "I-org", "O", "B-per", "O", "B-loc", "O", "O"],
    }
    gold = format_entities(bio_entities(sentence["tokens"], sentence["tags"]))
    assert entity_f1([gold], [sentence])["entity_f1"] == 1.0
    # Unescaped, the ";" splits "Rock ; Roll Inc" into two items that are not entities.
    unescaped = "org: Rock ; Roll Inc; per: A\\B; loc: Rome"
    assert entity_f1([unescaped], [sentence])["entity_f1"] < 1.0


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
    # Exactly 1.0: sacrebleu's own arithmetic gives 100.00000000000004 here.
    assert chrf(TRANSLATIONS, TRANSLATIONS) == {"chrf": 1.0, "bleu": 1.0}


CHINESE_HYPOTHESES = [
    "我喜欢在公园里散步。",
    "今天天气很好，我们去海边吧。",
    "他正在读一本有趣的书。",
]
CHINESE_REFERENCES = [
    "我喜欢在公园散步。",
    "今天天气不错，我们去海边吧。",
    "他在看一本很有意思的书。",
]


def test_bleu_of_chinese_uses_the_zh_tokenizer() -> None:
    scores = chrf(CHINESE_HYPOTHESES, CHINESE_REFERENCES, language="zh")
    zh = sacrebleu.corpus_bleu(CHINESE_HYPOTHESES, [CHINESE_REFERENCES], tokenize="zh")
    plain = sacrebleu.corpus_bleu(CHINESE_HYPOTHESES, [CHINESE_REFERENCES], tokenize="13a")
    assert scores["bleu"] == pytest.approx(zh.score / 100)
    # 13a sees each unspaced sentence as one or two words, so it scores far lower.
    assert plain.score < zh.score / 2
    assert chrf(CHINESE_HYPOTHESES, CHINESE_REFERENCES)["bleu"] == pytest.approx(plain.score / 100)
    assert chrf(CHINESE_REFERENCES, CHINESE_REFERENCES, language="zh") == {"chrf": 1.0, "bleu": 1.0}


def test_bleu_tokenizer_set_by_name_overrides_the_language() -> None:
    scores = chrf(CHINESE_HYPOTHESES, CHINESE_REFERENCES, language="zh", tokenize="char")
    char = sacrebleu.corpus_bleu(CHINESE_HYPOTHESES, [CHINESE_REFERENCES], tokenize="char")
    assert scores["bleu"] == pytest.approx(char.score / 100)


def test_bleu_tokenizer_follows_the_language_code() -> None:
    assert bleu_tokenizer("zh") == bleu_tokenizer("zh-Hant") == bleu_tokenizer("ZH_cn") == "zh"
    assert bleu_tokenizer("de") == bleu_tokenizer(None) == bleu_tokenizer("") == "13a"
    if HAS_MECAB:
        assert bleu_tokenizer("ja") == "ja-mecab"
    else:
        with pytest.warns(UserWarning, match="ja-mecab"):
            assert bleu_tokenizer("ja") == "char"


def test_japanese_gold_translations_score_exactly_one() -> None:
    references = ["猫が好きです。", "東京は大きな都市です。"]
    with contextlib.nullcontext() if HAS_MECAB else pytest.warns(UserWarning, match="ja-mecab"):
        assert chrf(references, references, language="ja") == {"chrf": 1.0, "bleu": 1.0}


@pytest.mark.parametrize(
    ("metric", "options", "message"),
    [
        (
            "rouge_l",
            {"tokenize": "zh"},
            "metric 'rouge_l' has no option(s) tokenize; it takes none",
        ),
        ("chrf", {"tokeniser": "zh"}, "has no option(s) tokeniser; it takes language, tokenize"),
        ("chrf", {"tokenize": "jieba"}, "'tokenize' is 'jieba'; sacrebleu has"),
        ("chrf", {"language": 7}, "option 'language' must be a string"),
    ],
)
def test_check_options_names_the_problem(metric, options, message) -> None:
    assert message in check_options(metric, options)


def test_check_options_accepts_known_options() -> None:
    assert check_options("chrf", {"tokenize": "zh", "language": "zh"}) is None
    assert check_options("accuracy", {}) is None


@pytest.mark.skipif(HAS_MECAB, reason="MeCab is installed")
def test_check_options_refuses_a_tokenizer_whose_package_is_missing() -> None:
    assert "cannot use tokenizer 'ja-mecab'" in check_options("chrf", {"tokenize": "ja-mecab"})


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


ASCII_TEXTS = [
    "The cats_are RUNNING, fast!! 3.14 x-ray",
    "hello___world  it's   (maybe) HTTP/2 e-mail",
    "Generalization; generalizations: generalize.",
]


@pytest.mark.parametrize("text", ASCII_TEXTS)
def test_rouge_tokenizer_equals_rouge_score_on_ascii(text: str) -> None:
    assert RougeTokenizer().tokenize(text) == tokenizers.DefaultTokenizer(True).tokenize(text)


def test_rouge_tokenizer_keeps_every_script() -> None:
    tokens = RougeTokenizer().tokenize("我爱北京。Naïve Москва, हिन्दी カタカナ")
    # Han and Kana one character each; other scripts whole words, lower-cased, marks kept.
    assert tokens == ["我", "爱", "北", "京", "naïve", "москва", "हिन्दी", "カ", "タ", "カ", "ナ"]


def test_rouge_l_of_chinese() -> None:
    # rouge-score's own tokenizer drops every Chinese character: 0 even for equal strings.
    default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert default.score("我爱北京", "我爱北京")["rougeL"].fmeasure == 0.0
    assert rouge_l(["我爱北京", "今天很好"], ["我爱北京", "今天很好"])["rouge_l"] == 1.0
    # By hand: 我爱北京 vs 我爱上海 share the LCS 我爱, 2 of 4 characters each: P = R = F = 1/2.
    assert rouge_l(["我爱上海"], ["我爱北京"])["rouge_l"] == pytest.approx(0.5)


# --- preferences ---------------------------------------------------------------------------


def test_preference_accuracy() -> None:
    # chosen > rejected only in the first pair (the tie counts as wrong): 1/3.
    # Margins 1, -2 and 0: mean -1/3, outside [0, 1] by design.
    scores = preference_accuracy([(-1.0, -2.0), (-3.0, -1.0), (-1.0, -1.0)], [None] * 3)
    assert scores["preference_accuracy"] == pytest.approx(1 / 3)
    assert scores["reward_margin_mean"] == pytest.approx((1 - 2 + 0) / 3)
