"""Vectorised GMM numerics against kaldi-hmm-gmm and float64 references."""

import numpy as np
import pytest

from asr_hf.gmm.gmm import GmmSet, GmmStats, MleOptions, accumulate, mle_update, split_by_count
from asr_hf.utils.kaldi import khg

D = 4


def _random_gmm(rng, sizes):
    ws = [rng.dirichlet(np.ones(k)) for k in sizes]
    ms = [rng.normal(scale=2.0, size=(k, D)) for k in sizes]
    vs = [rng.uniform(0.5, 2.0, size=(k, D)) for k in sizes]
    return GmmSet.from_pdfs(ws, ms, vs)


def _dense_loglikes(gmm, x):
    """log sum_g w_g N(x; mu_g, diag v_g) per pdf, float64, one frame at a time."""
    out = np.zeros((len(x), gmm.num_pdfs))
    for p in range(gmm.num_pdfs):
        s = gmm.pdf_slice(p)
        for t, xt in enumerate(x):
            comp = np.log(gmm.weights[s]) - 0.5 * np.sum(
                np.log(2 * np.pi * gmm.vars[s]) + (xt - gmm.means[s]) ** 2 / gmm.vars[s], axis=1
            )
            out[t, p] = np.logaddexp.reduce(comp)
    return out


def test_pdf_loglikes_match_dense_and_kaldi():
    rng = np.random.default_rng(0)
    gmm = _random_gmm(rng, [1, 3, 2, 5])
    x = rng.normal(size=(7, D)).astype(np.float32)
    got = gmm.pdf_loglikes(x, chunk=3)
    np.testing.assert_allclose(got, _dense_loglikes(gmm, x.astype(np.float64)), rtol=1e-4, atol=1e-3)
    am = gmm.to_am()
    for t in range(len(x)):
        for p in range(gmm.num_pdfs):
            assert am.log_likelihood(p, x[t]) == pytest.approx(got[t, p], abs=1e-3)


def test_am_round_trip():
    rng = np.random.default_rng(1)
    gmm = _random_gmm(rng, [2, 1, 3])
    back = GmmSet.from_am(gmm.to_am())
    np.testing.assert_array_equal(back.offsets, gmm.offsets)
    for a, b in ((back.weights, gmm.weights), (back.means, gmm.means), (back.vars, gmm.vars)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_accumulate_and_update_match_kaldi():
    rng = np.random.default_rng(2)
    gmm = _random_gmm(rng, [2, 3, 1])
    t = 600
    x = rng.normal(scale=2.0, size=(t, D)).astype(np.float32)
    pdfs = rng.integers(0, gmm.num_pdfs, size=t)
    # ours
    stats = GmmStats.zeros(gmm)
    accumulate(gmm, stats, x[:250], pdfs[:250])
    accumulate(gmm, stats, x[250:], pdfs[250:])
    opts = MleOptions(min_gaussian_occupancy=3.0)
    new, rep = mle_update(gmm, stats, opts)
    # Kaldi's accumulator and update, one frame at a time
    am = gmm.to_am()
    acc = khg.AccumAmDiagGmm()
    acc.init(am, khg.GmmUpdateFlags.kGmmAll)
    tot = 0.0
    for xt, p in zip(x, pdfs):
        tot += acc.accumulate_for_gmm(am, xt, int(p), 1.0)
    assert stats.loglike == pytest.approx(tot, rel=1e-5)
    assert stats.frames == t
    kopts = khg.MleDiagGmmOptions(min_gaussian_occupancy=3.0)
    khg.mle_am_diag_gmm_update(kopts, acc, int(khg.GmmUpdateFlags.kGmmAll), am)
    ref = GmmSet.from_am(am)
    np.testing.assert_array_equal(new.offsets, ref.offsets)
    np.testing.assert_allclose(new.weights, ref.weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new.means, ref.means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new.vars, ref.vars, rtol=1e-4, atol=1e-4)
    assert rep.objf_change > 0


def test_accumulate_matches_dense_posteriors():
    rng = np.random.default_rng(3)
    gmm = _random_gmm(rng, [3, 2])
    x = rng.normal(size=(50, D))
    pdfs = rng.integers(0, 2, size=50)
    stats = GmmStats.zeros(gmm)
    accumulate(gmm, stats, x, pdfs)
    occ = np.zeros(gmm.num_gauss)
    sx = np.zeros((gmm.num_gauss, D))
    for xt, p in zip(x, pdfs):
        s = gmm.pdf_slice(int(p))
        comp = np.log(gmm.weights[s]) - 0.5 * np.sum(np.log(2 * np.pi * gmm.vars[s]) + (xt - gmm.means[s]) ** 2 / gmm.vars[s], 1)
        post = np.exp(comp - np.logaddexp.reduce(comp))
        occ[s] += post
        sx[s] += post[:, None] * xt
    np.testing.assert_allclose(stats.occ, occ, rtol=1e-9)
    np.testing.assert_allclose(stats.x, sx, rtol=1e-9, atol=1e-12)


def test_low_count_gaussians_removed_and_unseen_pdfs_kept():
    rng = np.random.default_rng(4)
    gmm = _random_gmm(rng, [3, 2])
    x = rng.normal(size=(40, D))
    pdfs = np.zeros(40, dtype=int)  # pdf 1 gets no data
    stats = GmmStats.zeros(gmm)
    accumulate(gmm, stats, x, pdfs)
    new, rep = mle_update(gmm, stats, MleOptions(min_gaussian_occupancy=15.0))
    # pdf 1 keeps one Gaussian with its old parameters (Kaldi keeps the last one)
    assert new.num_pdfs == 2 and new.offsets[2] - new.offsets[1] == 1
    np.testing.assert_allclose(new.means[new.pdf_slice(1)], gmm.means[gmm.pdf_slice(1)][-1:])
    assert np.allclose(np.add.reduceat(new.weights, new.offsets[:-1]), 1.0)
    assert rep.removed_gaussians >= 1


def test_split_by_count_reaches_target():
    rng = np.random.default_rng(5)
    gmm = _random_gmm(rng, [1, 1, 1])
    out = split_by_count(gmm, np.array([1000.0, 300.0, 10.0]), 8, power=0.2, min_count=20.0)
    # allocation ~ occ^0.2; the 10-frame pdf stays at one Gaussian (min_count=20)
    np.testing.assert_array_equal(np.diff(out.offsets), [4, 3, 1])
