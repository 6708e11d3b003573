"""Atomic output and stage markers.

Every artifact a later stage trusts is written to a temporary name beside its
final path and renamed into place only when complete, so a crash or a
``Ctrl-C`` never leaves a half-written file or directory behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

Pathlike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_output(path: Pathlike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    The temporary lives in the same directory (same file system) so the final
    ``os.replace`` is atomic.  On an exception it is removed and ``path`` is
    left exactly as it was.

    Args:
        path: the final file or directory.
        is_dir: create a temporary directory instead of a file name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp."
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=_suffixes(path), dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create 0600/0700 entries; give them the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~umask)
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _suffixes(path: Path) -> str:
    # Keep ".jsonl.gz" etc. so libraries that pick a format by suffix still work.
    return "".join(path.suffixes)


def done_marker(directory: Pathlike, name: str = "") -> Path:
    """Path of the ``.done`` marker of a stage output directory."""
    return Path(directory) / (f".{name}.done" if name else ".done")


def is_done(directory: Pathlike, name: str = "") -> bool:
    """True when the stage that writes ``directory`` completed."""
    return done_marker(directory, name).is_file()


def mark_done(directory: Pathlike, name: str = "") -> None:
    """Mark the stage that wrote ``directory`` as complete."""
    marker = done_marker(directory, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
