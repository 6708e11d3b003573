"""N-gram LM: modified Kneser-Ney against hand values and a float64 reference, ARPA scoring, G.fst."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict

import pytest

from asr_hf.lang.lang_dir import LangDir, prepare_lang
from asr_hf.lang.lexicon import Lexicon
from asr_hf.lang.lm import ArpaLM, make_G, modified_kn_discounts, read_sentences, train_lm
from asr_hf.utils.errors import DataError
from asr_hf.utils.kaldi import kfst

LN10 = math.log(10)

# A hand-written bigram model (log10): no normalisation needed for scoring tests.
HAND_ARPA = """\
\\data\\
ngram 1=4
ngram 2=3

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-0.5\ta\t-0.3
-0.6\tb\t-0.2

\\2-grams:
-0.2\t<s> a
-0.4\ta b
-0.1\tb </s>

\\end\\
"""


@pytest.fixture(scope="module")
def ab_lang(tmp_path_factory) -> LangDir:
    lex = Lexicon({"a": (("AH",),), "b": (("B", "IY"),)})
    return prepare_lang(lex, tmp_path_factory.mktemp("lang") / "lang")


def _g_weight(G, word_ids: list[int]) -> tuple[float, list[int]]:
    """Best-path weight of a word sequence through G (back-off #0 arcs allowed)."""
    G = G.copy()
    kfst.arcsort(G, sort_type="olabel")  # compose matches on the left FST's output side
    path = kfst.compose(G, kfst.make_linear_acceptor(word_ids))
    assert path.num_states > 0
    ok, ilabels, olabels, weight = kfst.get_linear_symbol_sequence(kfst.shortest_path(path))
    assert ok and list(olabels) == word_ids
    return float(weight.value), list(ilabels)


# -- ARPA reading and perplexity ---------------------------------------------------


def test_hand_arpa_back_off_and_perplexity(tmp_path):
    lm = ArpaLM.from_string(HAND_ARPA)
    assert lm.order == 2 and lm.vocabulary == {"<s>", "</s>", "a", "b"}
    assert lm.log10_prob("a", ["<s>"]) == pytest.approx(-0.2)
    assert lm.log10_prob("b", ["<s>"]) == pytest.approx(-0.5 - 0.6)  # bow(<s>) p(b)
    assert lm.log10_prob("a", ["b"]) == pytest.approx(-0.2 - 0.5)
    assert lm.log10_prob("</s>", ["a"]) == pytest.approx(-0.3 - 1.0)
    assert lm.log10_prob("x", ["a"]) is None
    # "a b": -0.2 -0.4 -0.1; "b a": -1.1 -0.7 -1.3; "a x b": -0.2, x OOV, p(b | a x) = p(b) = -0.6, -0.1
    dev = tmp_path / "dev.txt"
    dev.write_text("a b\n\nb a\na x b\n")
    r = lm.perplexity(dev)
    logprob = -0.7 - 3.1 - 0.9
    assert (r.sentences, r.words, r.oovs, r.zeroprobs) == (3, 7, 1, 0)
    assert r.logprob == pytest.approx(logprob)
    assert r.ppl == pytest.approx(10 ** (-logprob / (7 - 1 + 3)))
    assert r.ppl1 == pytest.approx(10 ** (-logprob / (7 - 1)))
    assert r.oov_rate == pytest.approx(1 / 7)
    assert lm.sentence_log10_prob("a x b") == pytest.approx(-0.9)
    assert '"oov_rate"' in r.to_json()


def test_arpa_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.arpa"
    p.write_text(HAND_ARPA.replace("-0.4\ta b", "-0.4\ta b c d"))
    with pytest.raises(DataError, match=r"bad\.arpa:13: expected 'logprob w1\.\.w2"):
        ArpaLM.read(p)
    p.write_text(HAND_ARPA.replace("-0.6\tb", "x.6\tb"))
    with pytest.raises(DataError, match=r"bad\.arpa:9: bad number"):
        ArpaLM.read(p)
    p.write_text(HAND_ARPA.replace("ngram 2=3", "ngram 2=4"))
    with pytest.raises(DataError, match=r"bad\.arpa: header declares 4 2-grams but the file has 3"):
        ArpaLM.read(p)
    p.write_text(HAND_ARPA.replace("\\end\\", ""))
    with pytest.raises(DataError, match=r"missing \\end"):
        ArpaLM.read(p)


# -- training -------------------------------------------------------------------------


def test_modified_kn_hand_worked_bigram(tmp_path):
    """Corpus "a b" / "a": bigram counts-of-counts n1=3 n2=1 n3=0, so one discount D = 3/5.

    Unigram continuation counts a=1 ({<s>}), b=1 ({a}), </s>=2 ({a, b}): p = .25 .25 .5.
    p(a|<s>) = (2-.6)/2 + gamma(<s>) .25 with gamma(<s>) = .6*1/2 = .3  -> .775
    p(b|a) = (1-.6)/2 + .6 * .25 = .35;  p(</s>|a) = .2 + .6 * .5 = .5
    p(</s>|b) = (1-.6)/1 + .6 * .5 = .7
    """
    arpa = train_lm(["a b", "a"], tmp_path / "lm.arpa", order=2)
    lm = ArpaLM.read(arpa)
    expect = {
        ("<s>",): -99.0, ("a",): math.log10(0.25), ("b",): math.log10(0.25), ("</s>",): math.log10(0.5),
        ("<s>", "a"): math.log10(0.775), ("a", "b"): math.log10(0.35), ("a", "</s>"): math.log10(0.5),
        ("b", "</s>"): math.log10(0.7),
    }  # fmt: skip
    assert lm.logprob.keys() == expect.keys()
    for ngram, lp in expect.items():
        assert lm.logprob[ngram] == pytest.approx(lp, abs=1e-6), ngram
    bows = {("<s>",): math.log10(0.3), ("a",): math.log10(0.6), ("b",): math.log10(0.6)}
    assert lm.backoff == pytest.approx(bows, abs=1e-6)
    assert lm.log10_prob("a", ["b"]) == pytest.approx(math.log10(0.6 * 0.25), abs=1e-6)
    r = lm.perplexity(["a b"])
    p = 0.775 * 0.35 * 0.7
    assert r.logprob == pytest.approx(math.log10(p), abs=1e-6)
    assert r.ppl == pytest.approx(p ** (-1 / 3), rel=1e-5)


def test_modified_kn_discounts():
    n = Counter({1: 10, 2: 5, 3: 3, 4: 2})
    y = 10 / 20
    assert modified_kn_discounts(n) == pytest.approx((1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3))
    assert modified_kn_discounts(Counter({1: 3, 2: 1})) == pytest.approx((0.6, 0.6, 0.6))


def _random_corpus(seed: int = 0, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    vocab = "the cat dog sat on a mat ran to house big small".split()
    out = []
    for _ in range(n):
        words = vocab[:6] if rng.random() < 0.5 else vocab
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 7))))
    return out


