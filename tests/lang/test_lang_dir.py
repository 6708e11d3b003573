"""Lang dir: tables, Kaldi disambiguation, topology, L/L_disambig, kaldi-hmm-gmm graph compilation."""

from __future__ import annotations

import math
import shutil

import pytest

from asr_hf.lang.lang_dir import (
    LangDir,
    SymbolTable,
    add_lex_disambig,
    add_position_markers,
    fst_arcs,
    prepare_lang,
)
from asr_hf.lang.lexicon import (
    CMU_PHONES,
    Lexicon,
    MissingPronunciation,
    collect_words,
    lexicon_for_words,
)
from asr_hf.utils.errors import DataError
from asr_hf.utils.kaldi import kfst, khg

# "a EY" is a prefix of "EY T"; "ate"/"eight" are homophones.
TINY = {
    "a": (("AH",), ("EY",)),
    "ate": (("EY", "T"),),
    "eight": (("EY", "T"),),
    "at": (("AE", "T"),),
    "cat": (("K", "AE", "T"),),
}
SIL_PROB = 0.3


@pytest.fixture(scope="module")
def lang(tmp_path_factory) -> LangDir:
    return prepare_lang(Lexicon(dict(TINY)), tmp_path_factory.mktemp("lang") / "lang", sil_prob=SIL_PROB)


def _phones(lang: LangDir, ids) -> list[str]:
    return [lang.phones.symbol(i) for i in ids]


def _best(fst) -> tuple[list[int], list[int], float]:
    ok, ilabels, olabels, weight = kfst.get_linear_symbol_sequence(kfst.shortest_path(fst))
    assert ok
    return list(ilabels), list(olabels), float(weight.value)


def _transduce(L, phones: list[int], words: list[int]):
    """(phone acceptor) o L o (word acceptor)."""
    lw = kfst.compose(L, kfst.make_linear_acceptor(words))
    return kfst.compose(kfst.make_linear_acceptor(phones), lw)


# -- tables ------------------------------------------------------------------


def test_phone_and_word_tables_exact(lang):
    expected_phones = ["<eps>", "SIL", "SPN", *sorted(CMU_PHONES), "#0", "#1", "#2", "#3"]
    assert list(lang.phones) == expected_phones
    assert lang.phones.ids == {p: i for i, p in enumerate(expected_phones)}
    assert (lang.phones["SIL"], lang.phones["SPN"], lang.phones["AA"], lang.phones["#0"]) == (1, 2, 3, 42)
    expected_words = ["<eps>", "<unk>", "a", "at", "ate", "cat", "eight", "#0", "<s>", "</s>"]
    assert lang.words.ids == {w: i for i, w in enumerate(expected_words)}
    assert lang.oov == "<unk>" and lang.oov_id == 1
    assert lang.silence_phones == [1, 2] and lang.optional_silence == 1
    assert lang.nonsilence_phones == list(range(3, 42))
    assert lang.disambig_phones == [42, 43, 44, 45]
    assert lang.context_indep == [1, 2]
    assert lang.hmm_phones == list(range(1, 42))
    assert lang.vocabulary == ["<unk>", "a", "at", "ate", "cat", "eight"]


def test_lexicon_files_with_kaldi_disambiguation(lang):
    assert (lang.path / "lexicon_disambig.txt").read_text().splitlines() == [
        "<unk> SPN",
        "a AH",
        "a EY #1",  # prefix of "EY T"
        "at AE T",
        "ate EY T #1",  # homophones: #1, #2 in lexicon order
        "cat K AE T",
        "eight EY T #2",
    ]
    assert "#" not in (lang.path / "lexicon.txt").read_text()
    # One more disambiguation symbol (#3) for the silence in L_disambig, as prepare_lang.sh.
    assert (lang.path / "phones" / "disambig.txt").read_text().split() == ["#0", "#1", "#2", "#3"]
    assert (lang.path / "phones" / "wdisambig_phones.int").read_text().split() == ["42"]
    assert (lang.path / "phones" / "wdisambig_words.int").read_text().split() == ["7"]
    assert (lang.path / "oov.int").read_text().split() == ["1"]
    assert (lang.path / "phones" / "silence.csl").read_text().strip() == "1:2"
    roots = (lang.path / "phones" / "roots.txt").read_text().splitlines()
    assert roots[0] == "shared split SIL" and len(roots) == 41


