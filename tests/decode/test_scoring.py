"""WER/SER, alignments and per-speaker counts on hand-worked examples."""

from __future__ import annotations

import pytest

from asr_hf.decode.scoring import ErrorCounts, format_alignment, read_text, score, write_alignments, write_text


def test_hand_worked_wer_and_ser():
    refs = {
        "u1": "the cat sat on the mat",  # 6 words
        "u2": "hello world",  # 2 words
        "u3": "a b c",  # 3 words
        "u4": "exact match",  # 2 words
    }
    hyps = {
        "u1": "the bat sat on mat",  # S(cat->bat), D(the): 1 sub, 1 del
        "u2": "hello big world",  # I(big)
        "u3": "",  # 3 deletions
        "u4": "exact match",  # correct
    }
    spk = {"u1": "A", "u2": "A", "u3": "B", "u4": "B"}
    r = score(refs, hyps, spk)
    t = r.total
    assert (t.ref_words, t.correct, t.substitutions, t.deletions, t.insertions) == (13, 8, 1, 4, 1)
    assert t.errors == 6 and t.wer == pytest.approx(6 / 13)
    assert (t.sentences, t.sentence_errors) == (4, 3) and t.ser == pytest.approx(0.75)
    a, b = r.per_speaker["A"], r.per_speaker["B"]
    assert (a.ref_words, a.errors, a.sentence_errors) == (8, 3, 2)
    assert (b.ref_words, b.errors, b.sentence_errors) == (5, 3, 1)
    assert r.missing == [] and r.extra == []
    assert "%WER 46.15 [ 6 / 13, 1 ins, 4 del, 1 sub ]" in t.summary()
    assert "%SER 75.00 [ 3 / 4 ]" in t.summary()


def test_alignment_ops_and_format():
    r = score({"u": "the cat sat"}, {"u": "the bat sat big"})  # unique minimal alignment: C S C I
    ua = r.utterances[0]
    assert ua.ops == [("C", "the", "the"), ("S", "cat", "bat"), ("C", "sat", "sat"), ("I", None, "big")]
    lines = format_alignment(ua).splitlines()
    assert lines[0].split() == ["u", "ref", "the", "cat", "sat", "***"]
    assert lines[1].split() == ["u", "hyp", "the", "bat", "sat", "big"]
    assert lines[2].split() == ["u", "op", "C", "S", "C", "I"]
    assert lines[3] == "u #csid 2 1 1 0"
    # columns line up
    assert len({ln.index("sat") for ln in lines[:2]}) == 1


def test_missing_extra_empty_and_ignored():
    r = score({"u1": "a b", "u2": "", "u3": "c <unk> d"}, {"u2": "x", "u3": "c d", "zz": "q"}, ignore_words=["<unk>"])
    assert r.missing == ["u1"] and r.extra == ["zz"]
    t = r.total
    # u1: 2 deletions; u2: 1 insertion against an empty reference; u3 correct once <unk> is ignored
    assert (t.ref_words, t.deletions, t.insertions, t.substitutions, t.sentence_errors) == (4, 2, 1, 0, 2)
    assert ErrorCounts().wer == 0.0 and ErrorCounts(insertions=1).wer == float("inf")
    assert ErrorCounts(insertions=1).to_json()["wer_percent"] is None


def test_text_roundtrip_and_alignment_file(tmp_path):
    write_text({"b": ["x", "y"], "a": []}, tmp_path / "text")
    assert (tmp_path / "text").read_text() == "a\nb x y\n"
    assert read_text(tmp_path / "text") == {"a": [], "b": ["x", "y"]}
    write_alignments(score({"a": "x"}, {"a": "y"}), tmp_path / "per_utt")
    assert (tmp_path / "per_utt").read_text().splitlines()[-1] == "a #csid 0 1 0 0"
