"""Linear discriminant analysis on pdf-labelled frames (Kaldi ``acc-lda`` / ``est-lda``).

Statistics (:class:`LdaStats`): per class ``c`` (a pdf of the source system's
alignment) the weighted count ``n_c`` and sum ``s_c``, and the total second
moment ``S = sum_t w_t x_t x_t^T`` (silence frames get weight 0, as
``weight-silence-post 0.0`` in ``train_lda_mllt.sh``).  With ``N = sum_c n_c``
and ``m = sum_c s_c / N``:

    T  = S / N - m m^T                          (total covariance)
    Sb = sum_c s_c s_c^T / (n_c N) - m m^T      (between-class covariance)
    Sw = T - Sb                                 (within-class covariance)

Estimation (Kaldi ``LdaEstimate::Estimate``): with the Cholesky factor
``Sw = C C^T``, diagonalise ``C^-1 Sb C^-T = U diag(d) U^T`` (eigenvalues sorted
in decreasing order); the full transform is ``W = U^T C^-1`` and the LDA matrix
its first ``dim`` rows.  ``W Sw W^T = I`` (unit within-class covariance) and
``W Sb W^T = diag(d)``: the rows of ``W`` solve the generalised eigenproblem
``Sb v = d Sw v`` with ``v^T Sw v = 1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from asr_hf.utils.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LdaStats:
    """``acc-lda`` statistics, float64.

    Attributes:
        count: (C,) weighted frame count per class; first: (C, D) weighted sums;
        second: (D, D) total weighted second moment.
    """

    count: np.ndarray
    first: np.ndarray
    second: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int, dim: int) -> "LdaStats":
        return cls(np.zeros(num_classes), np.zeros((num_classes, dim)), np.zeros((dim, dim)))

    @property
    def dim(self) -> int:
        return int(self.second.shape[0])

    def accumulate(self, feats: np.ndarray, classes: np.ndarray, weights: Optional[np.ndarray] = None) -> None:
        """Add frames: (T, D) features, (T,) class ids, optional (T,) weights."""
        x = np.asarray(feats, dtype=np.float64)
        c = np.asarray(classes, dtype=np.int64)
        w = np.ones(len(c)) if weights is None else np.asarray(weights, dtype=np.float64)
        keep = w != 0
        x, c, w = x[keep], c[keep], w[keep]
        self.count += np.bincount(c, weights=w, minlength=len(self.count))
        np.add.at(self.first, c, x * w[:, None])
        self.second += (x * w[:, None]).T @ x

    def add(self, other: "LdaStats") -> None:
        self.count += other.count
        self.first += other.first
        self.second += other.second

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(total covariance, between-class covariance, total mean, total count)."""
        n = float(self.count.sum())
        if n <= 0:
            raise DataError("LDA statistics", "no frames")
        mean = self.first.sum(0) / n
        total = self.second / n - np.outer(mean, mean)
        used = self.count > 0
        f = self.first[used]
        between = (f.T / self.count[used]) @ f / n - np.outer(mean, mean)
        return total, between, mean, n


@dataclass
class LdaResult:
    """Output of :func:`estimate_lda`.

    Attributes:
        matrix: (dim, D) the LDA projection (``0.mat``); full: (D, D) all rows (``full.mat``);
        eigenvalues: (D,) the between-class variances of the transformed dimensions, descending;
        count: frames the statistics hold.
    """

    matrix: np.ndarray
    full: np.ndarray
    eigenvalues: np.ndarray
    count: float

    def summary(self) -> dict:
        d = self.matrix.shape[0]
        return {
            "lda_dim": d,
            "lda_input_dim": int(self.full.shape[1]),
            "lda_count": self.count,
            "lda_eigenvalue_sum": float(self.eigenvalues.sum()),
            "lda_selected_eigenvalue_sum": float(self.eigenvalues[:d].sum()),
            "lda_top_eigenvalues": [round(float(v), 4) for v in self.eigenvalues[:5]],
        }


def estimate_lda(stats: LdaStats, dim: int) -> LdaResult:
    """Kaldi ``est-lda --dim=dim`` (see the module docstring for the math)."""
    if not 0 < dim <= stats.dim:
        raise ValueError(f"LDA dim {dim} must lie in 1..{stats.dim}")
    total, between, _, n = stats.covariances()
    within = total - between
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        raise DataError("LDA statistics", "within-class covariance is not positive definite (too little data?)") from None
    cinv = np.linalg.inv(chol)
    mid = cinv @ between @ cinv.T
    mid = 0.5 * (mid + mid.T)
    vals, vecs = np.linalg.eigh(mid)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    full = vecs.T @ cinv
    log.info("LDA: %g frames, eigenvalue sum %.3f, selected %.3f", n, vals.sum(), vals[:dim].sum())
    return LdaResult(matrix=full[:dim].copy(), full=full, eigenvalues=vals, count=n)
