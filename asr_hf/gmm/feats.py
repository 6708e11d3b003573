"""GMM front end: MFCC -> per-speaker CMVN -> deltas or splicing -> linear transform.

Kaldi's GMM recipes (``train_mono.sh``, ``train_deltas.sh``) feed
``apply-cmvn --utt2spk ... | add-deltas`` features: per-speaker cepstral mean
normalisation (variances untouched by default) followed by first and second
order time derivatives, giving 39 dimensions from 13 MFCCs.  The LDA+MLLT
systems (``train_lda_mllt.sh``) use ``apply-cmvn | splice-feats
--left-context=3 --right-context=3 | transform-feats final.mat`` instead:
+-3 frames spliced (91 dimensions) and projected by the system's matrix
(40 x 91), which the experiment directory carries as ``final.mat``.  SAT
systems apply a per-speaker affine fMLLR transform on top (see
:func:`apply_transform`).

Delta features (Kaldi ``DeltaFeatures``): with window ``N`` (default 2) the
order-``i`` filter is the order-``i-1`` filter convolved with
``[-N, ..., N] / sum_{n=-N..N} n^2``; frames beyond the edges are replaced by
the first/last frame.  For N=2:
``d1[t] = sum_{n=-2..2} n * x[t+n] / 10`` and ``d2 = d1`` applied to ``d1``'s filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

import numpy as np

from asr_hf.features.cmvn import compute_cmvn_stats, speaker_of
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


def splice_frames(feats: np.ndarray, left: int, right: Optional[int] = None) -> np.ndarray:
    """Stack each frame with its neighbours, as Kaldi's ``splice-feats``.

    Args:
        feats: (T, D) features.
        left / right: context frames (``right`` defaults to ``left``); frames beyond
            the edges repeat the first/last frame.

    Returns:
        (T, D * (left + 1 + right)) float32, blocks ordered ``t-left .. t+right``.
    """
    x = np.asarray(feats, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (T, D), got shape {x.shape}")
    right = left if right is None else right
    t = x.shape[0]
    if t == 0:
        return np.zeros((0, x.shape[1] * (left + 1 + right)), np.float32)
    idx = np.clip(np.arange(t)[:, None] + np.arange(-left, right + 1)[None, :], 0, t - 1)
    return x[idx].reshape(t, -1)


def apply_transform(feats: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Kaldi's ``transform-feats``: ``y = A x`` for a (D', D) matrix, ``y = A x + b`` for (D', D+1).

    Returns:
        (T, D') float32 (computed in float64).
    """
    x = np.asarray(feats, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[1] == x.shape[1]:
        y = x @ m.T
    elif m.shape[1] == x.shape[1] + 1:
        y = x @ m[:, :-1].T + m[:, -1]
    else:
        raise ValueError(f"transform of shape {m.shape} does not fit {x.shape[1]}-dim features")
    return y.astype(np.float32)


def read_matrix(path: Pathlike) -> np.ndarray:
    """A Kaldi matrix file (binary or text, e.g. ``final.mat``) as float64."""
    from asr_hf.utils.kio import kaldi_io

    try:
        with open(path, "rb") as f:
            return np.asarray(kaldi_io.read_mat(f), dtype=np.float64)
    except Exception as exc:
        raise DataError(str(path), f"cannot read matrix: {exc}") from None


def write_matrix(path: Pathlike, matrix: np.ndarray) -> None:
    """Write a Kaldi binary matrix file (what ``est-lda`` / ``compose-transforms`` write), atomically."""
    from asr_hf.utils.kio import kaldi_io

    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            kaldi_io.write_mat(f, np.ascontiguousarray(matrix, dtype=np.float32))


# ----------------------------------------------------------------------------- pipeline
TRANSFORM_FILE = "final.mat"


@dataclass(frozen=True, eq=False)
class FeaturePipeline:
    """MFCC -> per-speaker CMVN -> deltas or splicing -> global transform -> per-speaker fMLLR.

    Attributes:
        cmvn: apply per-speaker mean normalisation.
        norm_vars: also normalise variances.
        delta_order / delta_window: :func:`add_deltas` settings (order 0 = none).
        splice: +-context frames of :func:`splice_frames` (0 = none; LDA systems: 3).
        transform: (D', D) or (D', D+1) matrix applied last (``final.mat``), or None.
            Saved beside ``feature_pipeline.json`` as a Kaldi matrix file.
        speaker_adaptive: the model expects per-speaker fMLLR on top (a SAT system:
            alignment and decoding estimate the transforms first, see :mod:`asr_hf.gmm.sat`).
    """

    cmvn: bool = True
    norm_vars: bool = False
    delta_order: int = 2
    delta_window: int = 2
    splice: int = 0
    transform: Optional[np.ndarray] = field(default=None, repr=False)
    speaker_adaptive: bool = False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeaturePipeline):
            return NotImplemented
        a, b = self.transform, other.transform
        same_matrix = (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        return self.settings() == other.settings() and same_matrix

    def __hash__(self) -> int:
        return hash(json.dumps(self.settings(), sort_keys=True))

    def base_dim(self, input_dim: int) -> int:
        """Dimension after deltas and splicing (the transform's input)."""
        return input_dim * (self.delta_order + 1) * (2 * self.splice + 1)

    def output_dim(self, input_dim: int) -> int:
        return int(self.transform.shape[0]) if self.transform is not None else self.base_dim(input_dim)

    def with_transform(self, matrix: Optional[np.ndarray]) -> "FeaturePipeline":
        """The same pipeline with another global transform (None: none)."""
        return replace(self, transform=None if matrix is None else np.asarray(matrix, dtype=np.float64))

    def __call__(
        self, feats: np.ndarray, cmvn_stats: Optional[np.ndarray] = None, speaker_transform: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Transform one utterance's (T, D) base features into (T, D') GMM features.

        ``speaker_transform``: a per-speaker (D', D'+1) fMLLR matrix applied after everything else.
        """
        x = np.asarray(feats, dtype=np.float32)
        if self.cmvn:
            if cmvn_stats is None:
                raise ValueError("this pipeline needs CMVN statistics")
            from asr_hf.features.cmvn import apply_cmvn  # (asr_hf.features imports torch: lazily)

            x = apply_cmvn(x, cmvn_stats, norm_vars=self.norm_vars)
        if self.delta_order > 0:
            x = add_deltas(x, self.delta_order, self.delta_window)
        if self.splice > 0:
            x = splice_frames(x, self.splice)
        if self.transform is not None:
            x = apply_transform(x, self.transform)
        if speaker_transform is not None:
            x = apply_transform(x, speaker_transform)
        return x

    def for_cut(
        self, cut, cmvn: Mapping[str, np.ndarray], speaker_transforms: Optional[Mapping[str, np.ndarray]] = None
    ) -> np.ndarray:
        """Load a cut's features and transform them (``speaker_transforms``: speaker -> fMLLR matrix)."""
        try:
            feats = cut.load_features()
        except Exception as exc:  # unreadable/missing storage: report the utterance, don't crash the pass
            raise DataError(cut.id, f"cannot load features: {exc}") from None
        if feats is None:
            raise DataError(cut.id, "cut has no features")
        stats = cmvn.get(speaker_of(cut)) if self.cmvn else None
        if self.cmvn and stats is None:
            raise DataError(cut.id, f"no CMVN statistics for speaker {speaker_of(cut)!r}")
        xform = speaker_transforms.get(speaker_of(cut)) if speaker_transforms else None
        return self(feats, stats, xform)

    def iter_cuts(self, cuts: Iterable, cmvn: Optional[Mapping[str, np.ndarray]] = None) -> Iterator[tuple[object, np.ndarray]]:
        """(cut, features) for every cut; CMVN stats are computed from ``cuts`` if not given."""
        cuts = list(cuts)
        if self.cmvn and cmvn is None:
            cmvn = compute_cmvn_stats(cuts)
        for cut in cuts:
            yield cut, self.for_cut(cut, cmvn or {})

    def settings(self) -> dict:
        """The JSON-serialisable settings (the transform by file name)."""
        d = {"cmvn": self.cmvn, "norm_vars": self.norm_vars, "delta_order": self.delta_order,
             "delta_window": self.delta_window, "splice": self.splice,
             "speaker_adaptive": self.speaker_adaptive}  # fmt: skip
        if self.transform is not None:
            d["transform"] = TRANSFORM_FILE
            d["transform_shape"] = list(self.transform.shape)
        return d

    def save(self, path: Pathlike) -> None:
        """Write the settings to ``path`` (JSON) and the transform beside it (``final.mat``)."""
        path = Path(path)
        if self.transform is not None:
            write_matrix(path.parent / TRANSFORM_FILE, self.transform)
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.settings(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Pathlike) -> "FeaturePipeline":
        p = Path(path)
        if not p.is_file():
            return cls()
        d = json.loads(p.read_text())
        d.pop("transform_shape", None)
        name = d.pop("transform", None)
        matrix = read_matrix(p.parent / name) if name else None
        return cls(**d, transform=matrix)
