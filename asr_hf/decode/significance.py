"""Bootstrap confidence intervals for WER and paired-bootstrap intervals for WER
differences (Bisani & Ney, "Bootstrap estimates for confidence intervals in ASR
performance evaluation", ICASSP 2004).

The resampling unit is the utterance: a replicate draws ``U`` utterances with
replacement and computes ``WER* = sum errors / sum reference words`` over the draw.
The 95% interval is the 2.5th and 97.5th percentile of the replicates.  For two
systems decoded on the same utterances the draw is shared (paired), so the interval
of ``WER_b - WER_a`` reflects only how the systems differ, not how hard the
utterances are; ``p_improve`` is the fraction of replicates in which ``b`` is better
(Bisani & Ney's "probability of improvement").

The inputs are scored decode directories (``hyp.txt``, ``ref.txt``; see
:mod:`asr_hf.decode.report`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_hf.decode.scoring import read_text, score
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike

DEFAULT_REPLICATES = 2000


@dataclass(frozen=True)
class UtteranceErrors:
    """Per-utterance word errors and reference lengths of one scored set, ids sorted."""

    ids: tuple[str, ...]
    errors: np.ndarray  # (U,) int64
    words: np.ndarray  # (U,) int64

    @property
    def wer(self) -> float:
        return 100.0 * float(self.errors.sum()) / max(int(self.words.sum()), 1)


def utterance_errors(decode_dir: Pathlike) -> UtteranceErrors:
    """Score ``hyp.txt`` against ``ref.txt`` of a decode dir per utterance."""
    d = Path(decode_dir)
    for name in ("hyp.txt", "ref.txt"):
        if not (d / name).is_file():
            raise DataError(str(d / name), "missing: not a scored decode directory")
    refs, hyps = read_text(d / "ref.txt"), read_text(d / "hyp.txt")
    ignore: list[str] = []
    if (d / "wer.json").is_file():  # score exactly as the decode did
        ignore = list(json.loads((d / "wer.json").read_text()).get("ignore_words", []))
    result = score(refs, hyps, ignore_words=ignore)
    by_id = {u.utt_id: u.counts for u in result.utterances}
    ids = tuple(sorted(refs))
    errors = np.array([by_id[i].errors if i in by_id else len(refs[i]) for i in ids], dtype=np.int64)
    words = np.array([sum(w not in ignore for w in refs[i]) for i in ids], dtype=np.int64)
    return UtteranceErrors(ids, errors, words)


def _draws(n: int, replicates: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(replicates, n))


def bootstrap_wer_ci(
    ue: UtteranceErrors, replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """``level`` confidence interval of the WER (percent) by resampling utterances."""
    if len(ue.ids) == 0:
        raise DataError("bootstrap", "no utterances to resample")
    idx = _draws(len(ue.ids), replicates, seed)
    reps = 100.0 * ue.errors[idx].sum(1) / np.maximum(ue.words[idx].sum(1), 1)
    a = (1.0 - level) / 2
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedDifference:
    """``WER_b - WER_a`` (percent, absolute) on the utterances both systems decoded."""

    wer_a: float
    wer_b: float
    diff: float
    ci: tuple[float, float]
    p_improve: float  # fraction of replicates with WER_b < WER_a
    utterances: int

    def fmt(self) -> str:
        return f"{self.diff:+.2f} [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}]"


def paired_bootstrap(
    a: UtteranceErrors,
    b: UtteranceErrors,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Paired bootstrap of ``WER_b - WER_a`` over the common utterances.

    Raises:
        DataError: the two sets share no utterance, or their references differ.
    """
    common = sorted(set(a.ids) & set(b.ids))
    if not common:
        raise DataError("paired bootstrap", "the two decode sets share no utterance")
    ia = {u: i for i, u in enumerate(a.ids)}
    ib = {u: i for i, u in enumerate(b.ids)}
    pa = np.array([ia[u] for u in common])
    pb = np.array([ib[u] for u in common])
    words = a.words[pa]
    if not np.array_equal(words, b.words[pb]):
        raise DataError("paired bootstrap", "the two decode sets have different references")
    ea, eb = a.errors[pa], b.errors[pb]
    idx = _draws(len(common), replicates, seed)
    w = np.maximum(words[idx].sum(1), 1)
    d = 100.0 * (eb[idx].sum(1) - ea[idx].sum(1)) / w
    q = (1.0 - level) / 2
    lo, hi = np.quantile(d, [q, 1.0 - q])
    total = max(int(words.sum()), 1)
    wa, wb = 100.0 * ea.sum() / total, 100.0 * eb.sum() / total
    return PairedDifference(float(wa), float(wb), float(wb - wa), (float(lo), float(hi)), float((d < 0).mean()),
                            len(common))  # fmt: skip
