"""LDA, MLLT and fMLLR against dense float64 references on small synthetic problems."""

import numpy as np
import pytest

from asr_hf.gmm.feats import FeaturePipeline, apply_transform, splice_frames
from asr_hf.gmm.fmllr import FmllrStats, compose_affine, estimate_fmllr, fmllr_auxf, identity_transform
from asr_hf.gmm.gmm import GmmSet, GmmStats, accumulate, weighted_outer
from asr_hf.gmm.lda import LdaStats, estimate_lda
from asr_hf.gmm.mllt import estimate_mllt, mllt_objective, mllt_stats


def _lda_problem(rng, num_classes=12, dim=8, n=300):
    means = rng.normal(scale=3.0, size=(num_classes, dim))
    L = 0.3 * rng.normal(size=(dim, dim)) + np.eye(dim)  # correlated, well-conditioned within-class noise
    cls = rng.integers(0, num_classes, size=n * num_classes)
    x = means[cls] + rng.normal(size=(len(cls), dim)) @ L.T
    return x, cls


def _generalised_eigh(sb, sw):
    """Dense reference for ``Sb v = l Sw v``, ``v^T Sw v = 1``: scipy's ``eigh(Sb, Sw)``
    (scipy is in the dev extra for these references)."""
    import scipy.linalg

    return scipy.linalg.eigh(sb, sw)


def test_lda_matches_generalised_eigenproblem():
    rng = np.random.default_rng(0)
    x, cls = _lda_problem(rng)
    w = rng.uniform(0.5, 1.5, size=len(cls))
    stats = LdaStats.zeros(cls.max() + 1, x.shape[1])
    for a in range(0, len(x), 700):  # accumulated in pieces, as shards do
        stats.accumulate(x[a : a + 700], cls[a : a + 700], w[a : a + 700])
    res = estimate_lda(stats, dim=5)

    # dense reference scatter matrices (weighted)
    n = w.sum()
    mean = (w @ x) / n
    sw = np.zeros((x.shape[1],) * 2)
    sb = np.zeros_like(sw)
    for c in np.unique(cls):
        k = cls == c
        nc = w[k].sum()
        mc = (w[k] @ x[k]) / nc
        d = x[k] - mc
        sw += (d * w[k, None]).T @ d / n
        sb += nc / n * np.outer(mc - mean, mc - mean)
    vals, vecs = _generalised_eigh(sb, sw)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    np.testing.assert_allclose(vecs.T @ sw @ vecs, np.eye(len(vals)), atol=1e-8)  # the reference solves it
    np.testing.assert_allclose(vecs.T @ sb @ vecs, np.diag(vals), atol=1e-6)
    np.testing.assert_allclose(res.eigenvalues, vals, rtol=1e-8, atol=1e-10)
    for r in range(5):  # rows = generalised eigenvectors normalised so v^T Sw v = 1, up to sign
        v = vecs[:, r]
        sign = np.sign(res.matrix[r] @ v)
        np.testing.assert_allclose(res.matrix[r], sign * v, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.full @ sw @ res.full.T, np.eye(x.shape[1]), atol=1e-8)  # unit within-class
    np.testing.assert_allclose(res.full @ sb @ res.full.T, np.diag(vals), atol=1e-8)
    assert res.matrix.shape == (5, x.shape[1])


def test_splice_and_transform_as_kaldi():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    s = splice_frames(x, 1)
    np.testing.assert_array_equal(s[0], np.concatenate([x[0], x[0], x[1]]))  # edge frame repeated
    np.testing.assert_array_equal(s[3], np.concatenate([x[2], x[3], x[3]]))
    m = np.arange(18, dtype=np.float64).reshape(2, 9) / 10
    np.testing.assert_allclose(apply_transform(s, m), s @ m.T, rtol=1e-6)
    aff = np.concatenate([m, [[1.0], [-2.0]]], axis=1)
    np.testing.assert_allclose(apply_transform(s, aff), s @ m.T + [1.0, -2.0], rtol=1e-6)