def _reference_mkn(sentences: list[str], order: int):
    """Interpolated modified Kneser-Ney straight from the definition (float64), for checking."""
    raw: Counter = Counter()
    for s in sentences:
        w = ["<s>"] + s.split() + ["</s>"]
        for n in range(1, order + 1):
            for i in range(len(w) - n + 1):
                raw[tuple(w[i : i + n])] += 1
    left: dict[tuple, set] = defaultdict(set)
    for g in raw:
        if len(g) >= 2:
            left[g[1:]].add(g[0])

    def count(g: tuple) -> int:  # a(h, w)
        if g == ("<s>",):
            return 0
        if len(g) == order or g[0] == "<s>":
            return raw[g]
        return len(left[g])

    by_order: dict[int, dict[tuple, int]] = {n: {} for n in range(1, order + 1)}
    for g in raw:
        by_order[len(g)][g] = count(g)
    discounts = {1: (0.0, 0.0, 0.0)}
    for n in range(2, order + 1):
        coc = Counter(c for c in by_order[n].values() if c > 0)
        n1, n2, n3, n4 = (coc[k] for k in (1, 2, 3, 4))
        y = n1 / (n1 + 2 * n2)
        discounts[n] = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    followers: dict[tuple, dict[str, int]] = defaultdict(dict)
    for g, c in count_items(by_order):
        followers[g[:-1]][g[-1]] = c

    def prob(w: str, h: tuple) -> float:
        if not h:
            total = sum(followers[()].values())
            return followers[()].get(w, 0) / total
        f = followers.get(h)
        if not f:  # unseen history: back off
            return prob(w, h[1:])
        d = discounts[len(h) + 1]
        total = sum(f.values())
        disc = lambda c: d[min(c, 3) - 1]  # noqa: E731
        gamma = sum(disc(c) for c in f.values()) / total
        c = f.get(w, 0)
        return (max(c - disc(c), 0) if c else 0) / total + gamma * prob(w, h[1:])

    return prob, followers