def test_add_lex_disambig_counts_per_phone_sequence():
    entries = [
        ("a", ("EY",)),
        ("ate", ("EY", "T")),
        ("eight", ("EY", "T")),
        ("b", ("B", "IY")),
        ("be", ("B", "IY")),
        ("bee", ("B", "IY")),
        ("bead", ("B", "IY", "D")),
        ("dog", ("D", "AO", "G")),
    ]
    out, max_disambig = add_lex_disambig(entries)
    assert [" ".join(p) for _, p in out] == [
        "EY #1",
        "EY T #1",
        "EY T #2",
        "B IY #1",
        "B IY #2",
        "B IY #3",
        "B IY D",
        "D AO G",
    ]
    assert max_disambig == 3
    assert add_lex_disambig([("x", ("K",))]) == ([("x", ("K",))], 0)


def test_topology_read_by_kaldi_hmm_gmm(lang):
    topo = lang.topo()
    assert sorted(topo.phones) == lang.hmm_phones
    n = topo.get_phone_to_num_pdf_classes()
    assert n[lang.phones["SIL"]] == 5 and n[lang.phones["SPN"]] == 5 and n[lang.phones["AA"]] == 3
    sil = topo.topology_for_phone(lang.phones["SIL"])
    assert [s.transitions for s in sil] == [
        [(0, 0.25), (1, 0.25), (2, 0.25), (3, 0.25)],
        [(1, 0.25), (2, 0.25), (3, 0.25), (4, 0.25)],
        [(1, 0.25), (2, 0.25), (3, 0.25), (4, 0.25)],
        [(1, 0.25), (2, 0.25), (3, 0.25), (4, 0.25)],
        [(4, 0.75), (5, 0.25)],
        [],
    ]
    aa = topo.topology_for_phone(lang.phones["AA"])
    assert [s.transitions for s in aa] == [[(0, 0.75), (1, 0.25)], [(1, 0.75), (2, 0.25)], [(2, 0.75), (3, 0.25)], []]
    assert topo.min_length(lang.phones["AA"]) == 3


# -- L.fst -------------------------------------------------------------------


def test_L_best_path_without_silence(lang):
    L = lang.L()
    assert L.is_olabel_sorted
    phones, words, weight = _best(kfst.compose(L, kfst.make_linear_acceptor(lang.word_ids("cat ate"))))
    assert _phones(lang, phones) == ["K", "AE", "T", "EY", "T"]
    assert words == lang.word_ids("cat ate")
    # start, after "cat", after "ate": each chooses no silence.
    assert weight == pytest.approx(-3 * math.log(1 - SIL_PROB), abs=1e-5)


@pytest.mark.parametrize(
    "phones, n_sil",
    [
        ("SIL K AE T SIL EY T SIL", 3),
        ("K AE T EY T SIL", 1),
        ("SIL K AE T EY T", 1),
        ("K AE T SIL EY T", 1),
    ],
)
def test_L_optional_silence_weights(lang, phones, n_sil):
    words = lang.word_ids("cat ate")
    ilabels, olabels, weight = _best(_transduce(lang.L(), lang.phone_ids(phones), words))
    assert _phones(lang, ilabels) == phones.split()
    assert olabels == words
    expected = -n_sil * math.log(SIL_PROB) - (3 - n_sil) * math.log(1 - SIL_PROB)
    assert weight == pytest.approx(expected, abs=1e-5)


def test_L_rejects_wrong_phones_and_alternative_pronunciations(lang):
    bad = _transduce(lang.L(), lang.phone_ids("K AE T T"), lang.word_ids("cat"))
    assert bad.num_states == 0
    # both pronunciations of "a" are accepted; "EY" after "cat" too.
    for pron in ("AH", "EY"):
        assert _transduce(lang.L(), lang.phone_ids(f"K AE T {pron}"), lang.word_ids("cat a")).num_states > 0


