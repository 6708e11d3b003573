"""Turn prepared corpus manifests into the per-utterance cuts the pipeline uses.

Real corpora (LDC BN/SWB) come as long recordings with segment supervisions;
the synthetic ones are one utterance per recording.  Both end up as
``<corpus>/manifests/cuts_<split>.jsonl.gz`` (one supervision per cut, cut id =
utterance id) plus ``<corpus>/lm_text.txt`` (training transcripts);
:func:`load_cuts` reads a split back.  File names: :mod:`asr_hf.data.paths`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from asr_hf.data.paths import (
    SPLITS,
    corpus_cuts_file,
    lm_text_path,
    recording_splits,
    recordings_path,
    supervisions_path,
)
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, mark_done

log = logging.getLogger(__name__)


def cuts_from_manifests(manifest_dir: Pathlike, corpus_dir: Pathlike, splits: Sequence[str] | None = None,
                        lm_split: str = "train") -> Path:
    """Write per-utterance cuts for every split found in ``manifest_dir``.

    Args:
        manifest_dir: holds ``recordings_<split>.jsonl.gz`` and ``supervisions_<split>.jsonl.gz``.
        corpus_dir: output corpus directory (``manifests/cuts_<split>.jsonl.gz``, ``lm_text.txt``).
        splits: splits to convert (default: all found).
        lm_split: whose transcripts become the LM training text.
    """
    from lhotse import CutSet, RecordingSet, SupervisionSet

    manifest_dir, corpus_dir = Path(manifest_dir), Path(corpus_dir)
    splits = list(splits or recording_splits(manifest_dir))
    if not splits:
        raise DataError(str(manifest_dir), "no recordings_<split>.jsonl.gz manifests")
    for split in splits:
        rec_path = recordings_path(manifest_dir, split)
        sup_path = supervisions_path(manifest_dir, split)
        for p in (rec_path, sup_path):
            if not p.is_file():
                raise DataError(str(p), "missing manifest")
        recs = RecordingSet.from_file(rec_path)
        sups = SupervisionSet.from_file(sup_path)
        cuts = CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(
            keep_overlapping=False
        )
        fixed = CutSet.from_cuts(c.with_id(c.supervisions[0].id) for c in cuts).sort_by_recording_id()
        with atomic_output(corpus_cuts_file(corpus_dir, split)) as tmp:
            fixed.to_file(tmp)
        log.info("%s: %d utterance cuts", split, len(fixed))
        if split == lm_split:
            with atomic_output(lm_text_path(corpus_dir)) as tmp:
                tmp.write_text("".join(f"{s.text}\n" for s in sups if s.text), encoding="utf-8")
    mark_done(corpus_dir)
    return corpus_dir


def load_cuts(corpus_dir: Pathlike, split: str):
    """The raw-audio CutSet of one split of a synthesized or prepared corpus."""
    from lhotse import CutSet

    path = corpus_cuts_file(corpus_dir, split)
    if not path.is_file():
        raise DataError(str(path), "missing; run the data preparation stage first")
    return CutSet.from_file(path)


def splits_present(corpus_dir: Pathlike) -> Sequence[str]:
    """The standard splits (:data:`asr_hf.data.paths.SPLITS`) whose cuts ``corpus_dir`` holds."""
    return [s for s in SPLITS if corpus_cuts_file(corpus_dir, s).is_file()]


#: ``sp<factor>-`` prefix of a speed-perturbed copy's cut / speaker id (:func:`speed_perturb`)
SPEED_PREFIX = re.compile(r"^sp[0-9]+(?:\.[0-9]+)?-")


def perturbation_source(cut_id: str) -> str:
    """The id of the cut that ``cut_id`` is a speed-perturbed copy of (itself if none)."""
    return SPEED_PREFIX.sub("", cut_id, count=1)


def speed_perturb(cuts, factors: Sequence[float]):
    """Kaldi-style speed perturbation (``utils/perturb_data_dir_speed.sh``).

    Every factor other than 1 adds a resampled copy of each cut (tempo and
    pitch change together, as sox ``speed``); the copies are new utterances of
    new speakers, named Kaldi's way: cut/supervision id ``sp<f>-<id>`` and
    speaker ``sp<f>-<speaker>``, so per-speaker CMVN and speaker-prefixed
    ids keep working.  A factor of 1 keeps the original cuts.

    Args:
        cuts: raw-audio CutSet (one supervision per cut).
        factors: e.g. ``(0.9, 1.0, 1.1)``.

    Returns:
        CutSet of ``len(factors) * len(cuts)`` cuts (the originals only when 1 is listed).
    """
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    if not factors:
        raise DataError("speed perturbation", "no factors given")
    bad = [f for f in factors if not 0.5 <= f <= 2.0]
    if bad:
        raise DataError("speed perturbation", f"factor {bad[0]} outside [0.5, 2.0]")
    out = []
    for f in factors:
        if f == 1.0:
            out.extend(cuts)
            continue
        tag = f"sp{f:g}"
        for cut in cuts:
            p = cut.perturb_speed(f, affix_id=False)
            sups = [fastcopy(s, id=f"{tag}-{s.id}", speaker=f"{tag}-{s.speaker}" if s.speaker else None)
                    for s in p.supervisions]
            out.append(fastcopy(p, id=f"{tag}-{cut.id}", supervisions=sups))
    return CutSet.from_cuts(out)