def count_items(by_order):
    for n in by_order:
        yield from by_order[n].items()


def test_modified_kn_matches_float64_reference(tmp_path):
    sentences = _random_corpus()
    lm = ArpaLM.read(train_lm(sentences, tmp_path / "lm.arpa", order=3))
    ref, followers = _reference_mkn(sentences, 3)
    vocab = sorted(lm.vocabulary - {"<s>"})
    histories = [h for h in followers if len(h) <= 2 and "</s>" not in h]
    histories += [("mat", "mat"), ("<s>", "house"), ("big", "to")]  # some unseen
    worst = 0.0
    for h in histories:
        total = 0.0
        for w in vocab:
            p = 10 ** lm.log10_prob(w, list(h))
            worst = max(worst, abs(p - ref(w, h)) / ref(w, h))
            total += p
        assert total == pytest.approx(1.0, abs=1e-5), h  # interpolated MKN is normalised
    assert worst < 1e-5


def test_vocabulary_maps_to_unk_and_pruning(tmp_path):
    sentences = _random_corpus(1)
    lm = ArpaLM.read(train_lm(sentences, tmp_path / "v.arpa", vocabulary={"the", "cat", "dog", "<unk>"}))
    assert lm.vocabulary == {"<s>", "</s>", "the", "cat", "dog", "<unk>"}
    # OOV "zebra": excluded (SRILM default; </s> then backs off past it) or scored as <unk> (SRILM -unk)
    excluded, scored = lm.perplexity(["the zebra"]), lm.perplexity(["the zebra"], score_unk=True)
    assert excluded.oovs == scored.oovs == 1 and excluded.oov_rate == 0.5
    p_the = lm.log10_prob("the", ["<s>"])
    assert excluded.logprob == pytest.approx(p_the + lm.logprob[("</s>",)])
    assert excluded.ppl == pytest.approx(10 ** (-excluded.logprob / 2))
    p_unk, p_end = lm.log10_prob("<unk>", ["<s>", "the"]), lm.log10_prob("</s>", ["the", "<unk>"])
    assert scored.logprob == pytest.approx(p_the + p_unk + p_end)
    assert scored.ppl == pytest.approx(10 ** (-scored.logprob / 3))
    full = ArpaLM.read(train_lm(sentences, tmp_path / "f.arpa"))
    pruned = ArpaLM.read(train_lm(sentences, tmp_path / "p.arpa", prune_threshold=1e-3))
    assert len(pruned.logprob) < len(full.logprob)
    vocab = sorted(pruned.vocabulary - {"<s>"})
    for h in itertools.chain([()], [k for k in pruned.backoff if k[-1] != "</s>"]):
        assert sum(10 ** pruned.log10_prob(w, list(h)) for w in vocab) == pytest.approx(1.0, abs=1e-5)
    kn = ArpaLM.read(train_lm(sentences, tmp_path / "kn.arpa", smoothing="kn"))
    assert kn.logprob.keys() == full.logprob.keys()


