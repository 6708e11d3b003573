"""Feature-space MLLR / constrained MLLR for diagonal-covariance GMMs (Gales 1998;
Kaldi ``FmllrDiagGmmAccs``, ``gmm-est-fmllr``).

An affine transform ``W = [A b]`` (D, D+1) maps a speaker's features
``x -> A x + b = W xi`` with ``xi = [x; 1]``.  With Gaussian posteriors
``gamma_tm`` (silence down-weighted) under a model with means ``mu_m`` and
diagonal variances ``sigma^2_m``, the statistics are

    beta = sum_tm gamma_tm,
    K    = sum_t a_t xi_t^T,            a_t  = sum_m gamma_tm mu_m / sigma^2_m     (D, D+1)
    G_i  = sum_t b_ti xi_t xi_t^T,      b_ti = sum_m gamma_tm / sigma^2_mi         (D+1, D+1)

and the auxiliary function (:func:`fmllr_auxf`, Kaldi ``FmllrAuxFuncDiagGmm``) is

    Q(W) = beta log |det A| + tr(W K^T) - 1/2 sum_i w_i G_i w_i^T.

Row update (Kaldi ``FmllrInnerUpdate``): with ``p_i = [c_i, 0]`` the extended
cofactor row of ``A``, ``e1 = p_i G_i^-1 p_i^T`` and ``e2 = p_i G_i^-1 k_i^T``,
the stationary points are ``w_i = (alpha p_i + k_i) G_i^-1`` where ``alpha``
solves the quadratic ``e1 alpha^2 + e2 alpha - beta = 0``; of its two roots
the one with the larger ``beta log|alpha e1 + e2| - 1/2 alpha^2 e1`` is taken.
Each row update maximises ``Q`` over that row exactly, so ``Q`` never decreases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from asr_hf.gmm.gmm import GmmSet, GmmStats, accumulate, weighted_outer

log = logging.getLogger(__name__)


@dataclass
class FmllrStats:
    """``FmllrDiagGmmAccs`` statistics of one speaker, float64: ``beta``, ``K`` (D, D+1), ``G`` (D, D+1, D+1)."""

    beta: float
    K: np.ndarray
    G: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> "FmllrStats":
        return cls(0.0, np.zeros((dim, dim + 1)), np.zeros((dim, dim + 1, dim + 1)))

    @property
    def dim(self) -> int:
        return int(self.K.shape[0])

    def accumulate(self, feats: np.ndarray, frame_a: np.ndarray, frame_b: np.ndarray, count: float) -> None:
        """Add frames: (T, D) features, their (T, D) ``a_t`` and ``b_t``, and their total posterior."""
        xi = np.concatenate([np.asarray(feats, np.float64), np.ones((len(feats), 1))], axis=1)
        self.beta += float(count)
        self.K += np.asarray(frame_a, np.float64).T @ xi
        self.G += weighted_outer(frame_b, xi)

    def add(self, other: "FmllrStats") -> None:
        self.beta += other.beta
        self.K += other.K
        self.G += other.G


def accumulate_speakers(
    gmm: GmmSet,
    acc: dict,
    feats: Sequence[np.ndarray],
    pdfs: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    speakers: Sequence[str],
) -> None:
    """Add utterances to per-speaker statistics ``acc`` (speaker -> :class:`FmllrStats`).

    The utterances' (T_u, D) features, (T_u,) aligned pdfs and (T_u,) frame weights
    (silence down-weighted) are scored in one batch under ``gmm``.
    """
    if not feats:
        return
    x = np.concatenate(feats).astype(np.float64)
    w = np.concatenate(weights).astype(np.float64)
    fa, fb = accumulate(gmm, GmmStats.zeros(gmm), x, np.concatenate(pdfs), weights=w, frame_moments=True)
    ends = np.cumsum([len(f) for f in feats])
    rows: dict[str, list[np.ndarray]] = {}
    for spk, e, f in zip(speakers, ends, feats):
        rows.setdefault(spk, []).append(np.arange(e - len(f), e))
    for spk, parts in rows.items():
        idx = np.concatenate(parts)
        acc.setdefault(spk, FmllrStats.zeros(x.shape[1])).accumulate(x[idx], fa[idx], fb[idx], float(w[idx].sum()))


def estimate_speakers(
    acc: dict, previous: Optional[dict] = None, num_iters: int = 40, min_count: float = 50.0
) -> tuple[dict, dict]:
    """One fMLLR estimation per speaker from unit, composed after ``previous`` (speaker -> W).

    The statistics must come from features already adapted by ``previous`` (Kaldi
    ``gmm-est-fmllr`` then ``compose-transforms --b-is-affine``).

    Returns:
        (speaker -> composed (D, D+1) transform, a summary: speakers, updated, mean
        improvement per frame and the auxiliary-function traces per speaker).
    """
    out, traces = {}, {}
    impr, frames, updated = 0.0, 0.0, 0
    for spk in sorted(acc):
        res = estimate_fmllr(acc[spk], num_iters=num_iters, min_count=min_count)
        prev = previous.get(spk) if previous else None
        out[spk] = res.transform if prev is None else compose_affine(res.transform, prev)
        if res.updated:
            updated += 1
            impr += res.trace[-1] - res.trace[0]
            frames += res.count
            traces[spk] = [round((v - res.trace[0]) / res.count, 6) for v in res.trace]
    if previous:
        for spk, w in previous.items():
            out.setdefault(spk, w)
    summary = {
        "speakers": len(acc),
        "updated": updated,
        "improvement_per_frame": impr / frames if frames else 0.0,
        "frames": frames,
        "auxf_traces_per_frame": traces,
    }
    log.info("fMLLR: %d/%d speakers updated, %.4f per frame over %g frames", updated, len(acc),
             summary["improvement_per_frame"], frames)  # fmt: skip
    return out, summary


def save_transforms(path, transforms: dict) -> None:
    """Per-speaker transforms as one ``.npz`` (speakers, stacked matrices), atomically."""
    from asr_hf.utils.io import atomic_output

    speakers = sorted(transforms)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, speakers=np.array(speakers, dtype=str),
                     transforms=np.stack([transforms[s] for s in speakers]) if speakers else np.zeros((0, 1, 2)))  # fmt: skip


def load_transforms(path) -> dict:
    with np.load(path) as z:
        return {str(k): np.asarray(m, dtype=np.float64) for k, m in zip(z["speakers"], z["transforms"])}


def identity_transform(dim: int) -> np.ndarray:
    """``[I 0]``: (D, D+1)."""
    return np.concatenate([np.eye(dim), np.zeros((dim, 1))], axis=1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``x -> outer(inner(x))`` for (D, D+1) affine transforms (``compose-transforms --b-is-affine``)."""
    d = inner.shape[0]
    A = outer[:, :d] @ inner[:, :d]
    b = outer[:, :d] @ inner[:, d] + outer[:, d]
    return np.concatenate([A, b[:, None]], axis=1)


