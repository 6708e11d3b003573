"""Word error rate with jiwer: totals, sentence errors, alignments, per-speaker breakdown.

``WER = (S + D + I) / N`` over the reference words ``N``; the sentence error
rate is the fraction of utterances with at least one error.  A reference with
no hypothesis (decoding failed or missing) is scored against an empty
hypothesis, i.e. all its words are deletions, and is listed in
:attr:`ScoreResult.missing`.

The per-utterance alignment file follows Kaldi's ``per_utt`` format::

    utt1 ref  the  cat  ***  sat
    utt1 hyp  the  bat  big  ***
    utt1 op   C    S    I    D
    utt1 #csid 1 1 1 1
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Optional, Sequence, Union

import jiwer

from asr_hf.utils.io import Pathlike, atomic_output

Words = Union[str, Sequence[str]]
GAP = "***"


@dataclass
class ErrorCounts:
    """Error counts of a set of utterances."""

    ref_words: int = 0
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Word error rate as a fraction (without reference words: 0 if no errors, else inf)."""
        return self.errors / self.ref_words if self.ref_words else (0.0 if self.errors == 0 else float("inf"))

    @property
    def ser(self) -> float:
        """Sentence error rate as a fraction."""
        return self.sentence_errors / self.sentences if self.sentences else float("nan")

    def __iadd__(self, other: "ErrorCounts") -> "ErrorCounts":
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(errors=self.errors, wer_percent=_percent(self.wer), ser_percent=_percent(self.ser))
        return d

    def summary(self) -> str:
        """Kaldi's ``compute-wer`` line, e.g. ``%WER 12.50 [ 5 / 40, 1 ins, 2 del, 2 sub ]``."""
        return (
            f"%WER {100 * self.wer:.2f} [ {self.errors} / {self.ref_words}, {self.insertions} ins, "
            f"{self.deletions} del, {self.substitutions} sub ]\n"
            f"%SER {100 * self.ser:.2f} [ {self.sentence_errors} / {self.sentences} ]"
        )


def _percent(x: float) -> Optional[float]:
    """Percentage rounded for JSON; None where undefined (JSON has no nan/inf)."""
    return round(100 * x, 4) if math.isfinite(x) else None


@dataclass
class UttAlignment:
    """Alignment of one utterance: ``ops`` holds ``(op, ref_word, hyp_word)``, op in C/S/I/D."""

    utt_id: str
    ref: list[str]
    hyp: list[str]
    ops: list[tuple[str, Optional[str], Optional[str]]]
    speaker: Optional[str] = None

    @property
    def counts(self) -> ErrorCounts:
        c = ErrorCounts(ref_words=len(self.ref), sentences=1)
        for op, _, _ in self.ops:
            if op == "C":
                c.correct += 1
            elif op == "S":
                c.substitutions += 1
            elif op == "D":
                c.deletions += 1
            else:
                c.insertions += 1
        c.sentence_errors = int(c.errors > 0)
        return c


@dataclass
class ScoreResult:
    """Totals, per-speaker counts and per-utterance alignments of a scored set."""

    total: ErrorCounts
    utterances: list[UttAlignment]
    per_speaker: dict[str, ErrorCounts] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            **self.total.to_json(),
            "missing_hyps": len(self.missing),
            "extra_hyps": len(self.extra),
            "per_speaker": {s: c.to_json() for s, c in sorted(self.per_speaker.items())},
        }


def _words(x: Words) -> list[str]:
    return x.split() if isinstance(x, str) else [str(w) for w in x]


