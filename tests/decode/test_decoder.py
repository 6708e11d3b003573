"""Decoding matrices built from known state sequences returns exactly their words."""

from __future__ import annotations

import numpy as np
import pytest
from decode_fixtures import LEXICON, alignment_for, one_hot_loglikes

from asr_hf.decode.decoder import (
    DISABLED_LOG_PRIOR,
    DecodeConfig,
    decode_hypotheses,
    decode_matrices,
    pdf_counts_from_alignments,
    priors_from_counts,
    pseudo_loglikes,
    to_transition_scores,
)
from asr_hf.decode.graph import read_tid2pdf
from asr_hf.utils import DataError

# Sequences the LM does not favour (the LM's best is "a bee"), so the acoustics must decide.
SENTENCES = {
    "u1": ["see", "tea", "a"],
    "u2": ["tea"],
    "u3": ["a", "bee"],
    "u4": ["bee", "see", "bee", "tea"],
}


@pytest.fixture(scope="module")
def aligned(toy_lang, toy_model, toy_graph):
    """utt -> (transition-ids, pdf-ids) for the sentences, ~8 frames per phone."""
    tid2pdf = read_tid2pdf(toy_graph)
    out = {}
    for i, (utt, words) in enumerate(SENTENCES.items()):
        n_phones = sum(len(LEXICON[w]) for w in words)
        tids = alignment_for(toy_lang, toy_model, words, num_frames=8 * n_phones + 6, seed=i + 1)
        out[utt] = (np.asarray(tids), tid2pdf[np.asarray(tids)])
    return out


def test_decode_loglikes_returns_words(toy_graph, toy_model, aligned):
    items = [(u, one_hot_loglikes(pdfs, toy_model.trans_model.num_pdfs)) for u, (_, pdfs) in aligned.items()]
    hyps = decode_matrices(toy_graph, items, DecodeConfig())
    assert hyps == SENTENCES


def test_best_path_alignment_is_the_state_sequence(toy_graph, toy_model, aligned):
    tids, pdfs = aligned["u1"]
    out = decode_hypotheses(toy_graph, [("u1", one_hot_loglikes(pdfs, toy_model.trans_model.num_pdfs))], progress=False)
    hyp = out[0.1]["u1"]
    assert hyp.ok and hyp.num_frames == len(pdfs)
    tid2pdf = read_tid2pdf(toy_graph)
    np.testing.assert_array_equal(tid2pdf[np.asarray(hyp.alignment)], pdfs)


def test_decode_posteriors_with_priors_in_parallel(toy_graph, toy_model, aligned):
    """Hybrid path: log-posteriors from alignments, priors from counts, 2 worker processes."""
    num_pdfs = toy_model.trans_model.num_pdfs
    counts = pdf_counts_from_alignments([p for _, p in aligned.values()], num_pdfs)
    log_priors = priors_from_counts(counts)
    items = []
    for u, (_, pdfs) in aligned.items():
        post = np.full((len(pdfs), num_pdfs), 1e-4 / (num_pdfs - 1))
        post[np.arange(len(pdfs)), pdfs] = 1 - 1e-4
        items.append((u, np.log(post).astype(np.float32)))
    cfg = DecodeConfig(jobs=2)
    hyps = decode_matrices(toy_graph, items, cfg, log_priors=log_priors)
    assert hyps == SENTENCES


def test_acwt_sweep_decodes_each_weight(toy_graph, toy_model, aligned):
    _, pdfs = aligned["u2"]
    out = decode_hypotheses(
        toy_graph, [("u2", one_hot_loglikes(pdfs, toy_model.trans_model.num_pdfs))], acwts=[0.05, 0.2], progress=False
    )
    assert set(out) == {0.05, 0.2}
    assert all(out[a]["u2"].words == ["tea"] for a in out)
    # the score is -(graph cost + acwt * acoustic cost); acoustics are 0 on the path
    assert out[0.05]["u2"].score == pytest.approx(out[0.2]["u2"].score, abs=1e-3)


def test_decode_rejects_bad_matrices(toy_graph):
    with pytest.raises(DataError, match="bad.*pdfs"):
        decode_matrices(toy_graph, [("bad", np.zeros((5, 3), np.float32))])
    info_pdfs = read_tid2pdf(toy_graph).max() + 1
    with pytest.raises(DataError, match="nan.*NaN"):
        decode_matrices(toy_graph, [("nan", np.full((5, info_pdfs), np.nan, np.float32))])
    with pytest.raises(DataError, match="twice"):
        decode_matrices(toy_graph, [("x", np.zeros((5, info_pdfs), np.float32))] * 2)
    empty = decode_hypotheses(toy_graph, [("e", np.zeros((0, info_pdfs), np.float32))], progress=False)[0.1]["e"]
    assert not empty.ok and empty.words == []


def test_priors_from_counts_matches_nnet1():
    lp = priors_from_counts([3.0, 1.0, 0.0])
    np.testing.assert_allclose(lp[:2], np.log([0.75, 0.25]), rtol=1e-6)
    assert lp[2] == pytest.approx(DISABLED_LOG_PRIOR)
    # a disabled pdf can never win, and nothing becomes NaN
    pl = pseudo_loglikes(np.log(np.full((1, 3), 1 / 3)), lp)
    assert np.all(np.isfinite(pl)) and pl[0, 2] < -1e18
    np.testing.assert_allclose(pl[0, :2], np.log(1 / 3) - np.log([0.75, 0.25]), rtol=1e-6)
    with pytest.raises(ValueError):
        priors_from_counts([0.0, 0.0])


def test_to_transition_scores():
    tid2pdf = np.array([-1, 0, 0, 1, 2])
    mat = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(to_transition_scores(mat, tid2pdf, 0.5), [[0.5, 0.5, 1.0, 1.5]])
