"""Switchboard-1 (LDC97S62 + Mississippi State word alignments), optionally Hub5 eval2000.

Audio: ``swb1_d*/data/sw0NNNN.sph`` (2-channel 8 kHz SPHERE; found anywhere
under ``audio_dir``).  Transcripts: ``swb_ms98_transcriptions/NN/NNNN/
swNNNN{A,B}-ms98-a-trans.text``, lines ``<seg-id> <start> <end> <words>``,
parsed by lhotse's ``lhotse.recipes.switchboard.make_segments``.  Side A is
channel 0, B channel 1; the speaker is the conversation side (``sw02001-A``,
Kaldi's convention) and utterance ids are Kaldi's
``sw02001-A_000098-001156`` (centiseconds).  Split: ``dev`` is the first
conversations in sorted order holding at least ``dev_utterances``
utterances (Kaldi's ``train_dev`` takes the first 4000 utterances; whole
conversations are used here so that no conversation side is in both),
``train`` the rest; ``test`` is Hub5 eval2000 (LDC2002S09 speech +
LDC2002T43 transcripts) when given, parsed by lhotse's
``lhotse.recipes.eval2000.make_segments``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

from lhotse.audio import Recording
from lhotse.supervision import SupervisionSegment
from tqdm import tqdm

from asr_hf.data.ldc.common import (
    _TAG,
    UNK,
    Fragments,
    PreparedCorpus,
    _Builder,
    _centis,
    _find_files,
    _finish,
    _fragment,
    _sphere_recordings,
    normalize_with_unk,
)
from asr_hf.utils import DataError, Pathlike

log = logging.getLogger(__name__)


_SWBD_DROP = frozenset({"[silence]", "[noise]", "[laughter]", "<b_aside>", "<e_aside>"})
_SWBD_SPOKEN_NOISE = frozenset({"[vocalized-noise]"})


def clean_swbd_token(token: str, fragments: Fragments = Fragments.UNK) -> Optional[str]:
    """Clean one Mississippi State Switchboard token (after Kaldi's ``swbd1_map_words.pl``).

    ``[silence] [noise] [laughter] <b_aside> <e_aside>`` -> dropped;
    ``[vocalized-noise]`` -> ``<unk>``; ``[laughter-yes]`` -> ``yes``;
    ``[it'n/isn't]`` -> ``it'n`` (what was said); ``{yuppiedom}`` -> ``yuppiedom``;
    ``them_1`` -> ``them``; partial words ``th[e]-``, ``-[a]bout``, ``ammu[n]it-``
    -> ``<unk>`` (see :class:`Fragments`).

    Returns:
        The cleaned token, or None to drop it.
    """
    tok = token.lower()
    if tok in _SWBD_DROP:
        return None
    if tok in _SWBD_SPOKEN_NOISE:
        return UNK
    m = re.fullmatch(r"\[laughter-(.+)\](-?)", tok)
    if m:
        tok = m.group(1) + m.group(2)
    m = re.fullmatch(r"\[(.+)/.+\](-?)", tok)
    if m:
        tok = m.group(1) + m.group(2)
    m = re.fullmatch(r"-?\[[^\[\]]+\](.+)", tok)  # -[an]y: beginning not said
    if m:
        return _fragment(m.group(1), fragments)
    m = re.fullmatch(r"(.+?)\[.*\]-?", tok)  # ab[solute]-, ex[specially]-/...: end not said
    if m:
        return _fragment(m.group(1), fragments)
    if re.fullmatch(r"\[.*\]", tok) or re.fullmatch(r"<.*>", tok):
        return None  # any other noise marker or tag
    m = re.fullmatch(r"\{(.+)\}", tok)  # coinages
    if m:
        tok = m.group(1)
    tok = re.sub(r"_\d", "", tok)  # them_1 -> them
    if "[" in tok or tok.startswith("-") or tok.endswith("-"):
        return _fragment(re.sub(r"\[.*?\]", "", tok), fragments)
    return tok


def clean_swbd_text(text: str, fragments: Fragments = Fragments.UNK) -> str:
    """Clean a Mississippi State Switchboard transcript token by token (see :func:`clean_swbd_token`)."""
    tokens = (clean_swbd_token(t, fragments) for t in text.split())
    return " ".join(t for t in tokens if t)


def clean_cts_reference(text: str) -> str:
    """Clean an LDC conversational-telephone reference line (Hub5 eval2000 ``.txt``).

    Tags (``<contraction e_form=...>``, ``<b_aside>``) and noises (``{breath}``,
    ``[noise]``) are removed; uncertain words ``((word))`` kept, hesitations
    ``%um`` -> ``um``; markers ``&Name``, ``+word+``, ``**word**``, ``^word``,
    ``@word`` stripped; word fragments (``fr-``, ``-bout``) dropped, since NIST
    scoring treats them as optionally deletable.
    """
    t = _TAG.sub(" ", text)
    t = re.sub(r"\{[^}]*\}", " ", t)
    t = re.sub(r"\[[^\]]*\]", " ", t)
    t = t.replace("((", " ").replace("))", " ")
    out = []
    for tok in t.split():
        tok = tok.strip("%&+*^@#")
        if not re.search(r"[A-Za-z0-9]", tok) or tok.startswith("-") or tok.endswith("-"):
            continue
        out.append(tok)
    return " ".join(out)


def _swbd_transcripts(transcripts_dir: Pathlike) -> dict[str, Path]:
    """``{"sw2001A": path}`` for the MS-State ``*-trans.text`` files."""
    out: dict[str, Path] = {}
    for p in _find_files(transcripts_dir, "*trans.text", "Switchboard transcript"):
        key = p.name.split("-")[0]
        if not re.fullmatch(r"sw\d+[AB]", key):
            raise DataError(str(p), "transcript name is not like 'sw2001A-ms98-a-trans.text'")
        if key in out:
            raise DataError(str(p), f"second transcript for {key} (also {out[key]})")
        out[key] = p
    return out


def _read_swbd_side(path: Path, rec: Recording, channel: int) -> list[SupervisionSegment]:
    from lhotse.recipes.switchboard import make_segments

    try:
        return make_segments(transcript_path=path, recording=rec, channel=channel, omit_silence=True)
    except (ValueError, IndexError) as exc:
        raise DataError(str(path), f"malformed transcript line (want '<id> <start> <end> <words>'): {exc}") from None


def _add_swbd_side(
    builder: _Builder, rec: Recording, channel: int, segments: Iterable[SupervisionSegment],
    clean: Callable[[str], str],
) -> None:
    side = "AB"[channel]
    speaker = f"{rec.id}-{side}"
    for seg in segments:
        start, end = seg.start, seg.start + seg.duration
        utt = f"{speaker}_{_centis(start):06d}-{_centis(end):06d}"
        builder.add(rec, utt, start, end, channel, speaker, normalize_with_unk(clean(seg.text or "")))


def _eval2000_dirs(audio_dir: Pathlike, transcripts_dir: Pathlike) -> tuple[Path, Path]:
    audio_dir, transcripts_dir = Path(audio_dir), Path(transcripts_dir)
    audio = next(
        (d for d in (audio_dir / "hub5e_00" / "english", audio_dir / "english") if d.is_dir()), None
    )
    if audio is None:
        raise DataError(str(audio_dir), "eval2000 speech (LDC2002S09): no hub5e_00/english directory")
    trans = next(
        (
            d
            for d in (
                transcripts_dir / "reference" / "english",
                transcripts_dir / "2000_hub5_eng_eval_tr" / "reference" / "english",
            )
            if d.is_dir()
        ),
        None,
    )
    if trans is None:
        raise DataError(str(transcripts_dir), "eval2000 transcripts (LDC2002T43): no reference/english directory")
    return audio, trans


def prepare_swbd(
    audio_dir: Pathlike,
    transcripts_dir: Pathlike,
    out_dir: Optional[Pathlike] = None,
    *,
    eval2000_audio_dir: Optional[Pathlike] = None,
    eval2000_transcripts_dir: Optional[Pathlike] = None,
    dev_utterances: int = 4000,
    fragments: Fragments = Fragments.UNK,
) -> PreparedCorpus:
    """Prepare Switchboard-1 (LDC97S62) with the MS-State transcripts, optionally eval2000.

    Args:
        audio_dir: the LDC97S62 release (``swb1_d1/data/sw02001.sph`` ...).
        transcripts_dir: ``swb_ms98_transcriptions`` (``20/2001/sw2001A-ms98-a-trans.text`` ...).
        out_dir: where to write the manifests (None: only return them).
        eval2000_audio_dir: LDC2002S09 (holding ``hub5e_00/english/*.sph``); the test set.
        eval2000_transcripts_dir: LDC2002T43 (holding ``reference/english/*.txt``).
        dev_utterances: ``dev`` takes the first conversations (sorted) until it
            has at least this many utterances; ``train`` keeps at least one.
        fragments: what partial words become in train/dev (:class:`Fragments`);
            eval2000 references always drop them.

    Returns:
        The :class:`PreparedCorpus` (splits ``train``, ``dev`` and with eval2000 ``test``).

    Raises:
        DataError: missing directories/files, malformed transcripts, segments
            outside their recording, duplicate ids.
    """
    if (eval2000_audio_dir is None) != (eval2000_transcripts_dir is None):
        raise DataError("eval2000", "give both the eval2000 speech and transcript directories")
    transcripts = _swbd_transcripts(transcripts_dir)
    audio = _find_files(audio_dir, "*.sph", "Switchboard audio")
    recs = _sphere_recordings(audio, "swbd headers")
    conversations = []
    for rec_id in sorted(recs):
        key = rec_id.replace("sw0", "sw", 1)
        sides = [transcripts.get(f"{key}{s}") for s in "AB"]
        if not all(sides):
            log.warning("%s: no transcript for side(s) %s; conversation skipped", rec_id,
                        "".join(s for s, p in zip("AB", sides) if p is None))
            continue
        if recs[rec_id].num_channels != 2:
            raise DataError(str(recs[rec_id].sources[0].source), "Switchboard audio must have 2 channels")
        conversations.append((rec_id, sides))
    orphans = set(transcripts) - {f"{r.replace('sw0', 'sw', 1)}{s}" for r, _ in conversations for s in "AB"}
    if orphans:
        log.warning("%d transcript sides have no audio (e.g. %s)", len(orphans), sorted(orphans)[0])
    if len(conversations) < 2:
        raise DataError(str(audio_dir), "need at least 2 transcribed conversations (train and dev)")

    clean = lambda t: clean_swbd_text(t, fragments)  # noqa: E731
    per_conv: list[tuple[str, list[tuple[int, list[SupervisionSegment]]]]] = []
    for rec_id, sides in tqdm(conversations, desc="swbd transcripts", leave=False, disable=None):
        per_conv.append((rec_id, [(ch, _read_swbd_side(p, recs[rec_id], ch)) for ch, p in enumerate(sides)]))
    train, dev = _Builder("train"), _Builder("dev")
    for i, (rec_id, sides) in enumerate(per_conv):
        take_dev = len(dev.sups) < dev_utterances and i < len(per_conv) - 1
        for ch, segs in sides:
            _add_swbd_side(dev if take_dev else train, recs[rec_id], ch, segs, clean)
    builders = [train, dev]

    if eval2000_audio_dir is not None:
        from lhotse.recipes.eval2000 import make_segments

        e_audio, e_trans = _eval2000_dirs(eval2000_audio_dir, eval2000_transcripts_dir)  # type: ignore[arg-type]
        e_recs = _sphere_recordings(_find_files(e_audio, "*.sph", "eval2000 audio"), "eval2000 headers")
        try:
            segs = make_segments(e_trans)
        except (ValueError, IndexError) as exc:
            raise DataError(str(e_trans), f"malformed eval2000 transcript line: {exc}") from None
        test = _Builder("test")
        by_side: dict[tuple[str, int], list[SupervisionSegment]] = {}
        for seg in segs:
            if seg.recording_id not in e_recs:
                raise DataError(seg.id, f"eval2000 transcript has no audio {seg.recording_id}.sph in {e_audio}")
            by_side.setdefault((seg.recording_id, int(seg.channel)), []).append(seg)  # type: ignore[arg-type]
        for (rec_id, ch), side_segs in sorted(by_side.items()):
            _add_swbd_side(test, e_recs[rec_id], ch, side_segs, clean_cts_reference)
        overlap = set(e_recs) & set(recs)
        if overlap:
            raise DataError(sorted(overlap)[0], "recording id in both Switchboard and eval2000")
        recs = {**recs, **e_recs}
        builders.append(test)
    return _finish(builders, recs, out_dir)
