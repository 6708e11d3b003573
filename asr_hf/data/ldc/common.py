"""What the LDC corpus preparations share: the OOV word, fragment handling, the split builder, manifests.

Names with a leading underscore are internal to :mod:`asr_hf.data.ldc`.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lhotse import RecordingSet, SupervisionSet, validate_recordings_and_supervisions
from lhotse.audio import Recording
from lhotse.supervision import SupervisionSegment
from tqdm import tqdm

from asr_hf.data.paths import recordings_path, supervisions_path
from asr_hf.data.sphere import sphere_recording
from asr_hf.data.text import normalize_text
from asr_hf.utils import DataError, Pathlike, atomic_output, mark_done

log = logging.getLogger(__name__)

#: The OOV word; the only token kept through normalisation.
UNK = "<unk>"
#: Segments may end this many seconds after their recording before it is an error
#: (they are clipped); Kaldi's extract-segments tolerates the same overshoot.
MAX_OVERSHOOT = 0.5
#: Segments shorter than one 25-ms analysis window are dropped (seconds): they give no
#: feature frame (real BN transcripts have 5-ms <time> segments; Kaldi's hub4 recipe keeps
#: those down to 5 ms, and its extract-segments then drops anything under 0.1 s by default).
MIN_SEGMENT = 0.025
#: An SGML/XML-like tag; double-quoted attribute values may contain ``>``
#: (``<contraction e_form="[we=>we]['re=>are]">``).
_TAG = re.compile(r'<[A-Za-z/](?:[^>"]|"[^"]*")*>')


class Fragments(enum.Enum):
    """What becomes of a partial word (``th[e]-``, ``th-``, ``-[a]bout``)."""

    UNK = "unk"  #: the OOV word ``<unk>`` (spoken noise): training transcripts
    LETTERS = "letters"  #: the letters that were said (``th``), as Kaldi's recipes keep them
    DROP = "drop"  #: removed: scoring references (NIST scoring may delete fragments)


@dataclass
class PreparedCorpus:
    """What a preparation produced.

    Attributes:
        splits: ``split -> (recordings, supervisions)``; ``test`` only when there is one.
        dropped_empty: per split, utterances dropped because their normalised
            transcript was empty.
        out_dir: where the manifests were written.
    """

    splits: dict[str, tuple[RecordingSet, SupervisionSet]]
    dropped_empty: dict[str, int] = field(default_factory=dict)
    out_dir: Optional[Path] = None

    def summary(self) -> str:
        parts = []
        for name, (recs, sups) in self.splits.items():
            hours = sum(s.duration for s in sups) / 3600
            parts.append(
                f"{name}: {len(sups)} utterances ({hours:.2f} h), {len(recs)} recordings, "
                f"{self.dropped_empty.get(name, 0)} dropped empty"
            )
        return "; ".join(parts)


def normalize_with_unk(text: str) -> str:
    """:func:`normalize_text` on the text between ``<unk>`` tokens, which are kept."""
    out = []
    for i, part in enumerate(text.split(UNK)):
        if i:
            out.append(UNK)
        words = normalize_text(part)
        if words:
            out.append(words)
    return " ".join(out)


def _fragment(spoken: str, fragments: Fragments) -> Optional[str]:
    """A partial word as ``fragments`` says: ``<unk>``, its letters (``th-`` -> ``th``), or None."""
    if fragments is Fragments.UNK:
        return UNK
    if fragments is Fragments.DROP:
        return None
    return re.sub(r"[^A-Za-z']+", "", spoken) or None


def _find_files(root: Pathlike, pattern: str, what: str) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), f"{what} directory not found")
    found = sorted(p for p in root.rglob(pattern) if p.is_file())
    if not found:
        raise DataError(str(root), f"no {what} files ({pattern}) found")
    return found


def _sphere_recordings(paths: Iterable[Path], desc: str) -> dict[str, Recording]:
    recs: dict[str, Recording] = {}
    for p in tqdm(list(paths), desc=desc, leave=False, disable=None):
        rec = sphere_recording(p)
        if rec.id in recs:
            raise DataError(str(p), f"duplicate recording id {rec.id!r} (also {recs[rec.id].sources[0].source})")
        recs[rec.id] = rec
    return recs


def _sanitize_id(text: str) -> str:
    """Make a name safe inside Kaldi ids: letters, digits, ``_`` and ``.`` only.

    All of these sort after the ``-`` that separates speaker and times in
    utterance ids, which keeps utterances sorted consistently with speakers.
    """
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "unknown"


class _Builder:
    """Collects normalised supervisions of one split, with clipping and duplicate checks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sups: dict[str, SupervisionSegment] = {}
        self.dropped_empty = 0
        self.dropped_short = 0

    def add(
        self,
        rec: Recording,
        utt_id: str,
        start: float,
        end: float,
        channel: int,
        speaker: str,
        text: str,
        gender: Optional[str] = None,
    ) -> None:
        if end > rec.duration:
            if end > rec.duration + MAX_OVERSHOOT:
                raise DataError(
                    utt_id, f"segment {start:.2f}-{end:.2f}s lies outside recording {rec.id!r} "
                    f"({rec.duration:.2f}s)"
                )
            end = rec.duration
        if start < 0 or end - start < MIN_SEGMENT:
            self.dropped_short += 1
            return
        if not text:
            self.dropped_empty += 1
            return
        if utt_id in self.sups:
            raise DataError(utt_id, f"duplicate utterance id in {self.name}")
        self.sups[utt_id] = SupervisionSegment(
            id=utt_id,
            recording_id=rec.id,
            start=round(start, 6),
            duration=round(end - start, 6),
            channel=channel,
            text=text,
            language="English",
            speaker=speaker,
            gender=gender,
        )

    def manifests(self, recs: dict[str, Recording]) -> tuple[RecordingSet, SupervisionSet]:
        sups = SupervisionSet.from_segments(self.sups[k] for k in sorted(self.sups))
        used = sorted({s.recording_id for s in sups})
        recordings = RecordingSet.from_recordings(recs[r] for r in used)
        try:
            validate_recordings_and_supervisions(recordings, sups)
        except AssertionError as exc:
            raise DataError(self.name, f"inconsistent manifests: {exc}") from None
        if self.dropped_short:
            log.info("%s: dropped %d segments shorter than %.3fs", self.name, self.dropped_short, MIN_SEGMENT)
        return recordings, sups


