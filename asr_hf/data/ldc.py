"""Real-corpus preparation: 1997 Hub4 English Broadcast News and Switchboard-1.

Both preparations end in the same place: lhotse manifests
``recordings_<split>.jsonl.gz`` / ``supervisions_<split>.jsonl.gz`` for the
splits ``train``, ``dev`` and (when there is one) ``test``, every transcript in
the project's normalised form (:func:`asr_hf.data.text.normalize_text`), written
atomically as one directory with a ``.done`` marker.

Transcript markup is cleaned per corpus *before* ``normalize_text``; the one
token that survives normalisation is ``<unk>`` (the OOV word, pronounced SPN),
which stands for speech that has no lexicon word: vocalized noise, word
fragments in training transcripts, foreign speech.  Non-speech noises
(``[noise]``, ``[laughter]``, ``{breath}`` ...) are dropped.  Utterances whose
transcript becomes empty are dropped and counted.

Switchboard-1 (LDC97S62 + Mississippi State word alignments)
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

1997 Hub4 English Broadcast News (LDC98S71 speech + LDC98T28 transcripts)
    Audio: ``*.sph`` under ``audio_dir``; transcripts ``*.sgml`` under
    ``transcripts_dir`` (``hub4e97_trans_980217/transcrp/``), paired by the
    episode's ``filename`` attribute (or the SGML file name).  Segments run
    from one ``<time sec=...>`` marker to the next or to the end of the
    ``<turn>``.  Speakers are ``<episode>_<speaker-name>`` as in Kaldi's hub4
    recipe.  ``test`` is the 1997 Hub4 evaluation set (LDC2002S11:
    ``h4e_evl/h4e_97.sph`` + ``h4e_97.stm``) when given; otherwise a
    speaker-disjoint split (on the speaker names across episodes) of the
    training episodes gives ``dev`` and ``test``.

lhotse's readers of SPHERE files need the ``sph2pipe`` binary (LDC's files are
shorten-compressed); recordings here are described from the SPHERE header, so
preparation itself needs no decoder.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from lhotse import RecordingSet, SupervisionSet, validate_recordings_and_supervisions
from lhotse.audio import Recording
from lhotse.supervision import SupervisionSegment
from tqdm import tqdm

from asr_hf.data.kaldi_dir import sphere_recording
from asr_hf.data.text import normalize_text, split_disjoint
from asr_hf.utils import DataError, Pathlike, atomic_output, mark_done

log = logging.getLogger(__name__)

#: The OOV word; the only token kept through normalisation.
UNK = "<unk>"
#: Segments may end this many seconds after their recording before it is an error
#: (they are clipped); Kaldi's extract-segments tolerates the same overshoot.
MAX_OVERSHOOT = 0.5
#: Kaldi's hub4 recipe drops segments shorter than this (seconds).
MIN_SEGMENT = 0.005
SPLITS = ("train", "dev", "test")
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


# ---------------------------------------------------------------------------
# Transcript cleanup
# ---------------------------------------------------------------------------


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


_SWBD_DROP = frozenset({"[silence]", "[noise]", "[laughter]", "<b_aside>", "<e_aside>"})
_SWBD_SPOKEN_NOISE = frozenset({"[vocalized-noise]"})


def _fragment(spoken: str, fragments: Fragments) -> Optional[str]:
    """A partial word as ``fragments`` says: ``<unk>``, its letters (``th-`` -> ``th``), or None."""
    if fragments is Fragments.UNK:
        return UNK
    if fragments is Fragments.DROP:
        return None
    return re.sub(r"[^A-Za-z']+", "", spoken) or None


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


# ---------------------------------------------------------------------------
# Broadcast News SGML and STM
# ---------------------------------------------------------------------------


@dataclass
class BnSegment:
    """One transcribed stretch of a Broadcast News turn (raw text, seconds)."""

    speaker: str
    gender: Optional[str]
    start: float
    end: float
    text: str


@dataclass
class BnEpisode:
    """A parsed ``.sgml`` transcript: the episode id (audio file stem) and its segments."""

    id: str
    segments: list[BnSegment]


_TAG_OR_TEXT = re.compile(_TAG.pattern + r"|<|[^<]+")
_TAG_NAME = re.compile(r"</?\s*([A-Za-z][\w-]*)")
_ATTR = re.compile(r"([A-Za-z][\w-]*)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)")


def _read_legacy_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1")  # the LDC transcripts' encoding


def _attr_time(path: Path, attrs: dict[str, str], *names: str) -> float:
    for name in names:
        if name in attrs:
            try:
                return float(attrs[name])
            except ValueError:
                raise DataError(str(path), f"bad time {name}={attrs[name]!r}") from None
    raise DataError(str(path), f"tag without {'/'.join(names)}: {attrs}")


def parse_bn_sgml(path: Pathlike) -> BnEpisode:
    """Parse a 1997 Hub4 transcript (LDC98T28 ``.sgml``) into raw segments.

    The format (SGML without closing ``</time>`` tags)::

        <episode filename=e960531 program="ABC_WNT" language=English ...>
        <section type=report startTime=0.0 endTime=305.12>
        <turn speaker=Peter_Jennings spkrtype=male startTime=336.704 endTime=338.229>
        <time sec=336.704>
         time served up until
        <time sec=337.575>
         this point?
        </turn>
        </section>
        </episode>

    A segment runs from a ``<time>`` marker (or the turn start) to the next
    marker (or the turn end).  ``<overlap>``, ``<background>``, ``<section>``
    and ``<unclear>`` tags are ignored (their text kept), ``<comment>`` text is
    skipped, ``<foreign>`` speech becomes one ``<unk>``.  Kaldi's
    ``parse_sgm_1997_hub4_eng.pl`` reads the files the same way; lhotse's
    ``prepare_broadcast_news`` needs BeautifulSoup instead.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "transcript file not found")
    episode_id = re.sub(r"_$", "", path.stem)
    segments: list[BnSegment] = []
    turn: Optional[dict[str, str]] = None
    turn_end = seg_start = 0.0
    buf: list[str] = []
    in_comment = in_foreign = False

    def flush(end: float) -> None:
        words = " ".join(" ".join(buf).split())
        buf.clear()
        if turn is not None and words:
            segments.append(
                BnSegment(
                    speaker=turn.get("speaker", "unknown"),
                    gender=turn.get("spkrtype"),
                    start=seg_start,
                    end=end,
                    text=words,
                )
            )

    for m in _TAG_OR_TEXT.finditer(_read_legacy_text(path)):
        chunk = m.group(0)
        if not chunk.startswith("<"):
            if turn is not None and not in_comment and not in_foreign:
                buf.append(chunk)
            continue
        name_match = _TAG_NAME.match(chunk)
        if name_match is None:
            continue
        name = name_match.group(1).lower()
        closing = chunk.startswith("</")
        attrs = {k.lower(): v.strip("\"'") for k, v in _ATTR.findall(chunk)}
        if name == "episode" and not closing and "filename" in attrs:
            episode_id = re.sub(r"(\.sph)?_?$", "", attrs["filename"])
        elif name == "turn" and not closing:
            if turn is not None:
                raise DataError(str(path), f"<turn> at {attrs.get('starttime')} inside another turn")
            turn = attrs
            seg_start = _attr_time(path, attrs, "starttime", "s_time")
            turn_end = _attr_time(path, attrs, "endtime", "e_time")
            buf.clear()
        elif name == "turn" and closing:
            flush(turn_end)
            turn = None
        elif name in ("time", "sync") and not closing and turn is not None:
            t = _attr_time(path, attrs, "sec", "time")
            flush(t)
            seg_start = t
        elif name == "comment":
            in_comment = not closing
        elif name == "foreign":
            if not closing and turn is not None and not in_comment:
                buf.append(f" {UNK} ")
            in_foreign = not closing
    if turn is not None:
        log.warning("%s: unterminated <turn> at end of file", path)
        flush(turn_end)
    return BnEpisode(id=episode_id, segments=segments)


