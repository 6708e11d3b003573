"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker whose parent is killed (``kill -9``, OOM killer,
a cluster job cut at its time limit) can stay blocked on its task queue for good,
holding its memory.  Every pool in asr_hf therefore starts its workers with
:func:`die_with_parent` as initializer: on Linux the kernel sends the worker
SIGKILL when the parent exits (``prctl(PR_SET_PDEATHSIG)``), and a worker whose
parent is already gone when it starts exits at once.  Workers only ever write
under temporary names, so killing them cannot leave a trusted half-written file.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any, Callable, Optional

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: Optional[int] = None) -> None:
    """Pool initializer: make this process die when ``parent_pid`` (its parent) does.

    Args:
        parent_pid: the pid that created the pool (``os.getpid()`` there); if this
            process's parent is no longer it, the parent died before we got here.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (unusual libc): fall back to the pid check
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def pool_kwargs(initializer: Optional[Callable[..., Any]] = None, initargs: tuple = ()) -> dict:
    """``initializer``/``initargs`` for a ``ProcessPoolExecutor`` whose workers die with
    this process, chained before the pool's own ``initializer(*initargs)`` if given."""
    return {"initializer": _init_chain, "initargs": (os.getpid(), initializer, initargs)}


def _init_chain(parent_pid: int, initializer: Optional[Callable[..., Any]], initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)
