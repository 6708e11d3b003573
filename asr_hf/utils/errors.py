"""Errors raised on bad user input.

A :class:`DataError` always names the offending file or utterance and says what
is wrong with it, so the CLI can print it as one line instead of a traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data (audio, transcript, manifest, lexicon...).

    Args:
        item: the file path or utterance/recording id at fault.
        problem: what is wrong with it, in words.
    """

    def __init__(self, item: str, problem: str) -> None:
        self.item = str(item)
        self.problem = problem
        super().__init__(f"{self.item}: {problem}")
