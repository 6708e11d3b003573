"""N-gram language models: Kneser-Ney training, ARPA scoring, G.fst.

(About 650 lines: training, ARPA scoring and G.fst share the ARPA model :class:`ArpaLM`; the
scorer is a third of the file.)

* :func:`train_lm` counts n-grams with kaldingram and estimates either
  interpolated **modified** Kneser-Ney (Chen & Goodman 1998, three discounts
  per order; the default, like SRILM's ``-kndiscount -interpolate``) or
  kaldingram's own back-off Kneser-Ney with one discount per order (SRILM
  ``-ukndiscount``).  Optional Stolcke entropy pruning uses kaldingram.
* :class:`ArpaLM` is a small, independent ARPA reader and back-off scorer;
  :meth:`ArpaLM.perplexity` follows SRILM's ``ngram -ppl`` conventions.
* :func:`make_G` turns an ARPA file into ``G.fst`` over a lang dir's
  ``words.txt`` with kaldilm's ``arpa2fst`` (``#0`` on back-off arcs,
  ``<s>``/``</s>`` removed) and kaldifst.

Modified Kneser-Ney, as implemented here.  For order ``n`` let ``a(h, w)`` be
the count used at that order: the raw count at the highest order and for
n-grams that start with ``<s>`` (they have no left context), else the
continuation count ``N1+(. h w)`` (number of distinct words seen before
``h w``).  With ``n_k`` the number of n-grams of that order whose count is
``k``, ``Y = n1 / (n1 + 2 n2)`` and the discounts are ``D1 = 1 - 2Y n2/n1``,
``D2 = 2 - 3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3``.  Then, with
``T(h) = sum_w a(h, w)`` and ``N_k(h)`` the number of words with ``a(h, w) = k``
(``k = 3`` meaning 3 or more)::

    p(w | h) = max(a(h,w) - D(a(h,w)), 0) / T(h) + gamma(h) p(w | h')
    gamma(h) = (D1 N_1(h) + D2 N_2(h) + D3+ N_3+(h)) / T(h)

where ``h'`` drops the oldest word.  Unigrams are not discounted:
``p(w) = a(w) / T()`` (so ``p(<s>) = 0``, written as -99).  The ARPA file
stores ``p(w | h)`` for every seen n-gram and back-off weight ``gamma(h w)``
for every seen n-gram that is a history; that back-off model is exactly the
interpolated one.  When an order's counts-of-counts cannot give valid
discounts (tiny corpora: some ``n_k = 0``, or a ``D_k`` outside ``(0, k)``),
that order falls back to one discount ``D = n1 / (n1 + 2 n2)`` (kaldingram's
rule) for all counts, with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from enum import Enum
from io import StringIO
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import kaldingram.prune
import kaldingram.train
from kaldingram.prune import ArpaParser
from kaldingram.prune import prune as _kaldingram_prune
from kaldingram.train import NgramCounts, _GcSuspended
from tqdm import tqdm

from asr_hf.lang.lang_dir import BOS, EOS, LangDir
from asr_hf.lang.lexicon import OOV_WORD, RESERVED_WORDS
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output
from asr_hf.utils.kaldi import kfst

log = logging.getLogger(__name__)

LN10 = math.log(10.0)
# SRILM's log10 of "zero probability" (written for p(<s>)).
LOG10_ZERO = -99.0


class Smoothing(str, Enum):
    """Kneser-Ney variant used by :func:`train_lm`."""

    MODIFIED_KN = "modified-kn"
    """Interpolated modified Kneser-Ney, three discounts per order (SRILM ``-kndiscount -interpolate``)."""
    KN = "kn"
    """kaldingram's back-off Kneser-Ney, one discount per order (SRILM ``-ukndiscount``).

    Not interpolated: after a history that has been followed by every word of
    the vocabulary the discounted mass has nowhere to go, so the model sums to
    less than one there (small vocabularies show it; kaldingram does not
    redistribute it as SRILM does).
    """


class OovPolicy(str, Enum):
    """What :func:`make_G` does with ARPA words that are not in ``words.txt``."""

    DROP = "drop"
    """Drop every n-gram containing such a word (Kaldi's ``arpa2fst --read-symbol-table``); no renormalisation."""
    ERROR = "error"
    """Raise :class:`DataError` naming the ARPA file and line."""


# ---------------------------------------------------------------------------
# Training text
# ---------------------------------------------------------------------------


def read_sentences(text: Union[Pathlike, Iterable[str]]) -> tuple[list[str], str]:
    """Training/evaluation sentences: one per line, words separated by whitespace.

    Blank lines are skipped.  Text is expected to be normalised already
    (:func:`asr_hf.data.text.normalize_text`).

    Args:
        text: a text file, or an iterable of sentences.

    Returns:
        (sentences with whitespace collapsed, the source's name for messages).

    Raises:
        DataError: the file is missing, has no words, or uses ``<s>``, ``</s>``,
            ``<eps>`` or ``#...`` as a word (naming ``file:line``).
    """
    if isinstance(text, (str, os.PathLike)):
        path = Path(text)
        if not path.is_file():
            raise DataError(str(path), "no such file")
        lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
        name, where = str(path), f"{path}:{{}}"
    else:
        lines, name, where = text, "text", "sentence {}"
    out: list[str] = []
    for lineno, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        for w in words:
            if w in RESERVED_WORDS or w.startswith("#"):
                raise DataError(where.format(lineno), f"reserved symbol {w!r} used as a word")
        out.append(" ".join(words))
    if not out:
        raise DataError(name, "no sentences (empty text)")
    return out, name


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


class _ModifiedKneserNey(NgramCounts):
    """kaldingram's n-gram counts with interpolated modified Kneser-Ney estimation.

    Overrides the three estimation steps of :class:`kaldingram.train.NgramCounts`
    (which print_as_arpa then writes): ``self.d[n]`` holds ``(D1, D2, D3+)``,
    ``word_to_f`` the interpolated probabilities, ``word_to_bow`` the back-off
    weights ``gamma``.
    """

    def _counts_used(self, n: int, cfh) -> dict[str, int]:
        """a(h, w) for one history at order n+1 (n = history length)."""
        if n == self.ngram_order - 1:
            counts = dict(cfh.word_to_count)
        elif any(cfh.word_to_context.get(w) for w in cfh.word_to_count):
            counts = {w: len(cfh.word_to_context.get(w, ())) for w in cfh.word_to_count}
        else:  # history starts with <s>: no left context, raw counts
            counts = dict(cfh.word_to_count)
        if n == 0 and self.bos_symbol in counts:
            counts[self.bos_symbol] = 0  # <s> is never predicted
        return counts

    def cal_discounting_constants(self) -> None:
        self.d = [(0.0, 0.0, 0.0)]
        for n in range(1, self.ngram_order):
            coc: Counter[int] = Counter()
            for cfh in self.counts[n].values():
                coc.update(c for c in self._counts_used(n, cfh).values() if c > 0)
            self.d.append(modified_kn_discounts(coc, order=n + 1))

    def cal_f(self) -> None:
        self._gamma: list[dict[tuple[str, ...], float]] = [dict() for _ in range(self.ngram_order)]
        for n in range(self.ngram_order):
            d1, d2, d3 = self.d[n]
            for h, cfh in self.counts[n].items():
                counts = self._counts_used(n, cfh)
                total = sum(counts.values())
                if total <= 0:
                    raise ValueError(f"no counts for history {h}")
                if n == 0:
                    for w, c in counts.items():
                        cfh.word_to_f[w] = c / total
                    continue
                gamma = sum(d1 if c == 1 else d2 if c == 2 else d3 for c in counts.values() if c > 0) / total
                self._gamma[n][h] = gamma
                lower = self.counts[n - 1][h[1:]].word_to_f
                for w, c in counts.items():
                    disc = 0.0 if c == 0 else d1 if c == 1 else d2 if c == 2 else d3
                    cfh.word_to_f[w] = max(c - disc, 0.0) / total + gamma * lower[w]

    def cal_bow(self) -> None:
        for n in range(self.ngram_order):
            for h, cfh in self.counts[n].items():
                for w in cfh.word_to_count:
                    hw = h + (w,)
                    cfh.word_to_bow[w] = self._gamma[n + 1].get(hw) if n + 1 < self.ngram_order else None


def modified_kn_discounts(count_of_counts: Counter, order: int = 0) -> tuple[float, float, float]:
    """Chen & Goodman's ``(D1, D2, D3+)`` from counts-of-counts ``{k: n_k}``.

    Falls back to one discount ``n1 / (n1 + 2 n2)`` (at least 0.1 / (n1 + 2 n2),
    0.1 when both are zero; kaldingram's rule, clipped to 1) when some
    ``n_k`` (k = 1..4) is zero or a discount leaves ``(0, k)``.
    """
    n1, n2, n3, n4 = (count_of_counts.get(k, 0) for k in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if all(0 < dk < k for k, dk in enumerate(d, 1)):
            return d
    single = min(max(0.1, float(n1)) / (n1 + 2 * n2), 1.0) if n1 + 2 * n2 > 0 else 0.1
    log.warning(
        "%d-grams: counts-of-counts n1..n4 = %d %d %d %d do not give modified Kneser-Ney "
        "discounts; using one discount %.4f",
        order, n1, n2, n3, n4, single,
    )
    return (single, single, single)


# kaldingram shows tqdm bars for every step; only worth it on large texts.
_PROGRESS_MIN_SENTENCES = 100_000


@contextlib.contextmanager
def _kaldingram_progress(show: bool) -> Iterator[None]:
    """Silence kaldingram's progress bars (module-level ``tqdm`` names) unless ``show``."""
    if show:
        yield
        return
    saved = (kaldingram.train.tqdm, kaldingram.prune.tqdm)
    quiet = functools.partial(tqdm, disable=True)
    kaldingram.train.tqdm = kaldingram.prune.tqdm = quiet
    try:
        yield
    finally:
        kaldingram.train.tqdm, kaldingram.prune.tqdm = saved


def train_lm(
    text: Union[Pathlike, Iterable[str]],
    out_arpa: Pathlike,
    order: int = 3,
    smoothing: Union[Smoothing, str] = Smoothing.MODIFIED_KN,
    vocabulary: Optional[Iterable[str]] = None,
    unk: str = OOV_WORD,
    prune_threshold: float = 0.0,
) -> Path:
    """Train a Kneser-Ney n-gram LM and write it in ARPA format.

    Args:
        text: training sentences (a file, one per line, or an iterable).
        out_arpa: the ARPA file to write (atomically).
        order: n-gram order (>= 1).
        smoothing: :class:`Smoothing` variant.
        vocabulary: when given, training words outside it are replaced by ``unk``
            before counting (so the LM gives OOVs mass through ``unk``); typically
            the lexicon's words.  Without it the LM's vocabulary is the training text's.
        unk: the OOV word.
        prune_threshold: Stolcke entropy-pruning threshold (relative training-set
            perplexity change, e.g. 1e-8); 0 disables pruning.

    Returns:
        ``out_arpa``.

    Raises:
        DataError: empty or malformed training text.
    """
    smoothing = Smoothing(smoothing)
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if prune_threshold < 0:
        raise ValueError(f"prune_threshold must be >= 0, got {prune_threshold}")
    sentences, name = read_sentences(text)
    if vocabulary is not None:
        vocab = set(vocabulary)
        mapped = 0
        out = []
        for s in sentences:
            words = s.split()
            mapped += sum(w not in vocab for w in words)
            out.append(" ".join(w if w in vocab else unk for w in words))
        sentences = out
        if mapped:
            log.info("%s: %d training word token(s) outside the vocabulary mapped to %s", name, mapped, unk)

    counts = _ModifiedKneserNey(order) if smoothing is Smoothing.MODIFIED_KN else NgramCounts(order)
    with _kaldingram_progress(len(sentences) >= _PROGRESS_MIN_SENTENCES):
        with _GcSuspended():
            for s in tqdm(sentences, desc="counting", unit="sent", disable=len(sentences) < _PROGRESS_MIN_SENTENCES):
                counts.add_raw_counts_from_line(s)
        counts.cal_discounting_constants()
        counts.cal_f()
        counts.cal_bow()
        buf = StringIO()
        counts.print_as_arpa(fout=buf)
        arpa = buf.getvalue()
        if prune_threshold > 0:
            lm = ArpaParser().loads(arpa)[0]
            before = dict(lm.counts())
            _kaldingram_prune(lm, prune_threshold, 1)
            arpa = ArpaParser().dumps(lm)
            log.info("pruned with threshold %g: n-gram counts %s -> %s", prune_threshold, before, dict(lm.counts()))
    with atomic_output(out_arpa) as tmp:
        tmp.write_text(arpa, encoding="utf-8")
    log.info(
        "trained %d-gram %s LM on %d sentences of %s -> %s (discounts %s)",
        order, smoothing.value, len(sentences), name, out_arpa,
        [tuple(round(x, 4) for x in d) if isinstance(d, tuple) else round(d, 4) for d in counts.d],
    )
    return Path(out_arpa)


# ---------------------------------------------------------------------------
# ARPA reading and scoring
# ---------------------------------------------------------------------------


@dataclass
class PerplexityReport:
    """SRILM ``ngram -ppl`` style statistics.

    ``ppl = 10^(-logprob / (words - oovs - zeroprobs + sentences))`` (``</s>``
    counted), ``ppl1`` the same without the ``sentences`` term.  OOV words
    (not in the LM vocabulary) are not scored; the next word is scored with
    the history that contains the OOV, i.e. it backs off past it.
    """

    sentences: int
    words: int
    oovs: int
    zeroprobs: int
    logprob: float
    ppl: float
    ppl1: float
    oov_rate: float

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class ArpaLM:
    """A back-off n-gram model read from an ARPA file (log10 probabilities).

    Attributes:
        order: highest n-gram order.
        logprob: n-gram tuple -> log10 probability.
        backoff: n-gram tuple -> log10 back-off weight (absent = 0).
        path: the file it was read from (None when built from a string).
    """

    def __init__(
        self,
        logprob: dict[tuple[str, ...], float],
        backoff: dict[tuple[str, ...], float],
        order: int,
        path: Optional[Path] = None,
    ) -> None:
        self.logprob = logprob
        self.backoff = backoff
        self.order = order
        self.path = path
        self.vocabulary: set[str] = {ng[0] for ng in logprob if len(ng) == 1}

    @classmethod
    def read(cls, path: Pathlike) -> "ArpaLM":
        """Parse an ARPA file.

        Raises:
            DataError: naming ``file:line`` for malformed content, or the file
                for missing sections and n-gram counts that do not match the header.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(str(path), "no such file")
        return cls._parse(path.read_text(encoding="utf-8").splitlines(), str(path), path)

    @classmethod
    def from_string(cls, text: str, name: str = "<arpa>") -> "ArpaLM":
        return cls._parse(text.splitlines(), name, None)

    @classmethod
    def _parse(cls, lines: Sequence[str], name: str, path: Optional[Path]) -> "ArpaLM":
        declared: dict[int, int] = {}
        found: Counter[int] = Counter()
        logprob: dict[tuple[str, ...], float] = {}
        backoff: dict[tuple[str, ...], float] = {}
        section: Optional[int | str] = None  # None: before \data\, "data", n, "end"
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            where = f"{name}:{lineno}"
            if section is None:
                if line == "\\data\\":
                    section = "data"
                continue
            if section == "end":
                if line:
                    raise DataError(where, "content after \\end\\")
                continue
            if not line:
                continue
            m = re.fullmatch(r"\\(\d+)-grams:", line)
            if m:
                n = int(m.group(1))
                if n not in declared:
                    raise DataError(where, f"section \\{n}-grams: not declared in \\data\\")
                section = n
                continue
            if line == "\\end\\":
                section = "end"
                continue
            if section == "data":
                m = re.fullmatch(r"ngram\s+(\d+)\s*=\s*(\d+)", line)
                if not m:
                    raise DataError(where, f"expected 'ngram N=count', got {line!r}")
                declared[int(m.group(1))] = int(m.group(2))
                continue
            assert isinstance(section, int)
            parts = line.split()
            n = section
            if len(parts) not in (n + 1, n + 2):
                raise DataError(where, f"expected 'logprob w1..w{n} [backoff]', got {line!r}")
            try:
                lp = float(parts[0])
                bo = float(parts[n + 1]) if len(parts) == n + 2 else None
            except ValueError:
                raise DataError(where, f"bad number in {line!r}") from None
            ngram = tuple(parts[1 : n + 1])
            if ngram in logprob:
                raise DataError(where, f"duplicate n-gram {' '.join(ngram)!r}")
            logprob[ngram] = lp
            if bo is not None:
                backoff[ngram] = bo
            found[n] += 1
        if section is None:
            raise DataError(name, "no \\data\\ section (not an ARPA file)")
        if section != "end":
            raise DataError(name, "missing \\end\\ (truncated file?)")
        for n, count in declared.items():
            if found[n] != count:
                raise DataError(name, f"header declares {count} {n}-grams but the file has {found[n]}")
        if not declared or 1 not in declared:
            raise DataError(name, "no unigrams")
        if (EOS,) not in logprob:
            raise DataError(name, f"no {EOS} unigram")
        return cls(logprob, backoff, max(declared), path)

    def log10_prob(self, word: str, history: Sequence[str]) -> Optional[float]:
        """Back-off log10 p(word | history); None when ``word`` is not in the vocabulary.

        ``p(w | h) = p*(h w)`` if the n-gram is listed, else ``bow(h) * p(w | h')``
        with ``bow(h) = 1`` for a history that is not listed.
        """
        if word not in self.vocabulary:
            return None
        h = tuple(history)[len(history) - (self.order - 1) :] if self.order > 1 else ()
        acc = 0.0
        while True:
            lp = self.logprob.get(h + (word,))
            if lp is not None:
                return acc + lp
            acc += self.backoff.get(h, 0.0)
            h = h[1:]

    def sentence_log10_prob(self, sentence: Union[str, Sequence[str]]) -> float:
        """log10 P(words </s> | <s>); OOV words are skipped (SRILM without ``-unk``)."""
        words = sentence.split() if isinstance(sentence, str) else list(sentence)
        total = 0.0
        history = [BOS]
        for w in words + [EOS]:
            lp = self.log10_prob(w, history)
            if lp is not None:
                total += lp
            history.append(w)
        return total

    def perplexity(
        self, text: Union[Pathlike, Iterable[str]], score_unk: bool = False, unk: str = OOV_WORD
    ) -> PerplexityReport:
        """Perplexity and OOV rate on sentences (SRILM ``ngram -ppl`` conventions).

        Args:
            text: a file (one sentence per line) or an iterable of sentences.
            score_unk: score OOV words as ``unk`` when the LM has it (SRILM ``-unk``);
                otherwise OOVs are excluded from the perplexity.
            unk: the OOV word.

        Returns:
            The report; ``oov_rate = oovs / words`` counts words outside the LM
            vocabulary (also when ``score_unk`` scores them).
        """
        sentences, _ = read_sentences(text)
        map_unk = score_unk and unk in self.vocabulary
        n_words = n_oov = n_zero = 0
        logprob = 0.0
        for sent in sentences:
            words = sent.split()
            history = [BOS]
            for w in words + [EOS]:
                is_word = w != EOS
                n_words += is_word
                if w not in self.vocabulary or w == BOS:
                    n_oov += is_word
                    if map_unk:
                        w = unk
                    else:
                        history.append(w)
                        continue
                lp = self.log10_prob(w, history)
                assert lp is not None
                if lp <= LOG10_ZERO:
                    n_zero += 1
                else:
                    logprob += lp
                history.append(w)
        n_sent = len(sentences)
        excluded = (0 if map_unk else n_oov) + n_zero
        denom = n_words - excluded + n_sent
        denom1 = n_words - excluded
        return PerplexityReport(
            sentences=n_sent,
            words=n_words,
            oovs=n_oov,
            zeroprobs=n_zero,
            logprob=logprob,
            ppl=10 ** (-logprob / denom) if denom > 0 else math.inf,
            ppl1=10 ** (-logprob / denom1) if denom1 > 0 else math.inf,
            oov_rate=n_oov / n_words if n_words else 0.0,
        )


# ---------------------------------------------------------------------------
# G.fst
# ---------------------------------------------------------------------------


def make_G(
    arpa_path: Pathlike,
    lang_dir: Union[LangDir, Pathlike],
    out_path: Optional[Pathlike] = None,
    oov: Union[OovPolicy, str] = OovPolicy.DROP,
) -> Path:
    """Compile an ARPA LM into ``G.fst`` over the lang dir's ``words.txt``.

    Uses ``kaldilm.arpa2fst(disambig_symbol="#0", read_symbol_table=words.txt)``:
    back-off arcs carry ``#0`` on the input side (epsilon output), ``<s>`` and
    ``</s>`` become the start state and final weights, weights are ``-ln p``.
    The result is compiled with kaldifst and sorted on input labels.

    Words of the ARPA that are not in ``words.txt`` are handled by ``oov``:
    ``drop`` removes every n-gram that contains one (what Kaldi's arpa2fst does
    with a symbol table; the remaining probabilities are not renormalised and
    a warning reports how many n-grams went), ``error`` raises.  To give OOV
    words probability mass instead, train the LM with
    ``train_lm(..., vocabulary=lang.vocabulary)`` so they become ``<unk>``.

    Args:
        arpa_path: the ARPA file.
        lang_dir: the lang dir (or its path) whose ``words.txt`` numbers the words.
        out_path: where to write; ``<lang_dir>/G.fst`` by default.
        oov: :class:`OovPolicy`.

    Returns:
        The path written.

    Raises:
        DataError: malformed ARPA, or an OOV word with ``oov="error"`` (naming file:line).
    """
    # kaldilm must be imported after kaldi_hmm_gmm (asr_hf.utils.kaldi): the
    # other order deadlocks at import, like kaldifst's.
    import kaldilm

    oov = OovPolicy(oov)
    lang = lang_dir if isinstance(lang_dir, LangDir) else LangDir.load(lang_dir)
    arpa_path = Path(arpa_path)
    out_path = Path(out_path) if out_path is not None else lang.G_path
    words_txt = lang.path / "words.txt"

    filtered, dropped, first_bad = _filter_arpa(arpa_path, set(lang.words.ids) - {"<eps>", "#0"})
    if dropped:
        if oov is OovPolicy.ERROR:
            raise DataError(first_bad[0], f"word {first_bad[1]!r} is not in {words_txt}")
        log.warning(
            "%s: dropped %s n-gram(s) containing words not in %s (e.g. %r)",
            arpa_path, dict(sorted(dropped.items())), words_txt, first_bad[1],
        )
    with atomic_output(out_path) as tmp:
        src = arpa_path
        if filtered is not None:
            src = tmp.with_name(tmp.name + ".arpa")
            src.write_text(filtered, encoding="utf-8")
        try:
            text = kaldilm.arpa2fst(
                str(src),
                disambig_symbol="#0",
                read_symbol_table=str(words_txt),
                max_arpa_warnings=-1,
            )
        finally:
            if filtered is not None:
                src.unlink(missing_ok=True)
        if not text.strip():
            raise DataError(str(arpa_path), "arpa2fst produced an empty G")
        G = kfst.compile(text)
        kfst.arcsort(G, sort_type="ilabel")
        if not G.write(str(tmp)):
            raise OSError(f"could not write {tmp}")
    log.info("wrote %s (%d states)", out_path, G.num_states)
    return out_path


def _filter_arpa(path: Path, known: set[str]) -> tuple[Optional[str], dict[int, int], tuple[str, str]]:
    """Drop n-grams with words outside ``known``.

    Returns:
        (filtered ARPA text, or None when nothing was dropped; {order: n-grams
        dropped}; (``file:line``, word) of the first unknown word).
    """
    ArpaLM.read(path)  # validates the format, with file:line errors
    out: list[str] = []
    dropped: Counter[int] = Counter()
    first_bad = ("", "")
    section: Optional[int] = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        m = re.fullmatch(r"\\(\d+)-grams:", line)
        if m:
            section = int(m.group(1))
        elif line == "\\end\\":
            section = None
        elif section is not None and line:
            bad = [w for w in line.split()[1 : section + 1] if w not in known]
            if bad:
                dropped[section] += 1
                if not first_bad[0]:
                    first_bad = (f"{path}:{lineno}", bad[0])
                continue
        out.append(raw)
    if not dropped:
        return None, {}, first_bad
    head, sep, rest = ("\n".join(out) + "\n").partition("\\1-grams:")
    head = re.sub(
        r"ngram\s+(\d+)\s*=\s*(\d+)",
        lambda m: f"ngram {m.group(1)}={int(m.group(2)) - dropped.get(int(m.group(1)), 0)}",
        head,
    )
    return head + sep + rest, dict(dropped), first_bad
