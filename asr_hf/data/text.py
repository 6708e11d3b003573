"""Transcript normalisation and sentence selection.

Both the synthetic corpora and the LDC corpora go through :func:`normalize_text`
so that every transcript, LM text and lexicon lookup sees the same form, the
form of Broadcast News / Switchboard training transcripts in Kaldi recipes:
lower case, no punctuation, apostrophes kept inside words (``don't``), numbers,
currency and percentages spelled out, hyphenated compounds split into words.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from asr_hf.utils.io import Pathlike

log = logging.getLogger(__name__)

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int) -> str:
    """Spell a non-negative integer (< 10^12) the way it is read aloud.

    >>> number_to_words(2047)
    'two thousand forty seven'
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for scale, name in _SCALES:
        if n >= scale:
            if n >= scale * 1000:
                break
            high, rest = divmod(n, scale)
            return number_to_words(high) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise ValueError(f"number too large to spell: {n}")


def year_to_words(n: int) -> str:
    """Read a year the usual way: 1984 -> nineteen eighty four, 1900 -> nineteen hundred."""
    if 1100 <= n <= 1999 or 2010 <= n <= 2099:
        high, low = divmod(n, 100)
        if low == 0:
            return number_to_words(high) + " hundred"
        return number_to_words(high) + (" oh " + _ONES[low] if low < 10 else " " + number_to_words(low))
    return number_to_words(n)


def ordinal_to_words(n: int) -> str:
    """1 -> first, 22 -> twenty second, 40 -> fortieth."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _spell_number_token(tok: str) -> str:
    """Spell one numeric token (digits with optional commas / decimal point)."""
    tok = tok.replace(",", "")
    if "." in tok:
        whole, frac = tok.split(".", 1)
        head = number_to_words(int(whole)) if whole else "zero"
        return head + " point " + " ".join(_ONES[int(d)] for d in frac if d.isdigit())
    n = int(tok)
    if (len(tok) > 1 and tok.startswith("0")) or n >= 10**12:  # digit by digit ("007", ids)
        return " ".join(_ONES[int(d)] for d in tok)
    if len(tok) == 4 and 1100 <= n <= 2099:
        return year_to_words(n)
    return number_to_words(n)


_NUM = r"\d[\d,]*(?:\.\d+)?"
_RE_CURRENCY = re.compile(r"\$(" + _NUM + r")(\s+(?:thousand|million|billion|trillion)\b)?")
_RE_PERCENT = re.compile(r"(" + _NUM + r")\s*%")
_RE_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_DECADE = re.compile(r"\b(\d{2,4})'?s\b")
_RE_NUMBER = re.compile(_NUM)
_RE_ABBREV = {
    r"\bmr\.": "mister", r"\bmrs\.": "missus", r"\bdr\.": "doctor", r"\bst\.": "saint",
    r"\bvs\.": "versus", r"\bmt\.": "mount", r"\bjr\.": "junior", r"\betc\.": "et cetera", r"\be\.g\.": "for example",
    r"\bi\.e\.": "that is", r"&": " and ", r"\+": " plus ", r"=": " equals ", r"@": " at ",
}  # fmt: skip


def _plural_number(words: str) -> str:
    # "nineteen sixty" -> "nineteen sixties", "eighty" -> "eighties"
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return (head + " " + last).strip()


def normalize_text(text: str) -> str:
    """Normalise one transcript or sentence to BN/SWB training-transcript form.

    Returns the normalised words joined by single spaces (possibly empty).
    """
    t = text.lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for pat, rep in _RE_ABBREV.items():
        t = re.sub(pat, rep, t)
    t = _RE_CURRENCY.sub(
        lambda m: " " + _spell_number_token(m.group(1)) + (m.group(2) or "") + " dollars ", t
    )
    t = _RE_PERCENT.sub(lambda m: " " + _spell_number_token(m.group(1)) + " percent ", t)
    t = _RE_ORDINAL.sub(lambda m: " " + ordinal_to_words(int(m.group(1))) + " ", t)
    t = _RE_DECADE.sub(lambda m: " " + _plural_number(_spell_number_token(m.group(1))) + " ", t)
    t = _RE_NUMBER.sub(lambda m: " " + _spell_number_token(m.group(0)) + " ", t)
    # Hyphens, slashes and other separators split words; apostrophes survive only inside words.
    t = re.sub(r"[^a-z' ]+", " ", t)
    t = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", t)
    return " ".join(t.split())


_RE_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(paragraph: str) -> list[str]:
    """Split running text into sentences at ``. ! ?`` followed by a capital or digit."""
    flat = " ".join(paragraph.split())
    return [s.strip() for s in _RE_SENTENCE_END.split(flat) if s.strip()]


# Fortune databases that are not prose (pictures, code, foreign text).
FORTUNE_SKIP = frozenset({"art", "ascii-art", "perl", "translate-me", "debian", "linux", "linuxcookie"})


def read_fortunes(directory: Pathlike = "/usr/share/games/fortunes") -> Iterator[str]:
    """Yield the prose paragraphs of Debian's fortune databases (attributions dropped)."""
    directory = Path(directory)
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and not p.suffix and p.name not in FORTUNE_SKIP
    )
    if not files:
        raise FileNotFoundError(f"no fortune files in {directory} (install Debian's 'fortunes' package)")
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            lines = []
            for line in entry.splitlines():
                stripped = line.strip()
                if stripped.startswith("--") or stripped.startswith("-- "):
                    break  # attribution follows
                lines.append(stripped)
            para = " ".join(lines)
            if para:
                yield para