@dataclass
class StmSegment:
    """One line of an NIST STM reference file."""

    recording: str
    channel: str
    speaker: str
    start: float
    end: float
    gender: Optional[str]
    text: str


def parse_stm(path: Pathlike) -> list[StmSegment]:
    """Parse an NIST STM file: ``<file> <channel> <speaker> <start> <end> [<labels>] <text>``.

    ``;;`` comment lines and segments marked ``IGNORE_TIME_SEGMENT_IN_SCORING``
    (or spoken by ``inter_segment_gap``/``excluded_region``) are skipped.
    """
    path = Path(path)
    out = []
    for lineno, line in enumerate(_read_legacy_text(path).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";;"):
            continue
        fields = line.split(None, 5)
        if len(fields) < 5:
            raise DataError(f"{path}:{lineno}", "STM line needs at least 5 fields")
        rec, channel, speaker, start, end = fields[:5]
        rest = fields[5] if len(fields) > 5 else ""
        gender = None
        label = re.match(r"<([^>]*)>\s*", rest)
        if label:
            rest = rest[label.end():]
            gender = next((g for g in label.group(1).lower().split(",") if g in ("male", "female")), None)
        if "ignore_time_segment_in_scoring" in rest.lower() or speaker.lower() in (
            "inter_segment_gap", "excluded_region"
        ):
            continue
        try:
            out.append(StmSegment(rec, channel, speaker, float(start), float(end), gender, rest))
        except ValueError:
            raise DataError(f"{path}:{lineno}", f"bad times {start!r} {end!r}") from None
    return out


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


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
            recs.to_file(tmp / f"recordings_{name}.jsonl.gz")
            sups.to_file(tmp / f"supervisions_{name}.jsonl.gz")
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


# ---------------------------------------------------------------------------
# Switchboard
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Broadcast News
# ---------------------------------------------------------------------------


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


__all__ = [
    "UNK",
    "Fragments",
    "PreparedCorpus",
    "prepare_bn",
    "prepare_swbd",
    "write_manifests",
    "normalize_with_unk",
    "clean_swbd_token",
    "clean_swbd_text",
    "clean_cts_reference",
    "clean_bn_text",
    "clean_stm_text",
    "parse_bn_sgml",
    "parse_stm",
    "BnEpisode",
    "BnSegment",
    "StmSegment",
]