def score(
    refs: Mapping[str, Words],
    hyps: Mapping[str, Words],
    speakers: Optional[Mapping[str, str]] = None,
    ignore_words: Iterable[str] = (),
) -> ScoreResult:
    """Score hypotheses against references.

    Args:
        refs: utterance id -> reference words (a string or a word list).
        hyps: utterance id -> hypothesis words; ids not in ``refs`` are ignored
            (listed in ``extra``), ids missing from it score as empty.
        speakers: utterance id -> speaker, for the per-speaker breakdown.
        ignore_words: words removed from both sides before alignment (e.g. ``<unk>``).

    Returns:
        The :class:`ScoreResult` (utterances in sorted id order).
    """
    ignore = set(ignore_words)
    ids = sorted(refs)
    ref_w = [[w for w in _words(refs[u]) if w not in ignore] for u in ids]
    hyp_w = [[w for w in _words(hyps.get(u, ())) if w not in ignore] for u in ids]
    utts: list[UttAlignment] = []
    if ids:
        # jiwer aligns word lists given as space-joined strings; words never contain spaces.
        out = jiwer.process_words([" ".join(r) for r in ref_w], [" ".join(h) for h in hyp_w])
        for u, r, h, chunks in zip(ids, ref_w, hyp_w, out.alignments):
            ops: list[tuple[str, Optional[str], Optional[str]]] = []
            for ch in chunks:
                ref_idx = range(ch.ref_start_idx, ch.ref_end_idx)
                hyp_idx = range(ch.hyp_start_idx, ch.hyp_end_idx)
                if ch.type in ("equal", "substitute"):
                    op = "C" if ch.type == "equal" else "S"
                    ops += [(op, r[i], h[j]) for i, j in zip(ref_idx, hyp_idx)]
                elif ch.type == "delete":
                    ops += [("D", r[i], None) for i in ref_idx]
                elif ch.type == "insert":
                    ops += [("I", None, h[j]) for j in hyp_idx]
                else:  # pragma: no cover - jiwer's four chunk types
                    raise ValueError(f"unknown alignment chunk {ch.type!r}")
            utts.append(UttAlignment(u, r, h, ops, speakers.get(u) if speakers else None))
    total = ErrorCounts()
    per_spk: dict[str, ErrorCounts] = {}
    for ua in utts:
        c = ua.counts
        total += c
        if speakers is not None:
            per_spk.setdefault(ua.speaker or "<unknown>", ErrorCounts()).__iadd__(c)
    return ScoreResult(
        total=total,
        utterances=utts,
        per_speaker=per_spk,
        missing=[u for u in ids if u not in hyps],
        extra=sorted(set(hyps) - set(refs)),
    )


def format_alignment(ua: UttAlignment) -> str:
    """Kaldi ``per_utt`` lines (ref / hyp / op / #csid) with padded columns."""
    refs = [r if r is not None else GAP for _, r, _ in ua.ops]
    hyps = [h if h is not None else GAP for _, _, h in ua.ops]
    ops = [op for op, _, _ in ua.ops]
    widths = [max(len(a), len(b), len(c)) for a, b, c in zip(refs, hyps, ops)]

    def row(tag: str, cells: list[str]) -> str:
        return f"{ua.utt_id} {tag:<3} " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    c = ua.counts
    csid = f"{ua.utt_id} #csid {c.correct} {c.substitutions} {c.insertions} {c.deletions}"
    return "\n".join([row("ref", refs), row("hyp", hyps), row("op", ops), csid])


def write_alignments(result: ScoreResult, path: Pathlike) -> None:
    """Write the per-utterance alignment file (Kaldi ``per_utt`` format)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ua in result.utterances:
            f.write(format_alignment(ua) + "\n")


def format_speaker_table(result: ScoreResult) -> str:
    """Per-speaker table (sclite-like): sentences, words, %corr/sub/del/ins/WER/SER."""
    buf = io.StringIO()
    head = f"{'speaker':<20} {'#snt':>5} {'#wrd':>6} {'corr':>6} {'sub':>6} {'del':>6} {'ins':>6} {'WER':>6} {'SER':>6}"
    buf.write(head + "\n" + "-" * len(head) + "\n")
    rows = sorted(result.per_speaker.items()) + [("SUM", result.total)]
    for spk, c in rows:
        n = max(c.ref_words, 1)
        pct = [100 * x / n for x in (c.correct, c.substitutions, c.deletions, c.insertions)]
        buf.write(
            f"{spk:<20} {c.sentences:>5} {c.ref_words:>6} " + " ".join(f"{x:>6.1f}" for x in pct)
            + f" {100 * c.wer:>6.2f} {100 * c.ser:>6.1f}\n"
        )
    return buf.getvalue()


def read_text(path: Pathlike) -> dict[str, list[str]]:
    """Read a Kaldi ``text`` file (``utt word word ...``); a line may have no words."""
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts:
                out[parts[0]] = parts[1:]
    return out


def write_text(texts: Mapping[str, Sequence[str]], path: Pathlike) -> None:
    """Write a Kaldi ``text`` file, sorted by utterance id."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for u in sorted(texts):
            f.write(" ".join([u, *texts[u]]) + "\n")