def test_pipeline_saves_and_loads_transform(tmp_path):
    m = np.random.default_rng(1).normal(size=(4, 9))
    p = FeaturePipeline(cmvn=False, delta_order=0, splice=1).with_transform(m)
    p.save(tmp_path / "feature_pipeline.json")
    assert (tmp_path / "final.mat").is_file()
    q = FeaturePipeline.load(tmp_path / "feature_pipeline.json")
    assert q.splice == 1 and q.delta_order == 0 and q.output_dim(3) == 4
    np.testing.assert_allclose(q.transform, m, rtol=1e-6)  # float32 on disk, as Kaldi's
    x = np.random.default_rng(2).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(q(x), splice_frames(x, 1) @ q.transform.T, rtol=1e-5, atol=1e-5)


def _rotated_gmm_problem(rng, dim=5, num_pdfs=6, per_pdf=2, n=4000):
    """Data whose Gaussians are diagonal in a rotated space; a diagonal GMM fitted in the raw space."""
    R, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    g = num_pdfs * per_pdf
    zmeans = rng.normal(scale=2.0, size=(g, dim))
    zvars = rng.uniform(0.05, 3.0, size=(g, dim))
    comp = rng.integers(0, g, size=n)
    z = zmeans[comp] + rng.normal(size=(n, dim)) * np.sqrt(zvars[comp])
    x = z @ R.T
    pdfs = comp // per_pdf
    # ML diagonal model in x-space from the true assignments (what EM would roughly give)
    means = np.stack([x[comp == k].mean(0) for k in range(g)])
    vars_ = np.stack([x[comp == k].var(0) for k in range(g)])
    weights = np.full(g, 1.0 / per_pdf)
    gmm = GmmSet(np.arange(0, g + 1, per_pdf, dtype=np.int64), weights, means, vars_)
    return gmm, x, pdfs, R


def _dense_posteriors(gmm, x, pdfs):
    post = np.zeros((len(x), gmm.num_gauss))
    for t in range(len(x)):
        s = gmm.pdf_slice(int(pdfs[t]))
        ll = np.log(gmm.weights[s]) - 0.5 * (
            np.log(2 * np.pi * gmm.vars[s]).sum(1) + ((x[t] - gmm.means[s]) ** 2 / gmm.vars[s]).sum(1)
        )
        e = np.exp(ll - ll.max())
        post[t, s] = e / e.sum()
    return post


def test_mllt_stats_match_dense_reference_and_objective_rises():
    rng = np.random.default_rng(3)
    gmm, x, pdfs, R = _rotated_gmm_problem(rng)
    w = (rng.uniform(size=len(x)) > 0.2).astype(float)  # some frames weighted out (silence)
    wstats = GmmStats.zeros(gmm)
    _, fb = accumulate(gmm, wstats, x, pdfs, weights=w, frame_moments=True)
    stats = mllt_stats(gmm, wstats, weighted_outer(fb, x))

    post = _dense_posteriors(gmm, x, pdfs) * w[:, None]
    G = np.zeros_like(stats.G)
    for m in range(gmm.num_gauss):
        d = x - gmm.means[m]
        scatter = (d * post[:, m, None]).T @ d
        G += (1.0 / gmm.vars[m])[:, None, None] * scatter[None]
    np.testing.assert_allclose(stats.G, G, rtol=1e-8, atol=1e-8)
    assert stats.beta == pytest.approx(post.sum())

    res = estimate_mllt(stats, num_iters=200)
    tr = np.array(res.trace)
    assert np.all(np.diff(tr) >= -1e-9 * np.abs(tr[:-1]))  # never decreases
    assert res.improvement_per_frame > 0.05  # rotated axes: a clear gain
    assert mllt_objective(res.matrix, stats) == pytest.approx(tr[-1])


