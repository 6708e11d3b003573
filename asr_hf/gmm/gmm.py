"""Diagonal-covariance GMM acoustic models as flat numpy arrays.

All Gaussians of all pdfs are stacked: pdf ``p`` owns rows
``offsets[p]:offsets[p+1]`` of ``weights`` (G,), ``means`` (G, D) and
``vars`` (G, D).  Log-likelihoods are computed in bulk,

    log N(x; mu_g, diag(v_g)) + log w_g = c_g + x . (mu_g / v_g) - 0.5 x^2 . (1 / v_g),
    c_g = log w_g - 0.5 (D log 2pi + sum_d log v_gd + sum_d mu_gd^2 / v_gd),

so a (T, D) feature matrix against G Gaussians is two (T, D) x (D, G) matrix
products.  Statistics accumulation groups frames by their aligned pdf and uses
one matrix product per pdf; the maximum-likelihood update follows Kaldi's
``MleDiagGmmUpdate`` (weights, means, variances with a variance floor, removal
of low-count Gaussians).  Mixture splitting/merging by occupancy uses
kaldi-hmm-gmm's ``AmDiagGmm.split_by_count`` through conversion to and from
``khg.AmDiagGmm``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from asr_hf.gmm.kaldi_format import DiagGmmParams
from asr_hf.utils.kaldi import khg

log = logging.getLogger(__name__)

LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class GmmSet:
    """All pdfs' diagonal GMMs (see module docstring for the layout)."""

    offsets: np.ndarray  # (P+1,) int64
    weights: np.ndarray  # (G,) float64
    means: np.ndarray  # (G, D) float64
    vars: np.ndarray  # (G, D) float64

    # ------------------------------------------------------------------ basics
    @property
    def num_pdfs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_gauss(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def gauss_pdf(self) -> np.ndarray:
        """(G,) pdf index of each Gaussian."""
        return np.repeat(np.arange(self.num_pdfs), np.diff(self.offsets))

    def copy(self) -> "GmmSet":
        return GmmSet(self.offsets.copy(), self.weights.copy(), self.means.copy(), self.vars.copy())

    def gconsts(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        return logw - 0.5 * (self.dim * LOG_2PI + np.log(self.vars).sum(1) + (self.means**2 / self.vars).sum(1))

    @classmethod
    def single(cls, mean: np.ndarray, var: np.ndarray, num_pdfs: int) -> "GmmSet":
        """``num_pdfs`` one-Gaussian pdfs, all with the same mean and variance."""
        d = len(mean)
        return cls(
            offsets=np.arange(num_pdfs + 1, dtype=np.int64),
            weights=np.ones(num_pdfs),
            means=np.tile(np.asarray(mean, np.float64), (num_pdfs, 1)).reshape(num_pdfs, d),
            vars=np.tile(np.asarray(var, np.float64), (num_pdfs, 1)).reshape(num_pdfs, d),
        )

    @classmethod
    def from_pdfs(cls, weights: Sequence[np.ndarray], means: Sequence[np.ndarray], vars: Sequence[np.ndarray]) -> "GmmSet":
        sizes = [len(w) for w in weights]
        return cls(
            offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            weights=np.concatenate(weights).astype(np.float64),
            means=np.concatenate(means).astype(np.float64),
            vars=np.concatenate(vars).astype(np.float64),
        )

    def pdf_slice(self, p: int) -> slice:
        return slice(int(self.offsets[p]), int(self.offsets[p + 1]))

    # ------------------------------------------------------------------ Kaldi conversion
    def to_kaldi_params(self) -> list[DiagGmmParams]:
        inv = 1.0 / self.vars
        mi = self.means * inv
        gc = self.gconsts()
        out = []
        for p in range(self.num_pdfs):
            s = self.pdf_slice(p)
            out.append(DiagGmmParams(gc[s].astype(np.float32), self.weights[s].astype(np.float32),
                                     mi[s].astype(np.float32), inv[s].astype(np.float32)))
        return out

    @classmethod
    def from_kaldi_params(cls, pdfs: Sequence[DiagGmmParams]) -> "GmmSet":
        iv = [p.inv_vars.astype(np.float64) for p in pdfs]
        return cls.from_pdfs(
            [p.weights for p in pdfs],
            [p.means_invvars.astype(np.float64) / v for p, v in zip(pdfs, iv)],
            [1.0 / v for v in iv],
        )

    def to_am(self, weight_scale: Optional[np.ndarray] = None) -> "khg.AmDiagGmm":
        """A ``khg.AmDiagGmm``; ``weight_scale`` (P,) multiplies pdf weights (silence boost)."""
        am = khg.AmDiagGmm()
        inv = (1.0 / self.vars).astype(np.float32)
        means = self.means.astype(np.float32)
        w = self.weights.astype(np.float32)
        for p in range(self.num_pdfs):
            s = self.pdf_slice(p)
            g = khg.DiagGmm(s.stop - s.start, self.dim)
            ws = w[s] * (weight_scale[p] if weight_scale is not None else 1.0)
            g.set_weights(np.ascontiguousarray(ws, dtype=np.float32))
            g.set_invvars_and_means(np.ascontiguousarray(inv[s]), np.ascontiguousarray(means[s]))
            g.compute_gconsts()
            am.add_pdf(g)
        return am

    @classmethod
    def from_am(cls, am: "khg.AmDiagGmm") -> "GmmSet":
        ws, ms, vs = [], [], []
        for p in range(am.num_pdfs):
            g = am.get_pdf(p)
            iv = np.asarray(g.inv_vars, dtype=np.float64)
            ws.append(np.asarray(g.weights, dtype=np.float64))
            ms.append(np.asarray(g.means_invvars, dtype=np.float64) / iv)
            vs.append(1.0 / iv)
        return cls.from_pdfs(ws, ms, vs)

    # ------------------------------------------------------------------ likelihoods
    def _natural(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inv = 1.0 / self.vars
        return self.gconsts(), self.means * inv, inv

    def gauss_loglikes(self, feats: np.ndarray) -> np.ndarray:
        """(T, G) weighted component log-likelihoods (float32 math)."""
        gc, mi, inv = self._natural()
        x = np.asarray(feats, dtype=np.float32)
        ll = x @ mi.T.astype(np.float32) - 0.5 * ((x * x) @ inv.T.astype(np.float32))
        ll += gc.astype(np.float32)
        return ll

    def pdf_loglikes(self, feats: np.ndarray, chunk: int = 2000) -> np.ndarray:
        """Log-likelihood of every frame under every pdf: (T, P) float32.

        ``log sum_g w_g N(x_t; mu_g, v_g)`` over each pdf's Gaussians, computed
        with bulk matrix products and a segmented log-sum-exp.
        """
        gc, mi, inv = self._natural()
        mi32, inv32, gc32 = mi.T.astype(np.float32), inv.T.astype(np.float32), gc.astype(np.float32)
        x = np.asarray(feats, dtype=np.float32)
        starts = self.offsets[:-1]
        gpdf = self.gauss_pdf
        out = np.empty((x.shape[0], self.num_pdfs), dtype=np.float32)
        for a in range(0, x.shape[0], chunk):
            xb = x[a : a + chunk]
            ll = xb @ mi32 - 0.5 * ((xb * xb) @ inv32) + gc32
            m = np.maximum.reduceat(ll, starts, axis=1)
            m = np.where(np.isfinite(m), m, 0.0)
            e = np.exp(ll - m[:, gpdf])
            out[a : a + chunk] = np.log(np.add.reduceat(e, starts, axis=1)) + m
        return out

    # ------------------------------------------------------------------ update
    def boosted_weights(self, pdfs: Sequence[int], boost: float) -> np.ndarray:
        """(P,) weight scale with ``boost`` on ``pdfs`` (Kaldi ``gmm-boost-silence``)."""
        scale = np.ones(self.num_pdfs)
        if boost != 1.0:
            scale[np.asarray(list(pdfs), dtype=np.int64)] = boost
        return scale


@dataclass
class GmmStats:
    """Sufficient statistics per Gaussian (Kaldi ``AccumAmDiagGmm``), float64.

    Attributes:
        occ: (G,) occupation counts; x: (G, D) first-order; x2: (G, D) second-order.
        loglike: total log-likelihood of the accumulated frames; frames: their count.
    """

    occ: np.ndarray
    x: np.ndarray
    x2: np.ndarray
    loglike: float = 0.0
    frames: int = 0

    @classmethod
    def zeros(cls, gmm: GmmSet) -> "GmmStats":
        g, d = gmm.num_gauss, gmm.dim
        return cls(np.zeros(g), np.zeros((g, d)), np.zeros((g, d)))

    def add(self, other: "GmmStats") -> None:
        self.occ += other.occ
        self.x += other.x
        self.x2 += other.x2
        self.loglike += other.loglike
        self.frames += other.frames

    def pdf_occs(self, gmm: GmmSet) -> np.ndarray:
        return np.add.reduceat(self.occ, gmm.offsets[:-1]) if gmm.num_gauss else np.zeros(0)


def accumulate(
    gmm: GmmSet,
    stats: GmmStats,
    feats: np.ndarray,
    pdfs: np.ndarray,
    weights: Optional[np.ndarray] = None,
    frame_moments: bool = False,
    stats_feats: Optional[np.ndarray] = None,
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Add Viterbi-aligned statistics: frame ``t`` belongs to pdf ``pdfs[t]``.

    Within each pdf the Gaussian posteriors are computed exactly (as Kaldi's
    ``gmm-acc-stats-ali``).  Frames are grouped by pdf so the work is one matrix
    product per pdf present, independent of the number of frames.

    Args:
        feats: (T, D) features; pdfs: (T,) int pdf ids.
        weights: (T,) frame weights multiplying the posteriors (e.g. 0 on silence, as
            ``weight-silence-post``); ``loglike`` and ``frames`` stay unweighted.
        frame_moments: also return the per-frame moments the transform estimators
            need (:mod:`asr_hf.gmm.mllt`, :mod:`asr_hf.gmm.fmllr`).
        stats_feats: (T, D) other features whose statistics are accumulated with the
            posteriors computed on ``feats`` (Kaldi ``gmm-acc-stats-twofeats``: the
            speaker-independent alignment model of a SAT system).

    Returns:
        None, or with ``frame_moments`` the (T, D) arrays ``a_t = sum_m g_tm mu_m / v_m``
        and ``b_t = sum_m g_tm / v_m`` (``g_tm`` the weighted posteriors), in frame order.
    """
    x = np.asarray(feats, dtype=np.float64)
    pdfs = np.asarray(pdfs, dtype=np.int64)
    if x.shape[0] != pdfs.shape[0]:
        raise ValueError(f"{x.shape[0]} frames but {pdfs.shape[0]} alignment entries")
    if x.shape[1] != gmm.dim:
        raise ValueError(f"{x.shape[1]}-dim features for a {gmm.dim}-dim model")
    fa = np.zeros_like(x) if frame_moments else None
    fb = np.zeros_like(x) if frame_moments else None
    if x.shape[0] == 0:
        return (fa, fb) if frame_moments else None
    w_all = None if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(pdfs, kind="stable")
    ps = pdfs[order]
    bounds = np.flatnonzero(np.diff(ps)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ps)]])
    xs = x[order]
    ws = None if w_all is None else w_all[order]
    if stats_feats is not None:
        sx = np.asarray(stats_feats, dtype=np.float64)
        if sx.shape != x.shape:
            raise ValueError(f"stats_feats {sx.shape} differ from feats {x.shape}")
        ss = sx[order]
    else:
        ss = xs
    x2s = xs * xs
    ss2 = x2s if stats_feats is None else ss * ss
    inv = 1.0 / gmm.vars
    mi = gmm.means * inv
    gc = gmm.gconsts()
    total = 0.0
    for a, b in zip(starts, ends):
        p = int(ps[a])
        s = gmm.pdf_slice(p)
        xb, x2b = xs[a:b], x2s[a:b]
        sb, s2b = ss[a:b], ss2[a:b]
        if s.stop - s.start == 1:
            ll = gc[s.start] + xb @ mi[s.start] - 0.5 * (x2b @ inv[s.start])
            total += float(ll.sum())
            if ws is None:
                stats.occ[s.start] += b - a
                stats.x[s.start] += sb.sum(0)
                stats.x2[s.start] += s2b.sum(0)
            else:
                wb = ws[a:b]
                stats.occ[s.start] += wb.sum()
                stats.x[s.start] += wb @ sb
                stats.x2[s.start] += wb @ s2b
            if frame_moments:
                wcol = np.ones((b - a, 1)) if ws is None else ws[a:b, None]
                fa[order[a:b]] = wcol * mi[s.start]
                fb[order[a:b]] = wcol * inv[s.start]
            continue
        ll = xb @ mi[s].T - 0.5 * (x2b @ inv[s].T) + gc[s]
        m = ll.max(1, keepdims=True)
        e = np.exp(ll - m)
        tot = e.sum(1, keepdims=True)
        post = e / tot
        total += float((np.log(tot) + m).sum())
        if ws is not None:
            post *= ws[a:b, None]
        stats.occ[s] += post.sum(0)
        stats.x[s] += post.T @ sb
        stats.x2[s] += post.T @ s2b
        if frame_moments:
            fa[order[a:b]] = post @ mi[s]
            fb[order[a:b]] = post @ inv[s]
    stats.loglike += total
    stats.frames += int(x.shape[0])
    return (fa, fb) if frame_moments else None


def weighted_outer(weights: np.ndarray, vecs: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """``out[i] = sum_t weights[t, i] vecs_t vecs_t^T``: (D, E, E) from (T, D) weights and (T, E) vectors.

    One (D, T) x (T, E(E+1)/2) matrix product per chunk of frames over the upper
    triangle of ``vecs_t vecs_t^T`` (the result is symmetric), float64.
    """
    w = np.asarray(weights, dtype=np.float64)
    y = np.asarray(vecs, dtype=np.float64)
    d, e = w.shape[1], y.shape[1]
    iu, ju = np.triu_indices(e)
    tri = np.zeros((d, len(iu)))
    for a in range(0, len(y), chunk):
        yb = y[a : a + chunk]
        tri += w[a : a + chunk].T @ (yb[:, iu] * yb[:, ju])
    out = np.zeros((d, e, e))
    out[:, iu, ju] = tri
    out[:, ju, iu] = tri
    return out


@dataclass(frozen=True)
class MleOptions:
    """Kaldi ``MleDiagGmmOptions`` (same defaults)."""

    min_gaussian_weight: float = 1e-5
    min_gaussian_occupancy: float = 10.0
    min_variance: float = 1e-3
    remove_low_count_gaussians: bool = True


@dataclass
class UpdateReport:
    objf_change: float
    count: float
    floored_gaussians: int
    removed_gaussians: int


def mle_update(gmm: GmmSet, stats: GmmStats, opts: MleOptions = MleOptions()) -> tuple[GmmSet, UpdateReport]:
    """Maximum-likelihood re-estimation of every pdf (Kaldi ``MleDiagGmmUpdate``).

    Per Gaussian with occupancy ``n`` (and pdf total ``N``): if ``n >
    min_gaussian_occupancy`` and ``n/N > min_gaussian_weight`` then ``w = n/N``,
    ``mu = x/n``, ``v = max(x2/n - mu^2, min_variance)``; otherwise the Gaussian is
    removed (unless it is the pdf's last; then it keeps its parameters and the
    weight ``max(n/N, min_gaussian_weight)``).  Pdfs with no data keep their
    parameters.  Weights are renormalised after removal.

    Returns:
        the new model and a summary (objective change = new minus old auxiliary
        function on these statistics).
    """
    old_obj = _aux_objective(gmm, stats)
    pdf_occ = stats.pdf_occs(gmm)
    gpdf = gmm.gauss_pdf
    n = stats.occ
    tot = pdf_occ[gpdf]
    num_in_pdf = np.diff(gmm.offsets)[gpdf]
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = np.where(tot > 0, n / np.where(tot > 0, tot, 1.0), 1.0 / num_in_pdf)
    ok = (n > opts.min_gaussian_occupancy) & (prob > opts.min_gaussian_weight)

    weights = gmm.weights.copy()
    means = gmm.means.copy()
    vars_ = gmm.vars.copy()
    safe_n = np.where(ok, n, 1.0)[:, None]
    new_means = stats.x / safe_n
    new_vars = stats.x2 / safe_n - new_means**2
    floored = new_vars < opts.min_variance
    new_vars = np.maximum(new_vars, opts.min_variance)
    weights[ok] = prob[ok]
    means[ok] = new_means[ok]
    vars_[ok] = new_vars[ok]
    floored_gauss = int(np.count_nonzero(floored[ok].any(1)))

    # Removal: in Kaldi's loop a low-count Gaussian is removed unless that would
    # remove the pdf's last one; the kept one gets weight max(prob, min_weight).
    keep = np.ones(gmm.num_gauss, bool)
    bad = ~ok
    removed = 0
    if np.any(bad):
        for p in np.unique(gpdf[bad]):
            s = gmm.pdf_slice(int(p))
            idx = np.flatnonzero(bad[s]) + s.start
            k = s.stop - s.start
            if opts.remove_low_count_gaussians:
                n_remove = min(len(idx), k - 1)
                keep[idx[:n_remove]] = False
                removed += n_remove
                rest = idx[n_remove:]
            else:
                rest = idx
            weights[rest] = np.maximum(prob[rest], opts.min_gaussian_weight)
    new_offsets = np.concatenate([[0], np.cumsum(np.bincount(gpdf[keep], minlength=gmm.num_pdfs))]).astype(np.int64)
    new = GmmSet(new_offsets, weights[keep], means[keep], vars_[keep])
    if removed:  # renormalise weights of pdfs that lost Gaussians
        sums = np.add.reduceat(new.weights, new.offsets[:-1])
        new.weights /= sums[new.gauss_pdf]
    kept_stats = GmmStats(stats.occ[keep], stats.x[keep], stats.x2[keep])
    new_obj = _aux_objective(new, kept_stats)
    return new, UpdateReport(new_obj - old_obj, float(n.sum()), floored_gauss, removed)


def _aux_objective(gmm: GmmSet, stats: GmmStats) -> float:
    """Kaldi ``MlObjective``: sum_g occ_g c_g + x_g . mu_g/v_g - 0.5 x2_g . 1/v_g."""
    gc, mi, inv = gmm._natural()
    used = stats.occ > 0
    return float(
        stats.occ[used] @ gc[used] + np.sum(stats.x[used] * mi[used]) - 0.5 * np.sum(stats.x2[used] * inv[used])
    )


def split_by_count(
    gmm: GmmSet, pdf_occs: np.ndarray, target: int, perturb_factor: float = 0.01, power: float = 0.2, min_count: float = 20.0,
    seed: int = 0,
) -> GmmSet:
    """Mix up to ``target`` Gaussians in total, allocated by ``occ^power`` (Kaldi ``gmm-est --mix-up``).

    Kaldi's ``DiagGmm::Split`` halves the heaviest component's weight, appends a copy and
    moves the two means apart by ``+-perturb_factor * sqrt(var) * z``, ``z ~ N(0, I)``.
    The binding draws ``z`` from ``std::random_device`` (a different model on every run), so
    the split itself is done unperturbed and the perturbation here, from a generator seeded
    by ``(seed, gmm.num_gauss, target)``: the same training gives the same model.
    """
    if target <= gmm.num_gauss:
        return gmm
    am = gmm.to_am()
    am.split_by_count(np.asarray(pdf_occs, dtype=np.float32), int(target), 0.0, power, min_count)
    new = GmmSet.from_am(am)
    if perturb_factor:
        _perturb_copies(gmm, new, perturb_factor, np.random.default_rng([seed, gmm.num_gauss, int(target)]))
    return new


def _perturb_copies(old: GmmSet, new: GmmSet, perturb_factor: float, rng: np.random.Generator) -> None:
    """Move each appended copy (component ``j >= `` the pdf's old size) and the component it
    was copied from (the first earlier one with the same mean and variance) apart, in place."""
    means0 = new.means.copy()
    for p in range(new.num_pdfs):
        lo, k, hi = int(new.offsets[p]), int(old.offsets[p + 1] - old.offsets[p]), int(new.offsets[p + 1])
        for j in range(lo + k, hi):
            same = np.flatnonzero((means0[lo:j] == means0[j]).all(1) & (new.vars[lo:j] == new.vars[j]).all(1))
            src = lo + int(same[0]) if len(same) else None
            delta = perturb_factor * np.sqrt(new.vars[j]) * rng.standard_normal(new.dim)
            new.means[j] -= delta
            if src is not None:
                new.means[src] += delta


def merge_by_count(gmm: GmmSet, pdf_occs: np.ndarray, target: int, power: float = 0.2, min_count: float = 20.0) -> GmmSet:
    """Mix down to ``target`` Gaussians (Kaldi ``gmm-est --mix-down``)."""
    if target >= gmm.num_gauss:
        return gmm
    am = gmm.to_am()
    am.merge_by_count(np.asarray(pdf_occs, dtype=np.float32), int(target), power, min_count)
    return GmmSet.from_am(am)
