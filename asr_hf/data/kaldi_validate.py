"""Validation of Kaldi data directories (Kaldi's ``utils/validate_data_dir.sh``).

:func:`validate_kaldi_dir` checks the tables :mod:`asr_hf.data.kaldi_dir`
writes and reads (format, C-locale order, unique keys, consistent ids and
times); the table reader here is shared with the import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from asr_hf.utils import DataError, Pathlike

#: Seconds a segment may run past the end of its recording before it is an error.
DURATION_TOLERANCE = 0.01
#: At most this many problems of one kind are listed by :func:`validate_kaldi_dir`.
MAX_REPORTED = 10
#: Files :func:`validate_kaldi_dir` requires.
REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


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


__all__ = ["validate_kaldi_dir", "DURATION_TOLERANCE", "MAX_REPORTED", "REQUIRED_FILES"]