def test_mllt_within_em_recovers_rotated_axes():
    """Kaldi's schedule in miniature: ML update, MLLT, compose, transform means; repeated."""
    from asr_hf.gmm.gmm import MleOptions, mle_update

    rng = np.random.default_rng(3)
    gmm, x, pdfs, R = _rotated_gmm_problem(rng)
    T = np.eye(x.shape[1])
    loglikes = []
    for _ in range(5):
        z = x @ T.T
        ws = GmmStats.zeros(gmm)
        accumulate(gmm, ws, z, pdfs)
        gmm, _ = mle_update(gmm, ws, MleOptions(min_gaussian_occupancy=1.0))
        ws = GmmStats.zeros(gmm)
        _, fb = accumulate(gmm, ws, z, pdfs, frame_moments=True)
        loglikes.append(ws.loglike / ws.frames + np.linalg.slogdet(T)[1])  # in the original space (Jacobian)
        res = estimate_mllt(mllt_stats(gmm, ws, weighted_outer(fb, z)), num_iters=50)
        T = res.matrix @ T
        gmm.means = gmm.means @ res.matrix.T
    assert np.all(np.diff(loglikes) > -1e-6) and loglikes[-1] > loglikes[0] + 0.2
    # the composed transform undoes the rotation up to per-row scale and order: T R ~ a scaled permutation
    tr_ = np.abs(T @ R)
    tr_ /= tr_.max(1, keepdims=True)
    assert np.all(np.sort(tr_, axis=1)[:, -2] < 0.1)
    assert sorted(np.argmax(tr_, axis=1)) == list(range(x.shape[1]))


def test_mllt_objective_flat_when_axes_already_diagonal():
    rng = np.random.default_rng(4)
    gmm, x, pdfs, R = _rotated_gmm_problem(rng)
    z = x @ R  # back in the space where the Gaussians are diagonal
    comp_means = np.stack([z[pdfs == p].mean(0) for p in range(gmm.num_pdfs)])
    comp_vars = np.stack([z[pdfs == p].var(0) for p in range(gmm.num_pdfs)])
    single = GmmSet(np.arange(gmm.num_pdfs + 1, dtype=np.int64), np.ones(gmm.num_pdfs), comp_means, comp_vars)
    wstats = GmmStats.zeros(single)
    _, fb = accumulate(single, wstats, z, pdfs, frame_moments=True)
    res = estimate_mllt(mllt_stats(single, wstats, weighted_outer(fb, z)), num_iters=20)
    assert np.all(np.diff(res.trace) >= -1e-9 * abs(res.trace[0]))
    assert res.improvement_per_frame >= 0.0