def test_L_disambig_symbols_and_back_off_loop(lang):
    Ld = lang.L(disambig=True)
    assert Ld.is_olabel_sorted
    ilabels, olabels, _ = _best(kfst.compose(Ld, kfst.make_linear_acceptor(lang.word_ids("eight"))))
    assert _phones(lang, ilabels) == ["EY", "T", "#2"] and olabels == lang.word_ids("eight")
    # silence is followed by the extra disambiguation symbol #3
    path = _transduce(Ld, lang.phone_ids("SIL #3 EY T #1 SIL #3"), lang.word_ids("ate"))
    assert path.num_states > 0
    arcs = fst_arcs(Ld)
    loops = arcs[(arcs[:, 0] == arcs[:, 1]) & (arcs[:, 2] == lang.word_disambig_phone)]
    assert len(loops) >= 1 and (loops[:, 3] == lang.word_disambig_word).all()
    assert not (fst_arcs(lang.L())[:, 2] >= lang.disambig_phones[0]).any()


def test_L_without_silence(tmp_path):
    lang = prepare_lang(Lexicon(dict(TINY)), tmp_path / "lang", sil_prob=0.0)
    L = lang.L()
    words = lang.word_ids("cat at")
    _, _, weight = _best(_transduce(L, lang.phone_ids("K AE T AE T"), words))
    assert weight == pytest.approx(0.0, abs=1e-6)
    assert _transduce(L, lang.phone_ids("K AE T SIL AE T"), words).num_states == 0


def test_position_dependent_phones(tmp_path):
    lang = prepare_lang(Lexicon(dict(TINY)), tmp_path / "lang", position_dependent=True)
    assert lang.position_dependent
    assert list(lang.phones)[:7] == ["<eps>", "SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S", "SPN"]
    assert len(lang.hmm_phones) == 2 * 5 + 39 * 4
    assert add_position_markers(("K", "AE", "T")) == ("K_B", "AE_I", "T_E")
    lines = (lang.path / "lexicon_disambig.txt").read_text().splitlines()
    assert "a EY_S" in lines and "ate EY_B T_E #1" in lines and "<unk> SPN_S" in lines
    ilabels, _, _ = _best(kfst.compose(lang.L(), kfst.make_linear_acceptor(lang.word_ids("cat"))))
    assert _phones(lang, ilabels) == ["K_B", "AE_I", "T_E"]
    assert lang.lexicon().prons == Lexicon(dict(TINY)).prons
    boundary = dict(line.split() for line in (lang.path / "phones" / "word_boundary.txt").read_text().splitlines())
    assert boundary["SIL"] == "nonword" and boundary["K_B"] == "begin" and boundary["AE_S"] == "singleton"


# -- kaldi-hmm-gmm -------------------------------------------------------------


@pytest.mark.parametrize("disambig", [False, True])
def test_training_graph_compiler_accepts_L(lang, disambig):
    topo = lang.topo()
    ctx = khg.monophone_context_dependency(lang.hmm_phones, topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx, topo)
    L = lang.L(disambig=disambig)  # the compiler keeps a pointer: keep L alive
    compiler = khg.TrainingGraphCompiler(tm, ctx, L, lang.disambig_phones, khg.TrainingGraphCompilerOptions())
    words = lang.word_ids("cat ate qzxv")  # unknown word -> <unk> (SPN)
    assert words[-1] == lang.oov_id
    graph = compiler.compile_graph_from_text(words)
    assert graph.num_states > 0
    tids, olabels, _ = _best(graph)
    assert olabels == words
    phones = [tm.transition_id_to_phone(t) for t in tids]
    collapsed = [p for i, p in enumerate(phones) if i == 0 or p != phones[i - 1]]
    assert _phones(lang, collapsed) == ["K", "AE", "T", "EY", "T", "SPN"]
    assert all(tid <= tm.num_transition_ids for tid in tids)


# -- round trip, validation, errors ----------------------------------------------


def test_round_trip(lang, tmp_path):
    again = LangDir.load(lang.path, check_fsts=True)
    assert again.phones.ids == lang.phones.ids and again.words.ids == lang.words.ids
    assert again.lexicon().prons == Lexicon(dict(TINY)).prons
    table = SymbolTable.from_symbols(["<eps>", "x", "y"])
    table.write(tmp_path / "t.txt")
    assert SymbolTable.read(tmp_path / "t.txt") == table
    assert (lang.path / ".done").is_file()