def test_training_text_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.txt: no sentences"):
        train_lm(empty, tmp_path / "x.arpa")
    bad = tmp_path / "bad.txt"
    bad.write_text("a b\n<s> c\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: reserved symbol '<s>'"):
        read_sentences(bad)
    assert not (tmp_path / "x.arpa").exists()


# -- G.fst ------------------------------------------------------------------------------


def test_G_from_hand_arpa_path_weights(tmp_path, ab_lang):
    arpa = tmp_path / "hand.arpa"
    arpa.write_text(HAND_ARPA)
    out = make_G(arpa, ab_lang, tmp_path / "G.fst")
    G = kfst.StdVectorFst.read(str(out))
    assert G.is_ilabel_sorted
    a, b = ab_lang.word_ids("a b")
    # explicit bigrams: p(a|<s>) p(b|a) p(</s>|b)
    weight, ilabels = _g_weight(G, [a, b])
    assert weight == pytest.approx(0.7 * LN10, abs=1e-4)
    assert ab_lang.word_disambig_word not in ilabels
    # all back-off: bow(<s>) p(b) bow(b) p(a) bow(a) p(</s>)
    weight, ilabels = _g_weight(G, [b, a])
    assert weight == pytest.approx(3.1 * LN10, abs=1e-4)
    assert ilabels.count(ab_lang.word_disambig_word) == 3


def test_G_from_trained_lm_matches_arpa(tmp_path, ab_lang):
    arpa = train_lm(["a b", "a"], tmp_path / "lm.arpa", order=2)
    make_G(arpa, ab_lang.path)  # default: <lang>/G.fst
    lang = LangDir.load(ab_lang.path, check_fsts=True)  # validates G too
    weight, _ = _g_weight(lang.G(), lang.word_ids("a b"))
    assert weight == pytest.approx(-math.log(0.775 * 0.35 * 0.7), abs=1e-4)
    lang.G_path.unlink()


def test_G_words_not_in_lang(tmp_path, ab_lang):
    arpa = tmp_path / "oov.arpa"
    arpa.write_text(
        HAND_ARPA.replace("ngram 1=4", "ngram 1=5")
        .replace("ngram 2=3", "ngram 2=4")
        .replace("-0.6\tb\t-0.2\n", "-0.6\tb\t-0.2\n-0.9\tzebra\n")
        .replace("-0.1\tb </s>\n", "-0.1\tb </s>\n-0.3\tb zebra\n")
    )
    with pytest.raises(DataError, match=r"oov\.arpa:10: word 'zebra' is not in .*words\.txt"):
        make_G(arpa, ab_lang, tmp_path / "G_err.fst", oov="error")
    assert not (tmp_path / "G_err.fst").exists()
    out = make_G(arpa, ab_lang, tmp_path / "G.fst", oov="drop")
    G = kfst.StdVectorFst.read(str(out))
    weight, _ = _g_weight(G, ab_lang.word_ids("a b"))
    assert weight == pytest.approx(0.7 * LN10, abs=1e-4)


def test_perplexity_agrees_with_kaldingram(tmp_path):
    from kaldingram.ppl import compute_ppl
    from kaldingram.prune import ArpaParser

    arpa = train_lm(_random_corpus(2), tmp_path / "lm.arpa", order=3)
    rng = random.Random(3)
    vocab = sorted(ArpaLM.read(arpa).vocabulary - {"<s>", "</s>"})
    dev = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8))) for _ in range(40)]
    ours = ArpaLM.read(arpa).perplexity(dev)
    theirs = compute_ppl(ArpaParser().loadf(str(arpa))[0], dev)
    assert ours.logprob == pytest.approx(theirs["logprob"], rel=1e-9)
    assert ours.ppl == pytest.approx(theirs["ppl"], rel=1e-9)
