"""1997 Hub4 English Broadcast News (LDC98S71 speech + LDC98T28 transcripts), optionally eval97.

Audio: ``*.sph`` under ``audio_dir``; transcripts ``*.sgml`` under
``transcripts_dir`` (``hub4e97_trans_980217/transcrp/``), paired by the
episode's ``filename`` attribute (or the SGML file name).  Segments run
from one ``<time sec=...>`` marker to the next or to the end of the
``<turn>``.  Speakers are ``<episode>_<speaker-name>`` as in Kaldi's hub4
recipe.  ``test`` is the 1997 Hub4 evaluation set (LDC2002S11:
``h4e_evl/h4e_97.sph`` + ``h4e_97.stm``) when given; otherwise a
speaker-disjoint split (on the speaker names across episodes) of the
training episodes gives ``dev`` and ``test``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from asr_hf.data.ldc.common import (
    _TAG,
    UNK,
    Fragments,
    PreparedCorpus,
    _Builder,
    _find_files,
    _finish,
    _fragment,
    _sanitize_id,
    _sphere_recordings,
    normalize_with_unk,
)
from asr_hf.data.ldc.sgml import BnEpisode, parse_bn_sgml, parse_stm
from asr_hf.data.paths import SPLITS
from asr_hf.data.text import split_disjoint
from asr_hf.utils import DataError, Pathlike

log = logging.getLogger(__name__)


def clean_bn_text(text: str, fragments: Fragments = Fragments.UNK) -> str:
    """Clean 1997 Hub4 Broadcast News transcript markup (after Kaldi's ``normalize_bn97_transcripts.pl``).

    Leftover tags ``<...>`` and noises ``{breath}``, ``{lipsmack}``, ``[noise]``
    are removed; unclear speech ``((words))`` keeps its words; overlap ``#``
    marks removed; ``**invented**``, ``+mispronounced+``, ``@guess``, ``^Name``
    keep the word; letter sequences ``_f_b_i`` -> ``f b i``; tokens without a
    letter or digit (``--``, ``++``) dropped; word fragments (``th-``) as
    ``fragments`` says (:class:`Fragments`).
    """
    t = text.replace(UNK, " \x00 ")  # a foreign-speech placeholder of the SGML reader
    t = _TAG.sub(" ", t)
    t = re.sub(r"\{[^}]*\}", " ", t)
    t = re.sub(r"\[[^\]]*\]", " ", t)
    t = t.replace("((", " ").replace("))", " ").replace("#", " ")
    t = re.sub(r"\*\*([^*]+)\*\*", r" \1 ", t)
    out: list[str] = []
    for tok in t.split():
        if tok == "\x00":
            out.append(UNK)
            continue
        tok = tok.strip("+*").lstrip("@^")
        if tok.endswith("--"):
            tok = tok.rstrip("-")  # an interruption dash, not a fragment
        if not re.search(r"[A-Za-z0-9]", tok):
            continue
        if tok.startswith("-") or tok.endswith("-"):
            frag = _fragment(tok, fragments)
            if frag:
                out.append(frag)
            continue
        out.append(tok.replace("_", " ").strip())
    return " ".join(out)


def clean_stm_text(text: str) -> str:
    """Clean an NIST STM reference transcript (Hub4 eval): optional ``(words)`` kept,
    ``%hesitation`` dropped, then :func:`clean_bn_text` with fragments dropped."""
    t = re.sub(r"\(?%hesitation\)?", " ", text, flags=re.IGNORECASE)
    t = re.sub(r"(?<!\()\((?!\()|(?<!\))\)(?!\))", " ", t)  # single parentheses, not (( ))
    return clean_bn_text(t, Fragments.DROP)


def _bn_utt_id(speaker: str, start: float, end: float) -> str:
    return f"{speaker}-{int(1000 * start + 0.5):08d}-{int(1000 * end + 0.5):08d}"


def _gender(value: Optional[str]) -> Optional[str]:
    return {"male": "m", "female": "f"}.get((value or "").lower())


def prepare_bn(
    audio_dir: Pathlike,
    transcripts_dir: Pathlike,
    out_dir: Optional[Pathlike] = None,
    *,
    eval97_dir: Optional[Pathlike] = None,
    dev_fraction: float = 0.02,
    test_fraction: float = 0.02,
    seed: int = 0,
    fragments: Fragments = Fragments.UNK,
) -> PreparedCorpus:
    """Prepare 1997 Hub4 English Broadcast News (LDC98S71 + LDC98T28), optionally its eval set.

    Args:
        audio_dir: LDC98S71 (``*.sph`` anywhere below).
        transcripts_dir: LDC98T28 (``*.sgml`` anywhere below, e.g.
            ``hub4e97_trans_980217/transcrp/``).
        out_dir: where to write the manifests (None: only return them).
        eval97_dir: LDC2002S11 (``h4e_evl/h4e_97.sph`` and ``h4e_97.stm``): the test set.
        dev_fraction: share of training speaker names held out for ``dev``.
        test_fraction: share held out for ``test`` when no ``eval97_dir``.
        seed: seed of the speaker split.
        fragments: what partial words become in train/dev (:class:`Fragments`);
            eval97 references always drop them.

    Returns:
        The :class:`PreparedCorpus` with ``train``, ``dev``, ``test``.

    Raises:
        DataError: missing directories/files, malformed SGML, segments outside
            their recording, duplicate ids, a split left empty.
    """
    recs = _sphere_recordings(_find_files(audio_dir, "*.sph", "Broadcast News audio"), "bn headers")
    episodes: list[BnEpisode] = []
    seen: dict[str, Path] = {}
    for path in tqdm(_find_files(transcripts_dir, "*.sgml", "Broadcast News transcript"), desc="bn sgml",
                     leave=False, disable=None):
        ep = parse_bn_sgml(path)
        if ep.id not in recs and path.stem in recs:
            ep.id = path.stem
        if ep.id not in recs:
            log.warning("%s: episode %s has no audio; skipped", path, ep.id)
            continue
        if ep.id in seen:
            raise DataError(str(path), f"second transcript of episode {ep.id} (also {seen[ep.id]})")
        seen[ep.id] = path
        episodes.append(ep)
    missing = sorted(set(recs) - set(seen))
    if missing:
        log.warning("%d audio files have no transcript (e.g. %s)", len(missing), missing[0])
    if not episodes:
        raise DataError(str(transcripts_dir), "no transcript matches an audio file")

    names = sorted({seg.speaker.lower() for ep in episodes for seg in ep.segments})
    fractions = {"dev": dev_fraction} if eval97_dir is not None else {"dev": dev_fraction, "test": test_fraction}
    fractions["train"] = 1.0 - sum(fractions.values())
    parts = split_disjoint(names, fractions, seed)
    split_of = {name: split for split, members in parts.items() for name in members}
    builders = {name: _Builder(name) for name in ("train", "dev", "test")}
    clean = lambda t: normalize_with_unk(clean_bn_text(t, fragments))  # noqa: E731
    for ep in episodes:
        rec = recs[ep.id]
        for seg in ep.segments:
            speaker = f"{ep.id}_{_sanitize_id(seg.speaker)}"
            builders[split_of[seg.speaker.lower()]].add(
                rec, _bn_utt_id(speaker, seg.start, seg.end), seg.start, seg.end, 0, speaker,
                clean(seg.text), _gender(seg.gender),
            )

    if eval97_dir is not None:
        e_recs = _sphere_recordings(_find_files(eval97_dir, "*.sph", "Hub4 eval97 audio"), "eval97 headers")
        test = builders["test"]
        for stm in _find_files(eval97_dir, "*.stm", "Hub4 eval97 STM"):
            for seg in parse_stm(stm):
                rec = e_recs.get(seg.recording)
                if rec is None:
                    raise DataError(f"{stm}", f"STM recording {seg.recording!r} has no .sph in {eval97_dir}")
                speaker = f"{rec.id}_{_sanitize_id(seg.speaker)}"
                test.add(rec, _bn_utt_id(speaker, seg.start, seg.end), seg.start, seg.end, 0, speaker,
                         normalize_with_unk(clean_stm_text(seg.text)), _gender(seg.gender))
        overlap = set(e_recs) & set(recs)
        if overlap:
            raise DataError(sorted(overlap)[0], "recording id in both the training and eval97 audio")
        recs = {**recs, **e_recs}
    return _finish([builders[n] for n in SPLITS], recs, out_dir)