def fmllr_auxf(W: np.ndarray, stats: FmllrStats) -> float:
    """``beta log|det A| + tr(W K^T) - 1/2 sum_i w_i G_i w_i^T``."""
    d = stats.dim
    _, logdet = np.linalg.slogdet(W[:, :d])
    return float(stats.beta * logdet + np.sum(W * stats.K) - 0.5 * np.einsum("ij,ijk,ik->", W, stats.G, W))


@dataclass
class FmllrResult:
    """Output of :func:`estimate_fmllr`: the transform, the objective per row sweep (``trace[0]``: start)."""

    transform: np.ndarray
    trace: list[float] = field(default_factory=list)
    count: float = 0.0
    updated: bool = True

    @property
    def improvement_per_frame(self) -> float:
        return (self.trace[-1] - self.trace[0]) / max(self.count, 1e-10) if self.trace else 0.0


def estimate_fmllr(
    stats: FmllrStats, init: Optional[np.ndarray] = None, num_iters: int = 40, min_count: float = 50.0
) -> FmllrResult:
    """Kaldi ``ComputeFmllrMatrixDiagGmmFull`` from ``init`` (default ``[I 0]``).

    Below ``min_count`` frames (Kaldi ``--fmllr-min-count``) the transform is left as it is.
    """
    d = stats.dim
    W = identity_transform(d) if init is None else np.array(init, dtype=np.float64)
    if stats.beta <= min_count:
        log.warning("fMLLR not updated: count %g below %g", stats.beta, min_count)
        return FmllrResult(W, [], stats.beta, updated=False)
    Ginv = np.linalg.inv(stats.G)
    beta = stats.beta
    trace = [fmllr_auxf(W, stats)]
    for _ in range(num_iters):
        Ainv = np.linalg.inv(W[:, :d])  # exact once per sweep, rank-1 (Sherman-Morrison) updates within it
        for i in range(d):
            cof = np.zeros(d + 1)
            cof[:d] = Ainv[:, i]  # i-th row of A^-T: the cofactor row up to the factor det A
            old_row = W[i, :d].copy()
            ginv_p = Ginv[i] @ cof
            k = stats.K[i]
            e1 = float(cof @ ginv_p)
            e2 = float(k @ ginv_p)
            disc = np.sqrt(e2 * e2 + 4.0 * e1 * beta)
            roots = ((-e2 + disc) / (2 * e1), (-e2 - disc) / (2 * e1))
            auxf = [beta * np.log(abs(a * e1 + e2)) - 0.5 * a * a * e1 for a in roots]
            alpha = roots[0] if auxf[0] > auxf[1] else roots[1]
            W[i] = Ginv[i] @ (alpha * cof + k)
            vt = (W[i, :d] - old_row) @ Ainv
            Ainv -= np.outer(Ainv[:, i], vt) / (1.0 + float(vt[i]))
        trace.append(fmllr_auxf(W, stats))
    if trace[-1] < trace[0] and not np.isclose(trace[-1], trace[0]):
        log.warning("fMLLR objective decreased; transform not changed")
        init_w = identity_transform(d) if init is None else np.array(init, dtype=np.float64)
        return FmllrResult(init_w, trace, beta, updated=False)
    return FmllrResult(W, trace, beta)