def select_sentences(
    paragraphs: Iterable[str],
    vocabulary: Optional[set[str]] = None,
    min_words: int = 4,
    max_words: int = 20,
) -> list[str]:
    """Normalise, filter and de-duplicate sentences (first occurrence order kept).

    A sentence is kept when it has ``min_words..max_words`` words, every word
    is in ``vocabulary`` (when given) and it had no characters the normaliser
    could not read (e.g. code or foreign scripts).
    """
    seen: set[str] = set()
    out: list[str] = []
    for para in paragraphs:
        for raw in split_sentences(para):
            if re.search(r"[^\x20-\x7e]", raw) or re.search(r"[{}<>\\|_#~^*]", raw):
                continue
            sent = normalize_text(raw)
            words = sent.split()
            if not (min_words <= len(words) <= max_words) or sent in seen:
                continue
            if vocabulary is not None and any(w not in vocabulary for w in words):
                continue
            seen.add(sent)
            out.append(sent)
    return out


def split_disjoint(
    items: Sequence[str], fractions: dict[str, float], seed: int
) -> dict[str, list[str]]:
    """Shuffle deterministically and split into disjoint named parts by fraction.

    The last part takes the remainder, so every item lands in exactly one part.
    """
    import random

    order = list(items)
    random.Random(seed).shuffle(order)
    out: dict[str, list[str]] = {}
    start = 0
    names = list(fractions)
    for i, name in enumerate(names):
        end = len(order) if i == len(names) - 1 else start + int(round(fractions[name] * len(order)))
        out[name] = order[start:end]
        start = end
    return out


def split_held_out(
    sentences: Sequence[str], sizes: dict[str, int], seed: int, max_oov_rate: Optional[float] = None
) -> dict[str, list[str]]:
    """Draw held-out sets of ``sizes[name]`` sentences; the rest is ``"train"``.

    Sentences are visited in a seeded shuffle and dealt round-robin to the
    held-out sets that still have room.  With ``max_oov_rate``, a sentence is
    passed over (it goes to training) when taking it would lift any held-out
    set's rate of running words that no longer occur in the training sentences
    above that rate -- the out-of-vocabulary rate against a vocabulary made
    from the training text.  Real test sets are fixed and the vocabulary is
    grown from far more text than the acoustic transcripts; here the text is
    small and the test is drawn instead, to the same effect (BN with 64k words:
    about 1% OOV).  ``None`` draws uniformly, as :func:`split_disjoint`.

    Returns the parts in order of ``sizes`` then ``"train"``; every sentence lands
    in exactly one.  A set comes out short only when the sentences run out.
    """
    order = list(sentences)
    random.Random(seed).shuffle(order)
    names = list(sizes)
    parts: dict[str, list[str]] = {name: [] for name in names}
    train: list[str] = []
    left = Counter(w for s in order for w in s.split())  # word counts outside held-out sets
    held = {name: Counter() for name in names}  # held-out word counts per set
    tokens = dict.fromkeys(names, 0)
    oov = dict.fromkeys(names, 0)
    turn = 0
    for sent in order:
        open_sets = [n for n in names if len(parts[n]) < sizes[n]]
        if not open_sets:
            train.append(sent)
            continue
        name = open_sets[turn % len(open_sets)]
        words = Counter(sent.split())
        n_words = sum(words.values())
        # OOV tokens each set would gain: this sentence's words that no longer occur in
        # training once it is held out, plus their earlier held-out occurrences.
        gain = dict.fromkeys(names, 0)
        for w, c in words.items():
            if left[w] == c:
                gain[name] += c
                for other in names:
                    gain[other] += held[other][w]
        if max_oov_rate is not None and any(
            (oov[n] + gain[n]) > max_oov_rate * (tokens[n] + (n_words if n == name else 0)) for n in names
        ):
            train.append(sent)
            continue
        parts[name].append(sent)
        turn += 1
        held[name].update(words)
        left.subtract(words)
        tokens[name] += n_words
        for n in names:
            oov[n] += gain[n]
    parts["train"] = train
    return parts
