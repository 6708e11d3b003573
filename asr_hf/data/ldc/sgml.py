"""Readers of the LDC / NIST transcript formats: 1997 Hub4 SGML (``.sgml``) and STM (``.stm``).

They return raw text; :mod:`asr_hf.data.ldc.bn` cleans and normalises it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from asr_hf.data.ldc.common import _TAG, UNK
from asr_hf.utils import DataError, Pathlike

log = logging.getLogger(__name__)


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
