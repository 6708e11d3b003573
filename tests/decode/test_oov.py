"""Errors at out-of-vocabulary reference words (asr_hf.decode.oov), counted by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from asr_hf.decode.oov import count_utterance, oov_breakdown, oov_markdown, read_vocabulary
from asr_hf.decode.scoring import score, write_text
from asr_hf.utils.errors import DataError

VOCAB = {"the", "cat", "sat", "on", "a", "mat", "hat"}


def _align(ref: str, hyp: str):
    return score({"u": ref.split()}, {"u": hyp.split()}).utterances[0]


def test_substitution_of_an_oov_and_an_insertion_beside_it():
    # "zebra" is OOV: substituted by "a", plus "hat" inserted right after it
    b = count_utterance(_align("the zebra sat", "the a hat sat"), VOCAB)
    assert (b.ref_words, b.oov_tokens, b.errors) == (3, 1, 2)
    assert (b.oov_errors, b.oov_insertions, b.oov_caused) == (1, 1, 2)
    assert b.wer_in_vocabulary == 0.0


def test_in_vocabulary_errors_are_not_counted():
    # the substitution cat -> hat and the insertion at the end touch no OOV word
    b = count_utterance(_align("the cat sat", "the hat sat on"), VOCAB)
    assert (b.errors, b.oov_caused) == (2, 0)
    assert b.wer == pytest.approx(200 / 3) and b.wer_in_vocabulary == pytest.approx(200 / 3)


def test_deleted_oov_and_insertion_far_from_it():
    # "zebra" deleted (OOV-caused); "a" inserted between "sat" and "on", two words from it: not OOV-caused
    b = count_utterance(_align("zebra the cat sat on mat", "the cat sat a on mat"), VOCAB)
    assert (b.oov_tokens, b.errors, b.oov_errors, b.oov_insertions) == (1, 2, 1, 0)
    assert b.oov_points == pytest.approx(100 / 6)


def test_decode_dir_breakdown_and_markdown(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("<eps> 0\n" + "".join(f"{w} {i}\n" for i, w in enumerate(sorted(VOCAB), 1)) + "#0 99\n")
    vocab = read_vocabulary(words)
    assert vocab == VOCAB
    refs = {"u1": "the zebra sat".split(), "u2": "the cat sat".split()}
    rows = []
    for system, hyps, opt in (("tri3", {"u1": "the a sat".split(), "u2": "the hat sat".split()}, None),
                              ("dnn", {"u1": "the a sat".split(), "u2": "the cat sat".split()}, "sgd")):
        d = tmp_path / system / "decode_test"
        d.mkdir(parents=True)
        write_text(refs, d / "ref.txt")
        write_text(hyps, d / "hyp.txt")
        rows.append(SimpleNamespace(system=system, set="test", decode_dir=str(d), optimizer=opt))
    b = oov_breakdown(rows[0].decode_dir, vocab)
    assert (b.ref_words, b.errors, b.oov_caused) == (6, 2, 1)
    md = oov_markdown(rows, vocab)
    assert "1 of 6 reference words (16.67%)" in md
    assert "| tri3 | 33.33 | 16.67 | 16.67 |" in md and "| dnn | 16.67 | 16.67 | 0.00 |" in md
    # the DNN halves the WER (-50%) and removes every error it can: -100% without the OOV-caused ones
    assert "-50.0% relative in %WER, -100.0% without the OOV-caused errors" in md


def test_bad_vocabulary_names_the_line(tmp_path):
    bad = tmp_path / "words.txt"
    bad.write_text("<eps> 0\nthe 1\ncat\n")
    with pytest.raises(DataError, match=r"words.txt:3.*expected 'word id'"):
        read_vocabulary(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("<eps> 0\n")
    with pytest.raises(DataError, match="no words"):
        read_vocabulary(empty)
    with pytest.raises(DataError, match="no ref.txt"):
        oov_breakdown(tmp_path, {"a"})
