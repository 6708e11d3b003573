"""GMM front end: MFCC -> per-speaker CMVN -> deltas (Kaldi's ``add-deltas``).

Kaldi's GMM recipes (``train_mono.sh``, ``train_deltas.sh``) feed
``apply-cmvn --utt2spk ... | add-deltas`` features: per-speaker cepstral mean
normalisation (variances untouched by default) followed by first and second
order time derivatives, giving 39 dimensions from 13 MFCCs.

Delta features (Kaldi ``DeltaFeatures``): with window ``N`` (default 2) the
order-``i`` filter is the order-``i-1`` filter convolved with
``[-N, ..., N] / sum_{n=-N..N} n^2``; frames beyond the edges are replaced by
the first/last frame.  For N=2:
``d1[t] = sum_{n=-2..2} n * x[t+n] / 10`` and ``d2 = d1`` applied to ``d1``'s filter.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

import numpy as np

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output


def delta_filters(order: int = 2, window: int = 2) -> list[np.ndarray]:
    """Kaldi's delta filters: ``filters[i]`` has length ``2*i*window + 1``."""
    if window < 1 or order < 0:
        raise ValueError("delta window must be >= 1 and order >= 0")
    base = np.arange(-window, window + 1, dtype=np.float64)
    base /= np.sum(base**2)
    filters = [np.ones(1)]
    for _ in range(order):
        filters.append(np.convolve(filters[-1], base))
    return filters


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Append delta (and delta-delta, ...) features, as Kaldi's ``add-deltas``.

    Args:
        feats: (T, D) features.
        order: highest derivative order (2 -> static + delta + delta-delta).
        window: delta window ``N``.

    Returns:
        (T, D * (order + 1)) float32, blocks ordered static, delta, delta-delta.
    """
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (T, D), got shape {x.shape}")
    t, d = x.shape
    filters = delta_filters(order, window)
    out = np.empty((t, d * (order + 1)), dtype=np.float64)
    out[:, :d] = x
    if t == 0:
        return out.astype(np.float32)
    half = order * window
    padded = np.concatenate([np.repeat(x[:1], half, axis=0), x, np.repeat(x[-1:], half, axis=0)])
    for i in range(1, order + 1):
        f = filters[i]
        w = (len(f) - 1) // 2
        acc = np.zeros((t, d))
        for j, c in enumerate(f):
            if c != 0.0:
                off = half - w + j
                acc += c * padded[off : off + t]
        out[:, i * d : (i + 1) * d] = acc
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- CMVN
def compute_cmvn_stats(cuts) -> dict[str, np.ndarray]:
    """Per-speaker CMVN statistics, Kaldi layout (see :mod:`asr_hf.features.cmvn`)."""
    from asr_hf.features.cmvn import compute_cmvn_stats as _compute

    return _compute(cuts)


def speaker_of(cut) -> str:
    """The speaker of a cut (its first supervision's), falling back to the cut id."""
    sups = getattr(cut, "supervisions", None) or []
    spk = sups[0].speaker if sups else None
    return spk if spk else cut.id


# ----------------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class FeaturePipeline:
    """MFCC -> per-speaker CMVN -> deltas.

    Attributes:
        cmvn: apply per-speaker mean normalisation.
        norm_vars: also normalise variances.
        delta_order / delta_window: :func:`add_deltas` settings (order 0 = none).
    """

    cmvn: bool = True
    norm_vars: bool = False
    delta_order: int = 2
    delta_window: int = 2

    def output_dim(self, input_dim: int) -> int:
        return input_dim * (self.delta_order + 1)

    def __call__(self, feats: np.ndarray, cmvn_stats: Optional[np.ndarray] = None) -> np.ndarray:
        """Transform one utterance's (T, D) base features into (T, D') GMM features."""
        x = np.asarray(feats, dtype=np.float32)
        if self.cmvn:
            if cmvn_stats is None:
                raise ValueError("this pipeline needs CMVN statistics")
            from asr_hf.features.cmvn import apply_cmvn  # (asr_hf.features imports torch: lazily)

            x = apply_cmvn(x, cmvn_stats, norm_vars=self.norm_vars)
        if self.delta_order > 0:
            x = add_deltas(x, self.delta_order, self.delta_window)
        return x

    def for_cut(self, cut, cmvn: Mapping[str, np.ndarray]) -> np.ndarray:
        """Load a cut's features and transform them."""
        try:
            feats = cut.load_features()
        except Exception as exc:  # unreadable/missing storage: report the utterance, don't crash the pass
            raise DataError(cut.id, f"cannot load features: {exc}") from None
        if feats is None:
            raise DataError(cut.id, "cut has no features")
        stats = cmvn.get(speaker_of(cut)) if self.cmvn else None
        if self.cmvn and stats is None:
            raise DataError(cut.id, f"no CMVN statistics for speaker {speaker_of(cut)!r}")
        return self(feats, stats)

    def iter_cuts(self, cuts: Iterable, cmvn: Optional[Mapping[str, np.ndarray]] = None) -> Iterator[tuple[object, np.ndarray]]:
        """(cut, features) for every cut; CMVN stats are computed from ``cuts`` if not given."""
        cuts = list(cuts)
        if self.cmvn and cmvn is None:
            cmvn = compute_cmvn_stats(cuts)
        for cut in cuts:
            yield cut, self.for_cut(cut, cmvn or {})

    def save(self, path: Pathlike) -> None:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Pathlike) -> "FeaturePipeline":
        p = Path(path)
        if not p.is_file():
            return cls()
        return cls(**json.loads(p.read_text()))