def write_manifests(corpus: PreparedCorpus, out_dir: Pathlike) -> Path:
    """Write ``recordings_<split>.jsonl.gz``/``supervisions_<split>.jsonl.gz`` and ``.done``.

    ``out_dir`` is replaced as a whole (atomically): give each corpus its own.
    """
    out_dir = Path(out_dir)
    with atomic_output(out_dir, is_dir=True) as tmp:
        for name, (recs, sups) in corpus.splits.items():
            recs.to_file(recordings_path(tmp, name))
            sups.to_file(supervisions_path(tmp, name))
        mark_done(tmp)
    corpus.out_dir = out_dir
    return out_dir


def _finish(
    builders: Sequence[_Builder], recs: dict[str, Recording], out_dir: Optional[Pathlike]
) -> PreparedCorpus:
    corpus = PreparedCorpus(splits={}, dropped_empty={})
    for b in builders:
        if not b.sups:
            raise DataError(b.name, "split has no utterances left after normalisation")
        corpus.splits[b.name] = b.manifests(recs)
        corpus.dropped_empty[b.name] = b.dropped_empty
        if b.dropped_empty:
            log.info("%s: dropped %d utterances whose transcript became empty", b.name, b.dropped_empty)
    if out_dir is not None:
        write_manifests(corpus, out_dir)
    log.info("%s", corpus.summary())
    return corpus


def _centis(t: float) -> int:
    return int(100 * t + 0.5)