def test_fmllr_recovers_known_affine_transform():
    rng = np.random.default_rng(5)
    dim, num_pdfs, n = 4, 10, 20000
    means = rng.normal(scale=2.0, size=(num_pdfs, dim))
    vars_ = rng.uniform(0.2, 1.5, size=(num_pdfs, dim))
    gmm = GmmSet(np.arange(num_pdfs + 1, dtype=np.int64), np.ones(num_pdfs), means, vars_)
    pdfs = rng.integers(0, num_pdfs, size=n)
    y = means[pdfs] + rng.normal(size=(n, dim)) * np.sqrt(vars_[pdfs])  # canonical space
    A0 = np.eye(dim) + 0.3 * rng.normal(size=(dim, dim))
    b0 = rng.normal(size=dim)
    x = (y - b0) @ np.linalg.inv(A0).T  # the speaker's features: A0 x + b0 = y

    stats = FmllrStats.zeros(dim)
    for a in range(0, n, 5000):
        ws = GmmStats.zeros(gmm)
        fa, fb = accumulate(gmm, ws, x[a : a + 5000], pdfs[a : a + 5000], frame_moments=True)
        stats.accumulate(x[a : a + 5000], fa, fb, ws.occ.sum())
    # dense reference of the statistics
    xi = np.concatenate([x, np.ones((n, 1))], axis=1)
    K = (means[pdfs] / vars_[pdfs]).T @ xi
    G = np.einsum("ti,tj,tk->ijk", 1.0 / vars_[pdfs], xi, xi)
    np.testing.assert_allclose(stats.K, K, rtol=1e-9)
    np.testing.assert_allclose(stats.G, G, rtol=1e-9)
    assert stats.beta == n

    res = estimate_fmllr(stats, num_iters=20)
    tr = np.array(res.trace)
    assert res.updated and np.all(np.diff(tr) >= -1e-9 * np.abs(tr[:-1]))
    W0 = np.concatenate([A0, b0[:, None]], axis=1)
    np.testing.assert_allclose(res.transform, W0, atol=0.05)
    assert fmllr_auxf(res.transform, stats) >= fmllr_auxf(W0, stats) - 1e-6 * abs(tr[-1])  # the ML optimum
    # composing with the identity is a no-op; composition order is outer(inner(x))
    np.testing.assert_allclose(compose_affine(identity_transform(dim), W0), W0)
    np.testing.assert_allclose(apply_transform(apply_transform(x[:5], W0), W0), apply_transform(x[:5], compose_affine(W0, W0)), rtol=1e-4, atol=1e-4)


def test_fmllr_below_min_count_keeps_transform():
    stats = FmllrStats.zeros(3)
    stats.beta = 5.0
    res = estimate_fmllr(stats, min_count=20.0)
    assert not res.updated
    np.testing.assert_array_equal(res.transform, identity_transform(3))


def test_pipeline_equality_includes_the_matrix():
    m = np.eye(3, 9)
    a = FeaturePipeline(delta_order=0, splice=1).with_transform(m)
    assert a == FeaturePipeline(delta_order=0, splice=1).with_transform(m.copy()) and hash(a) == hash(a.with_transform(m))
    assert a != a.with_transform(2 * m) and a != a.with_transform(None) and FeaturePipeline() == FeaturePipeline()


def test_fmllr_speaker_accumulation_and_two_feature_stats():
    from asr_hf.gmm.fmllr import accumulate_speakers

    rng = np.random.default_rng(6)
    gmm, x, pdfs, _ = _rotated_gmm_problem(rng, n=600)
    w = np.where(rng.uniform(size=len(x)) < 0.3, 0.0, 1.0)
    cuts = np.split(np.arange(len(x)), [100, 250, 400, 480])
    spk = ["a", "b", "a", "c", "b"]
    acc: dict = {}
    accumulate_speakers(gmm, acc, [x[c] for c in cuts], [pdfs[c] for c in cuts], [w[c] for c in cuts], spk)
    post = _dense_posteriors(gmm, x, pdfs) * w[:, None]
    for s in "abc":
        rows = np.concatenate([c for c, k in zip(cuts, spk) if k == s])
        xi = np.concatenate([x[rows], np.ones((len(rows), 1))], axis=1)
        a = post[rows] @ (gmm.means / gmm.vars)
        b = post[rows] @ (1.0 / gmm.vars)
        np.testing.assert_allclose(acc[s].K, a.T @ xi, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(acc[s].G, np.einsum("ti,tj,tk->ijk", b, xi, xi), rtol=1e-9, atol=1e-9)
        assert acc[s].beta == pytest.approx(w[rows].sum())

    # gmm-acc-stats-twofeats: posteriors from x, statistics of y
    y = x * 2.0 + 1.0
    stats = GmmStats.zeros(gmm)
    accumulate(gmm, stats, x, pdfs, stats_feats=y)
    full = _dense_posteriors(gmm, x, pdfs)
    np.testing.assert_allclose(stats.occ, full.sum(0), rtol=1e-9)
    np.testing.assert_allclose(stats.x, full.T @ y, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.x2, full.T @ (y * y), rtol=1e-9, atol=1e-9)
