"""Small shared helpers: errors, atomic file output, logging set-up."""

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, done_marker, is_done, mark_done

__all__ = ["DataError", "Pathlike", "atomic_output", "done_marker", "is_done", "mark_done"]
