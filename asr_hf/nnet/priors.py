"""State priors of the hybrid DNN-HMM: the one rule used by training (``final.pt``),
``asr-hf nnet-forward`` and ``asr-hf decode-matrices --pdf-counts``.

Kaldi nnet1: ``log_prior[i] = log(count[i] / total)``; a pdf whose prior is below
``floor`` (Kaldi's ``--prior-floor``, 1e-10; in particular a pdf never seen) is
disabled with a log-prior of ``sqrt(FLT_MAX)``, which makes its pseudo
log-likelihood ``log p(i|x) - log_prior[i]`` hugely negative but finite.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

#: log-prior of a disabled pdf: sqrt(FLT_MAX), so ``acwt * (log_post - prior)`` stays finite
DISABLED_LOG_PRIOR = float(np.sqrt(np.finfo(np.float32).max))
PRIOR_FLOOR = 1e-10


def priors_from_counts(pdf_counts: Sequence[float] | np.ndarray, floor: float = PRIOR_FLOOR) -> np.ndarray:
    """Log-priors from pdf occupation counts, the way Kaldi nnet1 computes them.

    Args:
        pdf_counts: shape ``(num_pdfs,)``, non-negative (frames per pdf in the training
            alignments).
        floor: prior below which a pdf is disabled (Kaldi's ``--prior-floor``).

    Returns:
        float32 array, shape ``(num_pdfs,)``.

    Raises:
        ValueError: counts that are not a non-empty, finite, non-negative vector with a
            positive sum.
    """
    counts = np.asarray(pdf_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"pdf_counts must be a non-empty vector, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("pdf_counts must be finite and non-negative")
    total = counts.sum()
    if total <= 0:
        raise ValueError("pdf_counts sum to zero")
    prior = counts / total
    disabled = prior < floor
    out = np.where(disabled, DISABLED_LOG_PRIOR, np.log(np.where(disabled, 1.0, prior)))
    if disabled.any():
        log.info("priors: %d of %d pdfs have prior < %g and are disabled", disabled.sum(), counts.size, floor)
    return out.astype(np.float32)
