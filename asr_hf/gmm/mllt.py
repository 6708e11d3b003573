"""Maximum-likelihood linear transform / global semi-tied covariance (Gopinath 1998;
Gales 1999; Kaldi ``gmm-acc-mllt`` / ``est-mllt``).

A square transform ``M`` of the features ``x -> M x`` is chosen so that a
diagonal-covariance GMM fits the transformed data as well as possible.  With
``gamma_tm`` the (silence-weighted) posterior of Gaussian ``m`` at frame ``t``
and ``mu_m``, ``sigma^2_m`` its mean and diagonal variance in the current space,
the statistics are ``beta = sum_tm gamma_tm`` and, per dimension ``i``,

    G_i = sum_tm gamma_tm / sigma^2_mi (x_t - mu_m)(x_t - mu_m)^T          (D, D)

(:func:`mllt_stats`), and the auxiliary function of the rows ``m_i`` of ``M`` is

    Q(M) = beta log |det M| - 1/2 sum_i m_i G_i m_i^T.

Each row has a closed-form maximiser given the others (Gales' eq. 22): with
``c_i`` the i-th row of the cofactor matrix (any multiple of ``M^-T``),

    m_i = G_i^-1 c_i sqrt(beta / (c_i G_i^-1 c_i^T)),

and sweeping the rows ``num_iters`` times (Kaldi: 200) never decreases ``Q``.
Kaldi starts from ``M = I`` in the current feature space, composes ``M`` into
the feature transform (``compose-transforms``) and maps the model means
``mu -> M mu`` (``gmm-transform-means``); the variances are re-estimated by the
next EM update.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from asr_hf.gmm.gmm import GmmSet, GmmStats
from asr_hf.utils.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class MlltStats:
    """``gmm-acc-mllt`` statistics: ``beta`` and ``G`` (D, D, D), float64."""

    beta: float
    G: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> "MlltStats":
        return cls(0.0, np.zeros((dim, dim, dim)))

    def add(self, other: "MlltStats") -> None:
        self.beta += other.beta
        self.G += other.G


def mllt_stats(gmm: GmmSet, wstats: GmmStats, second: np.ndarray) -> MlltStats:
    """MLLT statistics from (silence-weighted) frame statistics under ``gmm``.

    Expanding ``(x - mu)(x - mu)^T``:

        G_i = sum_t b_ti x_t x_t^T - sum_m (xbar_m mu_m^T + mu_m xbar_m^T) / sigma^2_mi
              + sum_m n_m mu_m mu_m^T / sigma^2_mi,

    with ``b_ti = sum_m gamma_tm / sigma^2_mi`` (per frame) and the per-Gaussian
    weighted count ``n_m`` and sum ``xbar_m`` (``wstats``).

    Args:
        gmm: the model the posteriors came from.
        wstats: weighted per-Gaussian statistics of the frames (occ, x used).
        second: (D, D, D) ``sum_t b_ti x_t x_t^T`` (:func:`~asr_hf.gmm.gmm.weighted_outer`
            of the per-frame ``b_t`` that :func:`~asr_hf.gmm.gmm.accumulate` returns).
    """
    G = np.array(second, dtype=np.float64)
    inv = 1.0 / gmm.vars
    mu = gmm.means
    used = np.flatnonzero(wstats.occ > 0)
    for a in range(0, len(used), 512):
        g = used[a : a + 512]
        cross = np.einsum("mi,mj,mk->ijk", inv[g], wstats.x[g], mu[g], optimize=True)
        G -= cross + cross.transpose(0, 2, 1)
        G += np.einsum("mi,mj,mk->ijk", inv[g] * wstats.occ[g, None], mu[g], mu[g], optimize=True)
    return MlltStats(float(wstats.occ.sum()), G)


def mllt_objective(M: np.ndarray, stats: MlltStats) -> float:
    """``beta log|det M| - 1/2 sum_i m_i G_i m_i^T``."""
    _, logdet = np.linalg.slogdet(M)
    return float(stats.beta * logdet - 0.5 * np.einsum("ij,ijk,ik->", M, stats.G, M))


@dataclass
class MlltResult:
    """Output of :func:`estimate_mllt`: the matrix and the objective per row sweep (``trace[0]``: start)."""

    matrix: np.ndarray
    trace: list[float] = field(default_factory=list)
    count: float = 0.0

    @property
    def improvement_per_frame(self) -> float:
        return (self.trace[-1] - self.trace[0]) / max(self.count, 1e-10)


def estimate_mllt(stats: MlltStats, num_iters: int = 200, init: Optional[np.ndarray] = None) -> MlltResult:
    """Kaldi ``MlltAccs::Update``: row-by-row maximisation of :func:`mllt_objective` from ``init`` (unit)."""
    d = stats.G.shape[0]
    if stats.beta < 2 * d:
        raise DataError("MLLT statistics", f"count {stats.beta:g} is too small to estimate a {d}x{d} transform")
    M = np.eye(d) if init is None else np.array(init, dtype=np.float64)
    try:
        Ginv = np.linalg.inv(stats.G)
    except np.linalg.LinAlgError:
        raise DataError("MLLT statistics", "singular statistics") from None
    trace = [mllt_objective(M, stats)]
    for _ in range(num_iters):
        Minv = np.linalg.inv(M)  # exact once per sweep, rank-1 (Sherman-Morrison) updates within it
        for i in range(d):
            cof = Minv[:, i].copy()  # i-th row of M^-T: the cofactor row up to the factor det M
            gc = Ginv[i] @ cof
            new_row = gc * np.sqrt(stats.beta / float(cof @ gc))
            delta = new_row - M[i]
            M[i] = new_row
            u = Minv[:, i]
            vt = delta @ Minv
            Minv -= np.outer(u, vt) / (1.0 + float(vt[i]))
        trace.append(mllt_objective(M, stats))
    res = MlltResult(M, trace, stats.beta)
    log.info("MLLT: objective improvement %.4f per frame over %g frames", res.improvement_per_frame, stats.beta)
    return res
