"""Errors at out-of-vocabulary reference words.

A reference word outside the recogniser's vocabulary (the lang dir's ``words.txt``) can
never be recognised: every system substitutes or deletes it, and the search often inserts
a short word beside it to cover its audio.  These errors are the same for every
acoustic model, so they set a floor under the WER and compress relative gains between
acoustic models.  This module counts them from a scored decode directory, so a report can
state the WER with and without them.

An error is *OOV-caused* when it is the substitution or deletion of an OOV reference word,
or an insertion directly beside one (the hypothesis words between the OOV's neighbours in
the alignment).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from asr_hf.decode.scoring import UttAlignment, read_text, score
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike

#: words.txt entries that are not words a reference could contain
_SPECIAL = {"<eps>", "#0", "<s>", "</s>"}


def read_vocabulary(words_txt: Pathlike) -> set[str]:
    """The words of a Kaldi ``words.txt`` (symbol and integer id per line), without
    ``<eps>``, ``#0``, ``<s>`` and ``</s>``."""
    path = Path(words_txt)
    vocab: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(str(path), f"cannot read the vocabulary ({type(exc).__name__}: {exc})") from None
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{path}:{n}", f"expected 'word id', got {line!r}")
        if parts[0] not in _SPECIAL:
            vocab.add(parts[0])
    if not vocab:
        raise DataError(str(path), "no words")
    return vocab


@dataclass
class OovBreakdown:
    """Counts over one decode directory (all in words)."""

    ref_words: int
    oov_tokens: int
    errors: int
    oov_errors: int  # substitutions / deletions of OOV reference words
    oov_insertions: int  # insertions directly beside an OOV reference word

    @property
    def oov_caused(self) -> int:
        return self.oov_errors + self.oov_insertions

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / max(self.ref_words, 1)

    @property
    def oov_rate(self) -> float:
        return 100.0 * self.oov_tokens / max(self.ref_words, 1)

    @property
    def oov_points(self) -> float:
        """WER points of OOV-caused errors."""
        return 100.0 * self.oov_caused / max(self.ref_words, 1)

    @property
    def wer_in_vocabulary(self) -> float:
        """WER with the OOV-caused errors left out (same denominator)."""
        return 100.0 * (self.errors - self.oov_caused) / max(self.ref_words, 1)


def count_utterance(ua: UttAlignment, vocab: set[str]) -> OovBreakdown:
    """The breakdown of one aligned utterance."""
    oov_err = oov_ins = errors = 0
    ops = ua.ops
    # the reference word on each side of every alignment position (None at the edges / for gaps)
    prev_ref: list[Optional[str]] = []
    last: Optional[str] = None
    for op, ref, _ in ops:
        prev_ref.append(last)
        if op != "I":
            last = ref
    next_ref: list[Optional[str]] = [None] * len(ops)
    last = None
    for i in range(len(ops) - 1, -1, -1):
        next_ref[i] = last
        if ops[i][0] != "I":
            last = ops[i][1]
    for i, (op, ref, _) in enumerate(ops):
        if op == "C":
            continue
        errors += 1
        if op in ("S", "D"):
            oov_err += ref not in vocab
        elif any(w is not None and w not in vocab for w in (prev_ref[i], next_ref[i])):
            oov_ins += 1
    return OovBreakdown(len(ua.ref), sum(w not in vocab for w in ua.ref), errors, oov_err, oov_ins)


def oov_breakdown(decode_dir: Pathlike, vocab: set[str]) -> OovBreakdown:
    """The breakdown of a scored decode directory (its ``ref.txt`` and ``hyp.txt``)."""
    d = Path(decode_dir)
    for name in ("ref.txt", "hyp.txt"):
        if not (d / name).is_file():
            raise DataError(str(d), f"no {name}: not a scored decode directory")
    result = score(read_text(d / "ref.txt"), read_text(d / "hyp.txt"))
    return sum_breakdowns(count_utterance(ua, vocab) for ua in result.utterances)


def sum_breakdowns(parts: Iterable[OovBreakdown]) -> OovBreakdown:
    total = OovBreakdown(0, 0, 0, 0, 0)
    for p in parts:
        total.ref_words += p.ref_words
        total.oov_tokens += p.oov_tokens
        total.errors += p.errors
        total.oov_errors += p.oov_errors
        total.oov_insertions += p.oov_insertions
    return total


def oov_markdown(rows: Iterable, vocab: set[str], compare: Optional[tuple[str, str]] = None) -> str:
    """Markdown: per set, every system's %WER, the WER points of OOV-caused errors and the
    %WER without them, then the relative gain of ``compare = (gmm, dnn)`` (default: the best
    GMM and DNN of each set) both ways.

    ``rows`` are :class:`asr_hf.decode.report.ResultRow`-like (``system``, ``set``,
    ``decode_dir``, ``optimizer``: None for a GMM system)."""
    by_set: dict[str, list] = {}
    for r in rows:
        if (Path(r.decode_dir) / "ref.txt").is_file() and (Path(r.decode_dir) / "hyp.txt").is_file():
            by_set.setdefault(r.set, []).append(r)
    out: list[str] = []
    for set_name in sorted(by_set, key=lambda s: (s.endswith(".si"), s)):
        got = [(r, oov_breakdown(r.decode_dir, vocab)) for r in by_set[set_name]]
        got.sort(key=lambda x: x[1].wer)
        rate = got[0][1].oov_rate
        out += [f"**{set_name}**: {got[0][1].oov_tokens} of {got[0][1].ref_words} reference words "
                f"({rate:.2f}%) are out of vocabulary\n",
                "| system | %WER | OOV-caused errors (points) | %WER without them |", "|---|---:|---:|---:|"]
        out += [f"| {r.system} | {b.wer:.2f} | {b.oov_points:.2f} | {b.wer_in_vocabulary:.2f} |" for r, b in got]
        if compare is None:
            gmm = [x for x in got if x[0].optimizer is None]
            dnn = [x for x in got if x[0].optimizer is not None]
        else:
            gmm = [x for x in got if x[0].system == compare[0]]
            dnn = [x for x in got if x[0].system == compare[1]]
        if gmm and dnn:
            (g, bg), (d, bd) = gmm[0], dnn[0]
            rel = 100.0 * (bd.wer - bg.wer) / max(bg.wer, 1e-9)
            rel_in = 100.0 * (bd.wer_in_vocabulary - bg.wer_in_vocabulary) / max(bg.wer_in_vocabulary, 1e-9)
            out += ["", f"Best DNN `{d.system}` against best GMM `{g.system}`: {rel:+.1f}% relative in %WER, "
                        f"{rel_in:+.1f}% without the OOV-caused errors."]
        out.append("")
    if not out:
        return ""
    head = ["## Errors at out-of-vocabulary words\n",
            "A reference word outside the vocabulary cannot be recognised; its substitution or deletion, and an "
            "insertion beside it, are OOV-caused errors (asr_hf/decode/oov.py). They are the same for every "
            "acoustic model and compress relative gains.\n"]
    return "\n".join(head + out).rstrip() + "\n"


__all__ = ["OovBreakdown", "count_utterance", "oov_breakdown", "oov_markdown", "read_vocabulary", "sum_breakdowns"]
