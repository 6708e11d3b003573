import pytest

from asr_hf.data.text import (
    normalize_text,
    number_to_words,
    ordinal_to_words,
    select_sentences,
    split_disjoint,
    split_sentences,
)


@pytest.mark.parametrize(
    "n, words",
    [(0, "zero"), (13, "thirteen"), (40, "forty"), (105, "one hundred five"),
     (2047, "two thousand forty seven"), (1_000_001, "one million one")],
)  # fmt: skip
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_ordinals():
    assert [ordinal_to_words(n) for n in (1, 2, 3, 12, 20, 22, 40)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty second", "fortieth",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Mr. Smith paid $3,500 in 1984!", "mister smith paid three thousand five hundred dollars in nineteen eighty four"),
        ("It's 15% off -- don't miss the 21st sale.", "it's fifteen percent off don't miss the twenty first sale"),
        ("The well-known 'quote' (yes)", "the well known quote yes"),
        ("Agent 007 drove 3.5 miles", "agent zero zero seven drove three point five miles"),
        ("Songs of the 1960s & 70s", "songs of the nineteen sixties and seventies"),
        ("a $5 million deal", "a five million dollars deal"),
        ("", ""),
    ],
)  # fmt: skip
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_split_and_select_sentences():
    para = "Hello there my friend. Is it late? Yes it is very late now! 42 is the answer to everything"
    assert split_sentences(para) == [
        "Hello there my friend.", "Is it late?", "Yes it is very late now!", "42 is the answer to everything",
    ]  # fmt: skip
    vocab = {"hello", "there", "my", "friend", "yes", "it", "is", "very", "late", "now"}
    out = select_sentences([para, para], vocabulary=vocab, min_words=4, max_words=10)
    # duplicates dropped, out-of-vocabulary and too-short sentences filtered
    assert out == ["hello there my friend", "yes it is very late now"]


def test_split_disjoint_is_deterministic_and_complete():
    items = [f"s{i}" for i in range(100)]
    a = split_disjoint(items, {"dev": 0.1, "test": 0.1, "train": 1.0}, seed=3)
    b = split_disjoint(items, {"dev": 0.1, "test": 0.1, "train": 1.0}, seed=3)
    assert a == b
    assert len(a["dev"]) == 10 and len(a["test"]) == 10 and len(a["train"]) == 80
    assert sorted(a["dev"] + a["test"] + a["train"]) == sorted(items)
