"""Kaldi data directories: export from lhotse manifests, validation, import back.

A Kaldi data directory (``data/train`` in a Kaldi recipe) holds plain-text
tables, one ``<key> <value...>`` entry per line, sorted on the key in C-locale
(byte) order with unique keys:

- ``wav.scp``: ``<rec-id> <path>`` or ``<rec-id> <command> |`` (a pipe that
  writes a 16-bit PCM WAV file to stdout);
- ``segments``: ``<utt-id> <rec-id> <start> <end>`` (seconds; optional: when
  absent every recording is one utterance, utt-id = rec-id);
- ``text``: ``<utt-id> <transcript>``;
- ``utt2spk``: ``<utt-id> <spk-id>``;
- ``spk2utt``: ``<spk-id> <utt-id> <utt-id> ...`` (derived from utt2spk);
- optional: ``reco2dur`` (``<rec-id> <seconds>``), ``utt2dur`` (``<utt-id>
  <seconds>``), ``spk2gender`` (``<spk-id> m|f``), ``reco2file_and_channel``
  (``<rec-id> <file-id> <channel>`` for CTM scoring against an STM:
  ``sw02001-A sw02001 A``, ``h4e_97 h4e_97 1``).

Kaldi also requires utt2spk to stay sorted when sorted on the speaker first,
which holds when speaker ids are prefixes of utterance ids
(``sw02001-A_000098-001156`` is spoken by ``sw02001-A``).

Kaldi recordings are single-channel: a channel of a multi-channel lhotse
recording becomes its own Kaldi recording ``<rec-id>-A``, ``<rec-id>-B``, ...
(channel 0, 1, ...: the Switchboard convention), read through a ``sox ...
remix N`` pipe (``sph2pipe -c N`` for shorten-compressed SPHERE files, which sox
cannot decode).  Importing such a directory gives one single-channel recording
per side.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import soundfile as sf
from lhotse import RecordingSet, SupervisionSet
from lhotse.audio import AudioSource, Recording
from lhotse.supervision import SupervisionSegment

from asr_hf.utils import DataError, Pathlike, atomic_output

log = logging.getLogger(__name__)

#: Seconds a segment may run past the end of its recording before it is an error.
DURATION_TOLERANCE = 0.01
#: At most this many problems of one kind are listed by :func:`validate_kaldi_dir`.
MAX_REPORTED = 10
#: Files :func:`validate_kaldi_dir` requires.
REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
#: Side labels of the channels of a multi-channel recording (Switchboard: A, B).
CHANNEL_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------
# NIST SPHERE headers
# ---------------------------------------------------------------------------


def read_sphere_header(path: Pathlike) -> dict[str, str | int | float]:
    """Read the ASCII header of a NIST SPHERE (``.sph``) file.

    The header is readable even when the samples are shorten-compressed (the
    LDC Switchboard and Broadcast News releases), so recordings can be described
    without decoding the audio.

    Returns:
        The header fields, e.g. ``{"channel_count": 2, "sample_rate": 8000,
        "sample_count": 2400000, "sample_coding": "ulaw,embedded-shorten-v2.00"}``.

    Raises:
        DataError: when the file is missing or not a SPHERE file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(1024)
            lines = head.split(b"\n")
            if len(lines) < 2 or lines[0].strip() != b"NIST_1A":
                raise DataError(str(path), "not a NIST SPHERE file (no 'NIST_1A' magic)")
            size = int(lines[1].strip())
            if size > len(head):
                head += f.read(size - len(head))
    except FileNotFoundError:
        raise DataError(str(path), "audio file not found") from None
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(str(path), "bad SPHERE header size") from None
    fields: dict[str, str | int | float] = {}
    for raw in head[:size].split(b"\n")[2:]:
        line = raw.decode("latin-1").strip()
        if line == "end_head":
            return fields
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].startswith("-"):
            continue
        key, kind, value = parts
        try:
            fields[key] = int(value) if kind == "-i" else float(value) if kind == "-r" else value
        except ValueError:
            raise DataError(str(path), f"bad SPHERE header field {line!r}") from None
    raise DataError(str(path), "SPHERE header has no 'end_head'")


