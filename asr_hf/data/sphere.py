"""NIST SPHERE (``.sph``) files described from their header alone.

The LDC releases (Switchboard, Broadcast News) store shorten-compressed
SPHERE audio: the ASCII header is readable without decoding, so recordings
can be described (rate, channels, length) without the ``sph2pipe`` binary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lhotse.audio import AudioSource, Recording

from asr_hf.utils import DataError, Pathlike


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


__all__ = ["read_sphere_header", "sphere_is_compressed", "sphere_recording"]
