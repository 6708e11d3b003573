"""Kaldi data directories: export from lhotse manifests, validation, import back.

Validation lives in :mod:`asr_hf.data.kaldi_validate` (re-exported here), the
SPHERE header reader in :mod:`asr_hf.data.sphere`.

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
from pathlib import Path
from typing import Optional

import soundfile as sf
from lhotse import RecordingSet, SupervisionSet
from lhotse.audio import AudioSource, Recording
from lhotse.supervision import SupervisionSegment

from asr_hf.data.kaldi_validate import (
    DURATION_TOLERANCE,
    _Problems,
    _read_table,
    _speaker_order_problem,
    validate_kaldi_dir,
)
from asr_hf.data.sphere import sphere_is_compressed, sphere_recording
from asr_hf.utils import DataError, Pathlike, atomic_output

log = logging.getLogger(__name__)

#: Side labels of the channels of a multi-channel recording (Switchboard: A, B).
CHANNEL_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
]