def sphere_is_compressed(path: Pathlike) -> bool:
    """True when a SPHERE file's samples are shorten-compressed (sox cannot read them)."""
    coding = str(read_sphere_header(path).get("sample_coding", "pcm"))
    return "shorten" in coding.lower()


def sphere_recording(path: Pathlike, recording_id: Optional[str] = None) -> Recording:
    """Describe a SPHERE file as a lhotse :class:`Recording` from its header alone.

    lhotse's own ``Recording.from_file`` decodes the whole file through the
    ``sph2pipe`` binary to learn its duration; this reads the header only.

    Args:
        path: the ``.sph`` file (stored as an absolute path).
        recording_id: defaults to the file name without suffix.
    """
    path = Path(path).absolute()
    header = read_sphere_header(path)
    try:
        channels = int(header.get("channel_count", 1))
        rate = int(header["sample_rate"])
        count = int(header["sample_count"])
    except KeyError as exc:
        raise DataError(str(path), f"SPHERE header lacks {exc.args[0]!r}") from None
    if rate <= 0 or count <= 0 or channels <= 0:
        raise DataError(str(path), f"SPHERE header describes no audio ({header})")
    return Recording(
        id=recording_id or path.stem,
        sources=[AudioSource(type="file", channels=list(range(channels)), source=str(path))],
        sampling_rate=rate,
        num_samples=count,
        duration=count / rate,
    )


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def kaldi_recording_id(recording: Recording, channel: int) -> str:
    """The Kaldi recording id of one channel: the lhotse id, plus ``-A``/``-B``... when multi-channel."""
    if recording.num_channels == 1:
        return recording.id
    if not 0 <= channel < len(CHANNEL_LABELS):
        raise DataError(recording.id, f"channel {channel} has no Kaldi side label")
    return f"{recording.id}-{CHANNEL_LABELS[channel]}"


def _resample_target(recording: Recording) -> Optional[int]:
    """Target rate of the recording's Resample transform; other transforms are rejected."""
    target = None
    for transform in recording.transforms or []:
        spec = transform.to_dict() if hasattr(transform, "to_dict") else dict(transform)
        if spec.get("name") != "Resample":
            raise DataError(
                recording.id, f"transform {spec.get('name')!r} cannot be written to wav.scp"
            )
        target = int(spec["kwargs"]["target_sampling_rate"])
    return target


def _is_plain_kaldi_wav(path: str) -> bool:
    """True when Kaldi can read the file itself: 16-bit PCM RIFF WAV, no odd characters in the name."""
    if not path.lower().endswith(".wav") or any(c.isspace() for c in path) or path.endswith("|"):
        return False
    try:
        info = sf.info(path)
    except RuntimeError:
        return False
    return info.format == "WAV" and info.subtype == "PCM_16"


def wav_scp_entry(recording: Recording, channel: int) -> str:
    """The ``wav.scp`` value that yields one channel of ``recording`` as 16-bit PCM WAV.

    A plain path when Kaldi can read the file directly (single-channel 16-bit
    PCM WAV, no resampling); otherwise a pipe: ``sph2pipe -f wav -p -c N`` for
    shorten-compressed SPHERE files, ``sox ... remix N`` for everything else.

    Raises:
        DataError: for audio that cannot be expressed in ``wav.scp`` (URLs,
            in-memory audio, transforms other than resampling) or missing files.
    """
    source = next((s for s in recording.sources if channel in s.channels), None)
    if source is None:
        raise DataError(recording.id, f"has no audio source for channel {channel}")
    index = source.channels.index(channel)
    multi = len(source.channels) > 1
    rate = _resample_target(recording)
    effects = (f" remix {index + 1}" if multi else "") + (f" rate {rate}" if rate else "")
    to_wav = "-t wav -b 16 -e signed-integer -"
    if source.type == "file":
        path = os.path.abspath(source.source)
        if not os.path.isfile(path):
            raise DataError(recording.id, f"audio file not found: {path}")
        if path.lower().endswith(".sph") and sphere_is_compressed(path):
            cmd = f"sph2pipe -f wav -p{f' -c {index + 1}' if multi else ''} {shlex.quote(path)}"
            if rate:
                cmd += f" | sox -t wav - {to_wav} rate {rate}"
            return cmd + " |"
        if not effects and _is_plain_kaldi_wav(path):
            return path
        return f"sox {shlex.quote(path)} {to_wav}{effects} |"
    if source.type == "command":
        cmd = str(source.source).strip()
        if effects:
            cmd += f" | sox -t wav - {to_wav}{effects}"
        return cmd + " |"
    raise DataError(recording.id, f"audio source of type {source.type!r} cannot be written to wav.scp")


