"""Per-speaker cepstral mean (and variance) normalisation statistics.

Statistics use Kaldi's layout so they can be exchanged as ``cmvn.ark``: a
``(2, D + 1)`` float64 matrix per speaker whose row 0 holds the feature sums
with the frame count in the last column and row 1 the sums of squares.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from asr_hf.utils.io import Pathlike, atomic_output


def accumulate(stats: np.ndarray | None, feats: np.ndarray) -> np.ndarray:
    """Add ``feats`` ``(T, D)`` to Kaldi-layout stats (created when ``None``)."""
    d = feats.shape[1]
    if stats is None:
        stats = np.zeros((2, d + 1), dtype=np.float64)
    f = feats.astype(np.float64)
    stats[0, :d] += f.sum(axis=0)
    stats[1, :d] += (f * f).sum(axis=0)
    stats[0, d] += f.shape[0]
    return stats


def speaker_of(cut) -> str:
    """The one speaker rule of CMVN, fMLLR and per-speaker scoring: the cut's first
    supervision's speaker, or, without one, the cut id (Kaldi's ``utt2spk`` convention
    for data without speaker information: every utterance its own speaker)."""
    sups = getattr(cut, "supervisions", None) or []
    spk = sups[0].speaker if sups else None
    return spk if spk else cut.id


def compute_cmvn_stats(cuts: Iterable) -> dict[str, np.ndarray]:
    """Per-speaker stats over feature cuts, keyed by :func:`speaker_of`."""
    out: dict[str, np.ndarray] = defaultdict(lambda: None)  # type: ignore[arg-type]
    for cut in cuts:
        spk = speaker_of(cut)
        out[spk] = accumulate(out[spk], cut.load_features())
    return dict(out)


def stored_cmvn(cuts_paths: Sequence[Pathlike]) -> Optional[dict[str, np.ndarray]]:
    """The stats the features stage wrote for feature cuts manifests, merged.

    ``asr-hf features`` writes ``<dir>/cmvn_<split>.ark`` beside each
    ``<dir>/cuts_<split>.jsonl.gz`` (Kaldi's ``cmvn.scp`` beside ``feats.scp``), so
    the GMM stages and decoding read one copy instead of recomputing it.  Returns
    ``None`` (compute from the features instead) when any manifest has no such file,
    or the file is older than its manifest (the features were recomputed after it).
    Speakers present in several manifests have their stats summed.
    """
    from asr_hf.data.paths import cmvn_ark_path, split_of

    merged: dict[str, np.ndarray] = {}
    for p in cuts_paths:
        p = Path(p)
        ark = cmvn_ark_path(p.parent, split_of(p))
        if not ark.is_file() or (p.is_file() and ark.stat().st_mtime < p.stat().st_mtime):
            return None
        for spk, st in read_cmvn(ark).items():
            merged[spk] = merged[spk] + st if spk in merged else st
    return merged


def cmvn_for_cuts(cuts_path: Pathlike, cuts: Iterable) -> dict[str, np.ndarray]:
    """Per-speaker stats of one manifest's ``cuts``: the features stage's copy
    (:func:`stored_cmvn`) where there is one, else computed from ``cuts``."""
    stored = stored_cmvn([cuts_path])
    return stored if stored is not None else compute_cmvn_stats(cuts)


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Normalise ``feats`` ``(T, D)`` with Kaldi-layout ``stats`` (as apply-cmvn)."""
    d = feats.shape[1]
    if stats.shape != (2, d + 1):
        raise ValueError(f"stats shape {stats.shape} does not fit features of dim {d}")
    count = stats[0, d]
    if count < 1:
        raise ValueError("CMVN stats have zero count")
    mean = stats[0, :d] / count
    out = feats.astype(np.float64) - mean
    if norm_vars:
        var = np.maximum(stats[1, :d] / count - mean * mean, 1e-10)
        out /= np.sqrt(var)
    return out.astype(np.float32)


def write_cmvn(stats: dict[str, np.ndarray], ark: Pathlike, scp: Pathlike | None = None) -> None:
    """Write stats as a Kaldi ``cmvn.ark`` (and ``cmvn.scp``), speakers sorted."""
    from asr_hf.utils.kio import kaldi_io

    ark = Path(ark)
    with atomic_output(ark) as tmp:
        with open(tmp, "wb") as f:
            for spk in sorted(stats):
                kaldi_io.write_mat(f, stats[spk], key=spk)
    if scp is not None:
        offsets = {k: off for k, off in _ark_offsets(ark)}
        with atomic_output(scp) as tmp:
            tmp.write_text("".join(f"{k} {ark}:{offsets[k]}\n" for k in sorted(stats)))


def _ark_offsets(ark: Path):
    from asr_hf.utils.kio import kaldi_io

    with open(ark, "rb") as f:
        while True:
            key = kaldi_io.read_key(f)
            if not key:
                break
            off = f.tell()
            kaldi_io.read_mat(f)
            yield key, off


def read_cmvn(ark_or_scp: Pathlike) -> dict[str, np.ndarray]:
    """Read stats written by :func:`write_cmvn` or by Kaldi's compute-cmvn-stats."""
    from asr_hf.utils.kio import kaldi_io

    path = str(ark_or_scp)
    reader = kaldi_io.read_mat_scp if path.endswith(".scp") else kaldi_io.read_mat_ark
    return {k: np.asarray(m, dtype=np.float64) for k, m in reader(path)}