def _broken_copy(lang: LangDir, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(lang.path, dst)
    return dst


def test_validation_errors_name_the_file(lang, tmp_path):
    d = _broken_copy(lang, tmp_path)
    (d / "phones" / "silence.int").unlink()
    with pytest.raises(DataError, match=r"silence\.int: no such file"):
        LangDir.load(d)

    d = _broken_copy(lang, tmp_path / "2")
    (d / "words.txt").write_text((d / "words.txt").read_text() + "cat 10\n")
    with pytest.raises(DataError, match=r"words\.txt:11: symbol 'cat' appears twice"):
        LangDir.load(d)

    d = _broken_copy(lang, tmp_path / "3")
    (d / "lexicon.txt").write_text((d / "lexicon.txt").read_text() + "dog D AO G\n")
    with pytest.raises(DataError, match=r"lexicon\.txt:8: word 'dog' is not a word"):
        LangDir.load(d)

    d = _broken_copy(lang, tmp_path / "4")
    topo = (d / "topo").read_text().replace("\n3 4 5 ", "\n4 5 ", 1)
    (d / "topo").write_text(topo)
    with pytest.raises(DataError, match=r"topo: must cover exactly"):
        LangDir.load(d)

    d = _broken_copy(lang, tmp_path / "5")
    shutil.copy(d / "L.fst", d / "L_disambig.fst")
    with pytest.raises(DataError, match=r"L_disambig\.fst: lacks the #0:#0 self-loop"):
        LangDir.load(d, check_fsts=True)


def test_bad_lexicon_input(tmp_path):
    with pytest.raises(DataError, match=r"my-lexicon: unknown phone\(s\) \['DX'\] for word 'water'"):
        prepare_lang(Lexicon({"water": (("W", "AO", "DX", "ER"),)}), tmp_path / "l", source="my-lexicon")
    with pytest.raises(DataError, match=r"empty pronunciation"):
        prepare_lang(Lexicon({"water": ((),)}), tmp_path / "l")
    with pytest.raises(DataError, match=r"reserved"):
        prepare_lang(Lexicon({"<s>": (("S",),)}), tmp_path / "l")
    assert not (tmp_path / "l").exists()
    p = tmp_path / "lexicon.txt"
    p.write_text("water W AO T ER\nbutter B AH DX ER\n")
    with pytest.raises(DataError, match=r"lexicon\.txt:2: unknown phone"):
        Lexicon.read(p)


def test_words_without_pronunciation(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("the cat\n\nthe qzxv sat\n")
    words = collect_words(text)
    assert words == {"the": f"{text}:1", "cat": f"{text}:1", "qzxv": f"{text}:3", "sat": f"{text}:3"}
    dictionary = {"the": [("DH", "AH"), ("DH", "IY")], "cat": [("K", "AE", "T")], "sat": [("S", "AE", "T")]}
    lex, missing = lexicon_for_words(words, max_prons=1, missing=MissingPronunciation.UNK, dictionary=dictionary)
    assert missing == ["qzxv"]
    assert lex.prons == {
        "<unk>": (("SPN",),), "cat": (("K", "AE", "T"),), "sat": (("S", "AE", "T"),), "the": (("DH", "AH"),)
    }  # fmt: skip
    with pytest.raises(DataError, match=rf"{text}:3: 1 word\(s\) have no pronunciation: qzxv"):
        lexicon_for_words(words, missing="error", dictionary=dictionary)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: no words"):
        collect_words(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("a b\nc </s>\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: reserved symbol '</s>'"):
        collect_words(bad)


def test_word_ids_oov_handling(lang):
    assert lang.word_ids(["cat", "zzz"]) == [5, 1]
    with pytest.raises(DataError, match=r"utt7: word 'zzz' is not in"):
        lang.word_ids("cat zzz", map_oov=False, where="utt7")
    with pytest.raises(DataError, match=r"special symbol"):
        lang.word_ids("cat <s>")
