import pytest

from asr_hf.data.text import (
    normalize_text,
    number_to_words,
    ordinal_to_words,
    select_sentences,
    split_disjoint,
    split_held_out,
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


def _oov_rate(held: list[str], train: list[str]) -> float:
    vocab = {w for s in train for w in s.split()}
    toks = [w for s in held for w in s.split()]
    return sum(w not in vocab for w in toks) / len(toks)


def _zipf_sentences(n: int, seed: int) -> list[str]:
    """Sentences over a Zipf-like vocabulary: many words occur once or twice."""
    import random

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    return sorted({" ".join(rng.choices(words, weights, k=rng.randint(4, 12))) for _ in range(n)})


def test_split_held_out_caps_the_oov_rate_of_every_held_out_set():
    sents = _zipf_sentences(2000, seed=1)
    sizes = {"dev": 150, "test": 300}
    free = split_held_out(sents, sizes, seed=0)
    capped = split_held_out(sents, sizes, seed=0, max_oov_rate=0.01)
    for parts in (free, capped):
        assert [len(parts[n]) for n in ("dev", "test")] == [150, 300]
        assert sorted(parts["dev"] + parts["test"] + parts["train"]) == sorted(sents)
    # a uniform draw on a Zipf vocabulary leaves several percent of held-out words unseen in
    # training; the capped draw keeps each set at or under 1% (checked against the final split)
    assert min(_oov_rate(free[n], free["train"]) for n in sizes) > 0.02
    for n in sizes:
        assert 0.0 < _oov_rate(capped[n], capped["train"]) <= 0.01, n
    assert split_held_out(sents, sizes, seed=0, max_oov_rate=0.01) == capped  # deterministic
    assert split_held_out(sents, sizes, seed=1, max_oov_rate=0.01)["test"] != capped["test"]


def test_split_held_out_counts_words_made_oov_in_the_other_set():
    # "rare" occurs twice: once held out in dev, the second time it would leave training
    # entirely and make dev's occurrence an OOV too, so with a zero cap neither copy goes to test
    sents = ["a b rare", "c d rare"] + [f"a b c d e{i}" for i in range(6)] + ["e0 e1 e2", "e3 e4 e5"]
    for seed in range(10):
        parts = split_held_out(sents, {"dev": 1, "test": 1}, seed=seed, max_oov_rate=0.0)
        for n in ("dev", "test"):
            assert _oov_rate(parts[n], parts["train"]) == 0.0, (seed, parts)
