"""Atomic output and stage markers.

Every artifact a later stage trusts is written to a temporary name beside its
final path and renamed into place only when complete, so a crash or a
``Ctrl-C`` never leaves a half-written file or directory behind.

A ``.done`` marker says that the stage that wrote a directory completed.  A
marker may also record the *request* that produced the output (the command
and its options, as JSON): :func:`is_current` is then make's rule plus the
request, so a re-run skips an output only when it was made by the same request
and is newer than every input, and redoes it when an option or an input
changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

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


def output_marker(output: Pathlike) -> Path:
    """The marker of one stage output: ``<dir>/.done`` for a directory, ``.<name>.done`` beside a file."""
    output = Path(output)
    return done_marker(output) if output.is_dir() else done_marker(output.parent, output.name)


def mark_output(output: Pathlike, request: Mapping[str, Any]) -> None:
    """Record that ``output`` (a file or directory) was made by ``request``."""
    with atomic_output(output_marker(output)) as tmp:
        tmp.write_text(json.dumps(_jsonable(request), sort_keys=True) + "\n")


def is_current(outputs: Iterable[Pathlike], request: Mapping[str, Any], inputs: Iterable[Pathlike]) -> bool:
    """True when every output exists, the first one's marker records exactly ``request``, and
    that marker is newer than every input (an input that does not exist makes it not current)."""
    outputs = [Path(o) for o in outputs]
    if not outputs or not all(o.exists() for o in outputs):
        return False
    marker = output_marker(outputs[0])
    try:
        recorded = json.loads(marker.read_text())
        made = marker.stat().st_mtime
    except (OSError, ValueError):  # no marker, or one from before requests were recorded
        return False
    if recorded != _jsonable(request):
        return False
    for path in inputs:
        try:
            if Path(path).stat().st_mtime > made:
                return False
        except OSError:
            return False
    return True


def _jsonable(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists, as it reads back from JSON."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def redo_option(parser: Any, products: Any, ignore: Iterable[str] = ()) -> None:
    """Make an ``asr-hf`` subcommand skip itself when its outputs are current.

    ``products(args)`` returns ``(outputs, inputs)``.  The request recorded beside the first
    output is the command with all its options except ``ignore`` (options such as ``--jobs``
    that do not change the result); ``--force`` redoes the work regardless.
    """
    parser.add_argument("--force", action="store_true", help="redo even when the output is current")
    parser.set_defaults(products=products, request_ignore=tuple(ignore))