def _fmt_time(seconds: float) -> str:
    """Seconds with at most 6 decimals and no trailing zeros (``12.5``, ``0``)."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _check_id(item: str, what: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataError(item, f"{what} {value!r} is empty or contains whitespace")


def _speaker_order_problem(utt2spk: dict[str, str]) -> Optional[tuple[str, str]]:
    """First utterance (in utt-id order) whose speaker sorts before the previous one's.

    Sorting on utt-id and sorting on (spk-id, utt-id) agree exactly when the
    speakers are non-decreasing along the utt-id order (Kaldi's ``sort -k2`` check).
    """
    prev = None
    for utt in sorted(utt2spk):
        spk = utt2spk[utt]
        if prev is not None and spk < prev:
            return utt, spk
        prev = spk
    return None


_GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}


def export_kaldi_dir(
    recordings: RecordingSet,
    supervisions: SupervisionSet,
    out_dir: Pathlike,
    *,
    add_speaker_prefix: bool = False,
    write_durations: bool = True,
) -> Path:
    """Write a Kaldi data directory for ``supervisions`` (one utterance each).

    Writes ``wav.scp``, ``segments``, ``text``, ``utt2spk``, ``spk2utt``,
    ``reco2file_and_channel``, with ``write_durations`` also
    ``reco2dur``/``utt2dur``; ``spk2gender`` when
    every supervision has a male/female gender.  Only recordings (channels)
    that carry a supervision are listed.  The directory is validated and then
    renamed into place, so a failure leaves ``out_dir`` as it was.

    Args:
        recordings: the recordings the supervisions refer to.
        supervisions: one Kaldi utterance each; ids, speakers and non-empty
            texts required, single channel.
        out_dir: the data directory (replaced if it exists).
        add_speaker_prefix: prefix ``<speaker>-`` to utterance ids that do not
            already start with their speaker id (Kaldi's sorting requirement).
        write_durations: also write ``reco2dur`` and ``utt2dur``.

    Returns:
        ``out_dir`` as a :class:`Path`.

    Raises:
        DataError: naming the supervision/recording at fault: unknown recording,
            duplicate or malformed id, missing speaker, empty transcript, segment
            outside its recording, ids that do not sort consistently with speakers.
    """
    recs: dict[str, Recording] = {}
    for rec in recordings:
        if rec.id in recs:
            raise DataError(rec.id, "duplicate recording id")
        _check_id(rec.id, "recording id", rec.id)
        recs[rec.id] = rec

    wav: dict[str, str] = {}
    reco2file: dict[str, str] = {}
    reco2dur: dict[str, float] = {}
    kaldi_rec_owner: dict[str, tuple[str, int]] = {}
    segments: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    utt2dur: dict[str, float] = {}
    genders: dict[str, Optional[str]] = {}
    for sup in supervisions:
        _check_id(sup.id, "supervision id", sup.id)
        rec = recs.get(sup.recording_id)
        if rec is None:
            raise DataError(sup.id, f"refers to unknown recording {sup.recording_id!r}")
        if sup.speaker is None:
            raise DataError(sup.id, "has no speaker")
        _check_id(sup.id, "speaker id", sup.speaker)
        words = " ".join((sup.text or "").split())
        if not words:
            raise DataError(sup.id, "empty transcript")
        channels = sup.channel if isinstance(sup.channel, list) else [sup.channel]
        if len(channels) != 1:
            raise DataError(sup.id, f"spans channels {channels}; Kaldi utterances are single-channel")
        channel = channels[0]
        if channel not in rec.channel_ids:
            raise DataError(sup.id, f"channel {channel} not in recording {rec.id!r}")
        if sup.start < 0 or sup.duration <= 0:
            raise DataError(sup.id, f"bad segment: start {sup.start}, duration {sup.duration}")
        if sup.end > rec.duration + DURATION_TOLERANCE:
            raise DataError(
                sup.id, f"segment ends at {sup.end:.3f}s, after recording {rec.id!r} ({rec.duration:.3f}s)"
            )
        utt = sup.id
        if add_speaker_prefix and not utt.startswith(sup.speaker):
            utt = f"{sup.speaker}-{utt}"
        if utt in utt2spk:
            raise DataError(utt, "duplicate utterance id")
        krec = kaldi_recording_id(rec, channel)
        owner = kaldi_rec_owner.setdefault(krec, (rec.id, channel))
        if owner != (rec.id, channel):
            raise DataError(krec, f"Kaldi recording id is used by {owner} and {(rec.id, channel)}")
        if krec not in wav:
            wav[krec] = wav_scp_entry(rec, channel)
            reco2file[krec] = f"{rec.id} {CHANNEL_LABELS[channel] if rec.num_channels > 1 else 1}"
            reco2dur[krec] = rec.duration
        end = min(sup.end, rec.duration)
        segments[utt] = f"{krec} {_fmt_time(sup.start)} {_fmt_time(end)}"
        text[utt] = words
        utt2spk[utt] = sup.speaker
        utt2dur[utt] = end - sup.start
        gender = _GENDERS.get(str(sup.gender).lower()) if sup.gender else None
        if genders.setdefault(sup.speaker, gender) != gender:
            genders[sup.speaker] = None  # inconsistent: leave the speaker's gender unknown
    if not utt2spk:
        raise DataError(str(out_dir), "no supervisions to export")
    bad = _speaker_order_problem(utt2spk)
    if bad is not None:
        raise DataError(
            bad[0],
            f"utterance ids do not sort consistently with speaker ids (speaker {bad[1]!r}); "
            "make speaker ids prefixes of utterance ids (add_speaker_prefix=True)",
        )
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)

    out_dir = Path(out_dir)
    with atomic_output(out_dir, is_dir=True) as tmp:
        _write_table(tmp / "wav.scp", wav)
        _write_table(tmp / "segments", segments)
        _write_table(tmp / "text", text)
        _write_table(tmp / "utt2spk", utt2spk)
        _write_table(tmp / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
        _write_table(tmp / "reco2file_and_channel", reco2file)
        if write_durations:
            _write_table(tmp / "reco2dur", {k: _fmt_time(v) for k, v in reco2dur.items()})
            _write_table(tmp / "utt2dur", {k: _fmt_time(v) for k, v in utt2dur.items()})
        if all(g is not None for g in genders.values()):
            _write_table(tmp / "spk2gender", genders)  # type: ignore[arg-type]
        validate_kaldi_dir(tmp, check_audio_files=False, raise_on_error=True)
    log.info("wrote Kaldi data dir %s: %d utterances, %d recordings, %d speakers",
             out_dir, len(utt2spk), len(wav), len(spk2utt))
    return out_dir


def _write_table(path: Path, table: dict[str, str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for key in sorted(table):
            f.write(f"{key} {table[key]}\n")


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@dataclass
class _Entry:
    line: int
    key: str
    rest: str  # everything after the key, whitespace-trimmed


class _Problems:
    """Collects ``(item, problem)`` pairs, at most :data:`MAX_REPORTED` per kind."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, item: str, problem: str) -> None:
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        if n <= MAX_REPORTED:
            self.items.append((item, problem))

    def finish(self) -> list[tuple[str, str]]:
        for kind, n in self._counts.items():
            if n > MAX_REPORTED:
                self.items.append((kind, f"... and {n - MAX_REPORTED} more problems of this kind"))
        return self.items


def _read_table(
    path: Path, problems: _Problems, *, allow_empty_value: bool = False
) -> list[_Entry]:
    """Read a Kaldi table, reporting encoding, blank/empty lines, order and duplicate keys."""
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(f"{name}:encoding", str(path), f"not valid UTF-8 (byte {exc.start})")
        content = data.decode("utf-8", errors="replace")
    if content and not content.endswith("\n"):
        problems.add(f"{name}:newline", str(path), "last line has no newline")
    lines = content.split("\n") if content else []
    if content.endswith("\n"):
        lines.pop()
    entries: list[_Entry] = []
    for lineno, line in enumerate(lines, 1):
        if "\r" in line:
            problems.add(f"{name}:cr", f"{path}:{lineno}", "carriage return (DOS line ending)")
            line = line.replace("\r", "")
        parts = line.split(None, 1)
        if not parts:
            problems.add(f"{name}:blank", f"{path}:{lineno}", "blank line")
            continue
        if line[0].isspace():
            problems.add(f"{name}:indent", f"{path}:{lineno}", f"leading whitespace before {parts[0]!r}")
        rest = parts[1].strip() if len(parts) > 1 else ""
        if not rest and not allow_empty_value:
            problems.add(f"{name}:empty", parts[0], f"has no value in {name} (line {lineno})")
        entries.append(_Entry(lineno, parts[0], rest))
    seen: dict[str, int] = {}
    prev: Optional[_Entry] = None
    for e in entries:
        if e.key in seen:
            problems.add(f"{name}:dup", e.key, f"duplicate key in {name} (lines {seen[e.key]} and {e.line})")
        else:
            seen[e.key] = e.line
        if prev is not None and e.key < prev.key:
            problems.add(
                f"{name}:sort", e.key,
                f"{name} is not sorted (C locale): line {e.line} comes after {prev.key!r} (line {prev.line})",
            )
        prev = e
    return entries


def _compare_keys(
    problems: _Problems, kind: str, have: Iterable[str], want: Iterable[str], have_name: str, want_name: str
) -> None:
    have_set, want_set = set(have), set(want)
    for key in sorted(want_set - have_set):
        problems.add(kind, key, f"in {want_name} but missing from {have_name}")
    for key in sorted(have_set - want_set):
        problems.add(kind, key, f"in {have_name} but missing from {want_name}")


def _parse_float(problems: _Problems, kind: str, item: str, text: str, what: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        problems.add(kind, item, f"{what} {text!r} is not a number")
        return None


def validate_kaldi_dir(
    data_dir: Pathlike, *, check_audio_files: bool = True, raise_on_error: bool = False
) -> list[str]:
    """Check a Kaldi data directory the way Kaldi's ``utils/validate_data_dir.sh`` does.

    Checks: required files present (``wav.scp``, ``text``, ``utt2spk``,
    ``spk2utt``); every table UTF-8, newline-terminated, without blank lines,
    sorted in C order on unique keys; utt2spk lines of two fields and sorted
    consistently when sorted on the speaker (speaker-prefixed utterance ids);
    spk2utt equal to the inversion of utt2spk; the same utterances in text,
    utt2spk, segments and utt2dur; no empty transcripts; segments of four fields
    with ``0 <= start < end`` (``end`` may be ``-1``: to the end of the file),
    within ``reco2dur`` when known, on recordings of wav.scp, and every wav.scp
    recording used; without segments the utterances are the recordings;
    reco2dur/utt2dur positive; spk2gender ``m``/``f`` for every speaker;
    reco2file_and_channel of three fields for the wav.scp recordings; with
    ``check_audio_files`` the plain paths of wav.scp exist.

    Args:
        data_dir: the data directory.
        check_audio_files: check that the plain files of wav.scp exist.
        raise_on_error: raise the first problem as a :class:`DataError`
            instead of returning the list.

    Returns:
        Problems, each ``"<item>: <problem>"`` naming the utterance, speaker,
        recording or file at fault; empty when the directory is valid.

    Raises:
        DataError: when ``data_dir`` is not a directory, or with ``raise_on_error``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(str(data_dir), "Kaldi data directory not found")
    problems = _Problems()
    for name in REQUIRED_FILES:
        if not (data_dir / name).is_file():
            problems.add("missing", str(data_dir / name), "required file is missing")
    tables = {
        name: _read_table(data_dir / name, problems, allow_empty_value=(name == "text"))
        for name in ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "reco2dur", "utt2dur", "spk2gender",
                     "reco2file_and_channel")
    }
    wav = {e.key: e.rest for e in tables["wav.scp"]}
    if check_audio_files:
        for rec, value in wav.items():
            if value and not value.endswith("|") and not Path(value).is_file():
                problems.add("wav.scp:file", rec, f"audio file not found: {value}")

    utt2spk: dict[str, str] = {}
    for e in tables["utt2spk"]:
        fields = e.rest.split()
        if len(fields) != 1:
            problems.add("utt2spk:fields", e.key, f"utt2spk line {e.line} must have 2 fields")
            continue
        utt2spk.setdefault(e.key, fields[0])
    bad = _speaker_order_problem(utt2spk)
    if bad is not None:
        problems.add(
            "utt2spk:spkorder", bad[0],
            f"utt2spk is not sorted when sorted on speaker id first (speaker {bad[1]!r}); "
            "make speaker ids prefixes of utterance ids",
        )

    if (data_dir / "spk2utt").is_file():
        expected: dict[str, list[str]] = {}
        for utt in sorted(utt2spk):
            expected.setdefault(utt2spk[utt], []).append(utt)
        got = {e.key: e.rest.split() for e in tables["spk2utt"]}
        for spk in sorted(set(expected) | set(got)):
            if spk not in got:
                problems.add("spk2utt", spk, "speaker of utt2spk missing from spk2utt")
            elif spk not in expected:
                problems.add("spk2utt", spk, "speaker in spk2utt has no utterance in utt2spk")
            elif got[spk] != expected[spk]:
                diff = sorted(set(got[spk]) ^ set(expected[spk])) or got[spk]
                problems.add(
                    "spk2utt", spk,
                    f"spk2utt does not match utt2spk (utterances {' '.join(diff[:5])})",
                )

    text = {e.key: e.rest for e in tables["text"]}
    for e in tables["text"]:
        if not e.rest:
            problems.add("text:empty", e.key, f"empty transcript in text (line {e.line})")
    if tables["text"] or (data_dir / "text").is_file():
        _compare_keys(problems, "text:utts", text, utt2spk, "text", "utt2spk")

    reco2dur: dict[str, float] = {}
    for e in tables["reco2dur"]:
        dur = _parse_float(problems, "reco2dur", e.key, e.rest, "duration")
        if dur is not None and dur <= 0:
            problems.add("reco2dur", e.key, f"non-positive duration {e.rest} in reco2dur")
        if dur is not None:
            reco2dur[e.key] = dur
    if (data_dir / "reco2dur").is_file():
        _compare_keys(problems, "reco2dur:recs", reco2dur, wav, "reco2dur", "wav.scp")

    if (data_dir / "segments").is_file():
        seg_utts, seg_recs = [], set()
        for e in tables["segments"]:
            fields = e.rest.split()
            seg_utts.append(e.key)
            if len(fields) != 3:
                problems.add("segments:fields", e.key, f"segments line {e.line} must have 4 fields")
                continue
            rec = fields[0]
            seg_recs.add(rec)
            start = _parse_float(problems, "segments:time", e.key, fields[1], "start time")
            end = _parse_float(problems, "segments:time", e.key, fields[2], "end time")
            if start is None or end is None:
                continue
            if start < 0:
                problems.add("segments:time", e.key, f"negative start time {fields[1]}")
            elif end != -1 and end <= start:
                problems.add("segments:time", e.key, f"segment end {fields[2]} is not after start {fields[1]}")
            elif rec in reco2dur and end > reco2dur[rec] + DURATION_TOLERANCE:
                problems.add(
                    "segments:range", e.key,
                    f"segment ends at {fields[2]}s, after recording {rec!r} ({reco2dur[rec]}s)",
                )
            if rec not in wav:
                problems.add("segments:rec", e.key, f"recording {rec!r} is not in wav.scp")
        _compare_keys(problems, "segments:utts", seg_utts, utt2spk, "segments", "utt2spk")
        for rec in sorted(set(wav) - seg_recs):
            problems.add("segments:unused", rec, "recording in wav.scp has no segment")
    else:
        _compare_keys(problems, "wav.scp:utts", wav, utt2spk, "wav.scp", "utt2spk (no segments file)")

    if (data_dir / "utt2dur").is_file():
        utt2dur = {}
        for e in tables["utt2dur"]:
            dur = _parse_float(problems, "utt2dur", e.key, e.rest, "duration")
            if dur is not None and dur <= 0:
                problems.add("utt2dur", e.key, f"non-positive duration {e.rest} in utt2dur")
            utt2dur[e.key] = dur
        _compare_keys(problems, "utt2dur:utts", utt2dur, utt2spk, "utt2dur", "utt2spk")

    if (data_dir / "spk2gender").is_file():
        genders = {e.key: e.rest for e in tables["spk2gender"]}
        for spk, gender in genders.items():
            if gender not in ("m", "f"):
                problems.add("spk2gender", spk, f"gender {gender!r} in spk2gender is not 'm' or 'f'")
        for spk in sorted(set(utt2spk.values()) - set(genders)):
            problems.add("spk2gender:spks", spk, "speaker missing from spk2gender")

    if (data_dir / "reco2file_and_channel").is_file():
        r2f = {}
        for e in tables["reco2file_and_channel"]:
            if len(e.rest.split()) != 2:
                problems.add("reco2file", e.key, f"reco2file_and_channel line {e.line} must have 3 fields")
            r2f[e.key] = e.rest
        _compare_keys(problems, "reco2file:recs", r2f, wav, "reco2file_and_channel", "wav.scp")

    found = problems.finish()
    if found and raise_on_error:
        item, problem = found[0]
        more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
        raise DataError(item, f"{problem} [in {data_dir}]{more}")
    return [f"{item}: {problem}" for item, problem in found]


# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------


def _probe_command(rec_id: str, cmd: str) -> tuple[int, int, int]:
    """Run a wav.scp pipe and return ``(sampling_rate, num_samples, num_channels)`` of its WAV output."""
    proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise DataError(rec_id, f"wav.scp command failed (exit {proc.returncode}): {err[-1] if err else cmd}")
    try:
        data, rate = sf.read(io.BytesIO(proc.stdout), dtype="int16", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DataError(rec_id, f"wav.scp command did not write a WAV file: {exc}") from None
    return rate, data.shape[0], data.shape[1]


def _recording_from_wav_scp(rec_id: str, value: str, data_dir: Path) -> Recording:
    if value.endswith("|"):
        cmd = value[:-1].strip()
        rate, num_samples, channels = _probe_command(rec_id, cmd)
        if num_samples == 0:
            raise DataError(rec_id, "wav.scp command wrote no samples")
        return Recording(
            id=rec_id,
            sources=[AudioSource(type="command", channels=list(range(channels)), source=cmd)],
            sampling_rate=rate,
            num_samples=num_samples,
            duration=num_samples / rate,
        )
    path = Path(value)
    if not path.is_file():
        raise DataError(rec_id, f"audio file not found: {value} (wav.scp of {data_dir})")
    if path.suffix.lower() == ".sph":
        return sphere_recording(path, rec_id)
    try:
        return Recording.from_file(path.absolute(), recording_id=rec_id)
    except Exception as exc:  # lhotse wraps backend errors in several types
        raise DataError(rec_id, f"cannot read audio {value}: {exc}") from None


def import_kaldi_dir(data_dir: Pathlike, *, validate: bool = True) -> tuple[RecordingSet, SupervisionSet]:
    """Read a Kaldi data directory into lhotse manifests.

    ``wav.scp`` may hold plain paths (read by lhotse; SPHERE files through their
    header) or pipes ending in ``|``, which are run once to learn the sampling
    rate and length and become lhotse ``command`` audio sources.  With a
    ``segments`` file each segment is one supervision; without, each recording
    is one utterance with the recording's id.  Speakers come from utt2spk,
    genders from spk2gender; all supervisions are on channel 0.

    Args:
        data_dir: the Kaldi data directory.
        validate: run :func:`validate_kaldi_dir` first and raise its first problem.

    Returns:
        ``(recordings, supervisions)``, sorted by id.

    Raises:
        DataError: on an invalid directory, a missing audio file or a failing pipe.
    """
    data_dir = Path(data_dir)
    if validate:
        validate_kaldi_dir(data_dir, raise_on_error=True)
    elif not data_dir.is_dir():
        raise DataError(str(data_dir), "Kaldi data directory not found")
    problems = _Problems()
    if not (data_dir / "wav.scp").is_file():
        raise DataError(str(data_dir / "wav.scp"), "required file is missing")
    wav = {e.key: e.rest for e in _read_table(data_dir / "wav.scp", problems)}
    text = {e.key: e.rest for e in _read_table(data_dir / "text", problems, allow_empty_value=True)}
    utt2spk = {e.key: e.rest for e in _read_table(data_dir / "utt2spk", problems)}
    genders = {e.key: e.rest for e in _read_table(data_dir / "spk2gender", problems)}

    recs = {rec_id: _recording_from_wav_scp(rec_id, value, data_dir) for rec_id, value in sorted(wav.items())}
    sups: list[SupervisionSegment] = []
    if (data_dir / "segments").is_file():
        rows = [(e.key, e.rest.split()) for e in _read_table(data_dir / "segments", problems)]
    else:
        rows = [(rec_id, [rec_id, "0", "-1"]) for rec_id in sorted(recs)]
    for utt, fields in rows:
        if len(fields) != 3 or fields[0] not in recs:
            raise DataError(utt, f"bad segments entry {' '.join(fields)!r} in {data_dir}")
        rec = recs[fields[0]]
        start = float(fields[1])
        end = rec.duration if fields[2] == "-1" else float(fields[2])
        if end > rec.duration + DURATION_TOLERANCE or start >= end:
            raise DataError(
                utt, f"segment {fields[1]}-{fields[2]}s lies outside recording {rec.id!r} ({rec.duration:.3f}s)"
            )
        end = min(end, rec.duration)
        spk = utt2spk.get(utt)
        sups.append(
            SupervisionSegment(
                id=utt,
                recording_id=rec.id,
                start=start,
                duration=round(end - start, 6),
                channel=0,
                text=text.get(utt),
                speaker=spk,
                gender=genders.get(spk) if spk else None,
            )
        )
    sups.sort(key=lambda s: s.id)
    log.info("imported Kaldi data dir %s: %d utterances, %d recordings", data_dir, len(sups), len(recs))
    return RecordingSet.from_recordings(recs.values()), SupervisionSet.from_segments(sups)


__all__ = [
    "export_kaldi_dir",
    "import_kaldi_dir",
    "validate_kaldi_dir",
    "wav_scp_entry",
    "kaldi_recording_id",
    "read_sphere_header",
    "sphere_is_compressed",
    "sphere_recording",
]
