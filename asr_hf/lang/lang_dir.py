"""Kaldi's lang directory: phone/word tables, disambiguation symbols, HMM topology, L.fst.

(About 850 lines: :class:`LangDir`, the reader every later stage uses, is half of it and
belongs beside the writer :func:`prepare_lang`, so that the layout is defined once.)

:func:`prepare_lang` does what Kaldi's ``utils/prepare_lang.sh`` does for a
lexicon without pronunciation or silence probabilities, and :class:`LangDir`
loads the result back and validates it (the essential checks of
``utils/validate_lang.pl``).  Layout of ``out_dir``::

    phones.txt              <eps>=0, silence phones, nonsilence phones, #0..#K
    words.txt               <eps>=0, words sorted (incl. <unk>), #0, <s>, </s>
    lexicon.txt             word phone ...    (phones as in phones.txt)
    lexicon_disambig.txt    word phone ... [#k]
    oov.txt, oov.int        the OOV word (<unk>)
    topo                    Kaldi text HMM topology (utils/gen_topo.pl)
    L.fst                   lexicon, optional silence, olabel-sorted
    L_disambig.fst          ... with #k on pronunciations, #K after silence, #0:#0 loops
    phones/{silence,nonsilence,optional_silence,disambig,context_indep}.{txt,int,csl}
    phones/{sets,roots,extra_questions}.{txt,int}   decision-tree inputs
    phones/wdisambig.txt, wdisambig_phones.int, wdisambig_words.int
    phones/word_boundary.{txt,int}                  only with position-dependent phones

All FSTs are OpenFst binaries written by kaldifst (``kfst.StdVectorFst.read``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from asr_hf.lang.lexicon import CMU_PHONES, SIL, SILENCE_PHONES, Lexicon, Pronunciation
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, mark_done
from asr_hf.utils.kaldi import kfst, khg

log = logging.getLogger(__name__)

EPS = "<eps>"
BOS = "<s>"
EOS = "</s>"
WORD_DISAMBIG = "#0"
# Word-position suffixes of position-dependent phones (Kaldi's order in phones.txt).
POSITIONS: tuple[str, ...] = ("B", "E", "I", "S")
_BOUNDARY_NAMES = {"B": "begin", "E": "end", "I": "internal", "S": "singleton"}
_DISAMBIG_RE = re.compile(r"#\d+")


# ---------------------------------------------------------------------------
# Symbol tables
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolTable:
    """A name <-> integer id map: Kaldi's ``phones.txt`` / ``words.txt``.

    Attributes:
        ids: symbol -> id.
        symbols: id -> symbol.
    """

    ids: dict[str, int]
    symbols: dict[int, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", {i: s for s, i in self.ids.items()})
        if len(self.symbols) != len(self.ids):
            raise ValueError("symbol ids are not unique")

    @classmethod
    def from_symbols(cls, symbols: Sequence[str]) -> "SymbolTable":
        """Number ``symbols`` 0, 1, 2, ... in order."""
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols")
        return cls({s: i for i, s in enumerate(symbols)})

    @classmethod
    def read(cls, path: Pathlike) -> "SymbolTable":
        """Read ``symbol id`` lines; malformed or duplicate entries raise :class:`DataError`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(str(path), "no such file")
        ids: dict[str, int] = {}
        seen: dict[int, str] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not re.fullmatch(r"\d+", parts[1]):
                raise DataError(f"{path}:{lineno}", f"expected 'symbol id', got {line!r}")
            sym, i = parts[0], int(parts[1])
            if sym in ids:
                raise DataError(f"{path}:{lineno}", f"symbol {sym!r} appears twice")
            if i in seen:
                raise DataError(f"{path}:{lineno}", f"id {i} is used by {seen[i]!r} and {sym!r}")
            ids[sym] = i
            seen[i] = sym
        if not ids:
            raise DataError(str(path), "empty symbol table")
        return cls(ids)

    def write(self, path: Pathlike) -> None:
        """Write ``symbol id`` lines in id order."""
        with atomic_output(path) as tmp:
            tmp.write_text("".join(f"{s} {i}\n" for i, s in sorted(self.symbols.items())), encoding="utf-8")
            _apply_umask([tmp])

    def __getitem__(self, symbol: str) -> int:
        return self.ids[symbol]

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        """Symbols in id order."""
        return (s for _, s in sorted(self.symbols.items()))

    def symbol(self, i: int) -> str:
        """The symbol with id ``i``."""
        return self.symbols[i]

    @property
    def max_id(self) -> int:
        return max(self.symbols)


# ---------------------------------------------------------------------------
# Building blocks (pure functions, tested on their own)
# ---------------------------------------------------------------------------


def position_phones(base: str) -> list[str]:
    """The word-position variants of a base phone: ``AA_B AA_E AA_I AA_S``."""
    return [f"{base}_{p}" for p in POSITIONS]


def add_position_markers(pron: Pronunciation) -> Pronunciation:
    """Mark phones with their word position: ``_S`` alone, else ``_B ... _I ... _E``."""
    if len(pron) == 1:
        return (f"{pron[0]}_S",)
    return (f"{pron[0]}_B",) + tuple(f"{p}_I" for p in pron[1:-1]) + (f"{pron[-1]}_E",)


def strip_position_marker(phone: str) -> str:
    """``AA_B`` -> ``AA`` (phones without a marker are returned unchanged)."""
    base, sep, pos = phone.rpartition("_")
    return base if sep and pos in POSITIONS else phone


def add_lex_disambig(entries: Sequence[tuple[str, Pronunciation]]) -> tuple[list[tuple[str, Pronunciation]], int]:
    """Kaldi's ``utils/add_lex_disambig.pl``: make the lexicon determinizable.

    A pronunciation that is shared by several entries (homophones) or that is
    a proper prefix of another pronunciation gets a disambiguation symbol
    appended: the first such entry of a phone sequence gets ``#1``, the next
    ``#2``, and so on, in lexicon order.  Empty pronunciations are not allowed
    here (the lexicon is validated first).

    Args:
        entries: (word, pronunciation) in lexicon order.

    Returns:
        (entries with ``#k`` appended where needed, the largest ``k`` used; 0 if none).
    """
    count: dict[Pronunciation, int] = {}
    prefixes: set[Pronunciation] = set()
    for _, pron in entries:
        count[pron] = count.get(pron, 0) + 1
        for n in range(1, len(pron)):
            prefixes.add(pron[:n])
    last_used: dict[Pronunciation, int] = {}
    max_disambig = 0
    out: list[tuple[str, Pronunciation]] = []
    for word, pron in entries:
        if pron in prefixes or count[pron] > 1:
            k = last_used.get(pron, 0) + 1
            last_used[pron] = k
            max_disambig = max(max_disambig, k)
            out.append((word, pron + (f"#{k}",)))
        else:
            out.append((word, pron))
    return out, max_disambig


def make_topo(
    nonsilence: Sequence[int], silence: Sequence[int], num_nonsil_states: int = 3, num_sil_states: int = 5
) -> str:
    """Kaldi's ``utils/gen_topo.pl``: the text HMM topology.

    Nonsilence phones: ``num_nonsil_states`` left-to-right states, self-loop
    0.75 / forward 0.25.  Silence phones (``num_sil_states`` >= 3): the first
    state goes to itself and the central states, the central states are fully
    connected to each other and the last emitting state (all with probability
    ``1/(num_sil_states-1)``), the last emitting state has self-loop 0.75 and
    exit 0.25.  Each entry ends with a non-emitting final state.

    Args:
        nonsilence: phone ids with the nonsilence topology.
        silence: phone ids with the silence topology.
    """
    if num_nonsil_states < 1 or num_sil_states < 1 or num_sil_states == 2:
        raise ValueError("need >= 1 nonsilence and 1 or >= 3 silence states")
    lines = ["<Topology>", "<TopologyEntry>", "<ForPhones>", " ".join(map(str, nonsilence)), "</ForPhones>"]
    for x in range(num_nonsil_states):
        lines.append(f"<State> {x} <PdfClass> {x} <Transition> {x} 0.75 <Transition> {x + 1} 0.25 </State>")
    lines += [f"<State> {num_nonsil_states} </State>", "</TopologyEntry>"]
    lines += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, silence)), "</ForPhones>"]
    if num_sil_states > 1:
        transp = 1.0 / (num_sil_states - 1)
        first = " ".join(f"<Transition> {n} {transp:g}" for n in range(num_sil_states - 1))
        lines.append(f"<State> 0 <PdfClass> 0 {first} </State>")
        central = " ".join(f"<Transition> {n} {transp:g}" for n in range(1, num_sil_states))
        for s in range(1, num_sil_states - 1):
            lines.append(f"<State> {s} <PdfClass> {s} {central} </State>")
        last = num_sil_states - 1
        lines.append(
            f"<State> {last} <PdfClass> {last} <Transition> {last} 0.75 <Transition> {num_sil_states} 0.25 </State>"
        )
        lines.append(f"<State> {num_sil_states} </State>")
    else:
        lines.append("<State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State>")
        lines.append("<State> 1 </State>")
    lines += ["</TopologyEntry>", "</Topology>"]
    return "\n".join(lines) + "\n"


def lexicon_fst_text(
    entries: Sequence[tuple[int, Sequence[int]]],
    sil_prob: float,
    sil_phone: int,
    sil_disambig: Optional[int] = None,
) -> str:
    """The text form of L (Kaldi's ``utils/lang/make_lexicon_fst.py``), integer labels.

    With ``0 < sil_prob < 1``: state 0 starts, state 1 is the loop state where
    words begin and end (final), state 2 is where words end when followed by
    silence.  The start goes to 1 with cost ``-ln(1-sil_prob)`` or to 2 with
    ``-ln(sil_prob)``; 2 goes to 1 through ``SIL`` (and then the silence
    disambiguation symbol in ``L_disambig``); the last phone of every word
    leads to 1 or to 2 with the same two costs.  So silence is optional at the
    start, between words and at the end.  With ``sil_prob == 0`` there is a
    single loop state and no silence.

    Args:
        entries: (word id, phone ids incl. any disambiguation symbols).
        sil_prob: probability of silence after a word (and at the start).
        sil_phone: id of the optional silence phone.
        sil_disambig: id of the disambiguation symbol after silence (L_disambig only).
    """
    lines: list[str] = []
    if sil_prob == 0.0:
        loop, next_state = 0, 1
        for word, pron in entries:
            cur = loop
            for i, phone in enumerate(pron[:-1]):
                lines.append(f"{cur} {next_state} {phone} {word if i == 0 else 0}")
                cur, next_state = next_state, next_state + 1
            lines.append(f"{cur} {loop} {pron[-1]} {word if len(pron) == 1 else 0}")
        lines.append(f"{loop} 0")
        return "\n".join(lines) + "\n"
    if not 0.0 < sil_prob < 1.0:
        raise ValueError(f"sil_prob must be in [0, 1), got {sil_prob}")
    sil_cost = -math.log(sil_prob)
    no_sil_cost = -math.log(1.0 - sil_prob)
    start, loop, sil_state, next_state = 0, 1, 2, 3
    lines.append(f"{start} {loop} 0 0 {no_sil_cost!r}")
    lines.append(f"{start} {sil_state} 0 0 {sil_cost!r}")
    if sil_disambig is None:
        lines.append(f"{sil_state} {loop} {sil_phone} 0")
    else:
        lines.append(f"{sil_state} {next_state} {sil_phone} 0")
        lines.append(f"{next_state} {loop} {sil_disambig} 0")
        next_state += 1
    for word, pron in entries:
        cur = loop
        for i, phone in enumerate(pron[:-1]):
            lines.append(f"{cur} {next_state} {phone} {word if i == 0 else 0}")
            cur, next_state = next_state, next_state + 1
        olabel = word if len(pron) == 1 else 0
        lines.append(f"{cur} {loop} {pron[-1]} {olabel} {no_sil_cost!r}")
        lines.append(f"{cur} {sil_state} {pron[-1]} {olabel} {sil_cost!r}")
    lines.append(f"{loop} 0")
    return "\n".join(lines) + "\n"


def _compile_lexicon_fst(
    entries: Sequence[tuple[int, Sequence[int]]],
    sil_prob: float,
    sil_phone: int,
    sil_disambig: Optional[int] = None,
    self_loop: Optional[tuple[int, int]] = None,
) -> "kfst.StdVectorFst":
    fst = kfst.compile(lexicon_fst_text(entries, sil_prob, sil_phone, sil_disambig))
    if self_loop is not None:
        # fstaddselfloops: #0:#0 at every state with word output or final, so
        # G's back-off #0 can pass through L in L o G.
        kfst.add_self_loops(fst, [self_loop[0]], [self_loop[1]])
    kfst.arcsort(fst, sort_type="olabel")
    return fst


# ---------------------------------------------------------------------------
# prepare_lang
# ---------------------------------------------------------------------------


def prepare_lang(
    lexicon: Lexicon,
    out_dir: Pathlike,
    sil_prob: float = 0.5,
    position_dependent: bool = False,
    num_nonsil_states: int = 3,
    num_sil_states: int = 5,
    source: str = "lexicon",
) -> "LangDir":
    """Write a Kaldi lang directory for ``lexicon`` (see the module docstring).

    The phone inventory is fixed (``SIL``, ``SPN``, the 39 CMU phones) so phone
    ids do not depend on the vocabulary.  The whole directory is written under
    a temporary name and renamed into place, then marked done; an existing
    ``out_dir`` (including a ``G.fst`` in it) is replaced.

    Args:
        lexicon: words and pronunciations (base phones); ``lexicon.oov`` is the OOV word.
        out_dir: the lang directory to (re)create.
        sil_prob: probability of optional silence after each word (and at the
            start); 0 gives an L without optional silence.
        position_dependent: use word-position-dependent phones (``AA_B`` ...).
        num_nonsil_states: HMM states of nonsilence phones.
        num_sil_states: HMM states of silence phones.
        source: name of the lexicon's origin for error messages.

    Returns:
        The validated :class:`LangDir`.

    Raises:
        DataError: the lexicon has unknown phones, empty pronunciations or reserved words.
    """
    if not 0.0 <= sil_prob < 1.0:
        raise ValueError(f"sil_prob must be in [0, 1), got {sil_prob}")
    lexicon.validate(source)
    out_dir = Path(out_dir)

    base_sil = list(SILENCE_PHONES)
    base_nonsil = sorted(CMU_PHONES)
    if position_dependent:
        sil_phones = [v for p in base_sil for v in [p] + position_phones(p)]
        nonsil_phones = [v for p in base_nonsil for v in position_phones(p)]
        mark = add_position_markers
    else:
        sil_phones, nonsil_phones = base_sil, base_nonsil
        mark = tuple

    entries: list[tuple[str, Pronunciation]] = []
    for word in lexicon.words:
        seen: list[Pronunciation] = []
        for pron in lexicon.prons[word]:
            if tuple(pron) in seen:
                log.warning("%s: duplicate pronunciation of %r dropped", source, word)
                continue
            seen.append(tuple(pron))
            entries.append((word, mark(tuple(pron))))
    disambig_entries, max_disambig = add_lex_disambig(entries)
    ndisambig = max_disambig + 1  # one more for the silence in L_disambig (prepare_lang.sh)
    disambig = [f"#{k}" for k in range(ndisambig + 1)]

    phones = SymbolTable.from_symbols([EPS] + sil_phones + nonsil_phones + disambig)
    words = SymbolTable.from_symbols([EPS] + lexicon.words + [WORD_DISAMBIG, BOS, EOS])

    with atomic_output(out_dir, is_dir=True) as tmp:
        phones.write(tmp / "phones.txt")
        words.write(tmp / "words.txt")
        _write_lines(tmp / "lexicon.txt", (f"{w} {' '.join(p)}" for w, p in entries))
        _write_lines(tmp / "lexicon_disambig.txt", (f"{w} {' '.join(p)}" for w, p in disambig_entries))
        _write_lines(tmp / "oov.txt", [lexicon.oov])
        _write_lines(tmp / "oov.int", [str(words[lexicon.oov])])

        pdir = tmp / "phones"
        pdir.mkdir()
        _write_phone_list(pdir, "silence", [[p] for p in sil_phones], phones)
        _write_phone_list(pdir, "nonsilence", [[p] for p in nonsil_phones], phones)
        _write_phone_list(pdir, "optional_silence", [[SIL]], phones)
        _write_phone_list(pdir, "disambig", [[p] for p in disambig], phones)
        _write_phone_list(pdir, "context_indep", [[p] for p in sil_phones], phones)
        groups = [[p] + position_phones(p) if position_dependent else [p] for p in base_sil]
        groups += [position_phones(p) if position_dependent else [p] for p in base_nonsil]
        _write_phone_list(pdir, "sets", groups, phones, csl=False)
        _write_lines(pdir / "roots.txt", (f"shared split {' '.join(g)}" for g in groups))
        _write_lines(pdir / "roots.int", (f"shared split {' '.join(str(phones[p]) for p in g)}" for g in groups))
        questions = [sil_phones, nonsil_phones]
        if position_dependent:  # as prepare_lang.sh: one question per word position
            questions += [[f"{p}_{pos}" for p in base_nonsil] for pos in POSITIONS]
            questions += [[p + sfx for p in base_sil] for sfx in ("", "_B", "_E", "_I", "_S")]
        _write_phone_list(pdir, "extra_questions", questions, phones, csl=False)
        _write_lines(pdir / "wdisambig.txt", [WORD_DISAMBIG])
        _write_lines(pdir / "wdisambig_phones.int", [str(phones[WORD_DISAMBIG])])
        _write_lines(pdir / "wdisambig_words.int", [str(words[WORD_DISAMBIG])])
        if position_dependent:
            boundary = [(p, "nonword") for p in base_sil]
            boundary += [
                (p, _BOUNDARY_NAMES[p.rsplit("_", 1)[1]]) for p in sil_phones + nonsil_phones if p not in base_sil
            ]
            boundary.sort(key=lambda pb: phones[pb[0]])
            _write_lines(pdir / "word_boundary.txt", (f"{p} {b}" for p, b in boundary))
            _write_lines(pdir / "word_boundary.int", (f"{phones[p]} {b}" for p, b in boundary))

        (tmp / "topo").write_text(
            make_topo(
                [phones[p] for p in nonsil_phones],
                [phones[p] for p in sil_phones],
                num_nonsil_states,
                num_sil_states,
            ),
            encoding="utf-8",
        )

        sil_id = phones[SIL]
        plain = [(words[w], [phones[p] for p in pron]) for w, pron in entries]
        with_disambig = [(words[w], [phones[p] for p in pron]) for w, pron in disambig_entries]
        L = _compile_lexicon_fst(plain, sil_prob, sil_id)
        _write_fst(L, tmp / "L.fst")
        L_disambig = _compile_lexicon_fst(
            with_disambig,
            sil_prob,
            sil_id,
            sil_disambig=phones[f"#{ndisambig}"] if sil_prob > 0 else None,
            self_loop=(phones[WORD_DISAMBIG], words[WORD_DISAMBIG]),
        )
        _write_fst(L_disambig, tmp / "L_disambig.fst")
        # Validate the tables before the directory replaces anything (the FSTs
        # were just built from them; LangDir.load checks those too).
        LangDir.load(tmp, check_fsts=False)
        _apply_umask([tmp, *tmp.rglob("*")])
    mark_done(out_dir)
    log.info(
        "prepared %s: %d words, %d lexicon entries, %d phones, disambig #0..#%d",
        out_dir, len(lexicon.words), len(entries), len(sil_phones) + len(nonsil_phones), ndisambig,
    )
    return LangDir.load(out_dir, validate=False)


def _apply_umask(paths: Sequence[Path]) -> None:
    """Give temporary files/dirs (created 0600/0700 by atomic_output) the permissions of normal ones."""
    umask = os.umask(0o022)
    os.umask(umask)
    for path in paths:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_phone_list(
    pdir: Path, name: str, groups: Sequence[Sequence[str]], phones: SymbolTable, csl: bool = True
) -> None:
    _write_lines(pdir / f"{name}.txt", (" ".join(g) for g in groups))
    _write_lines(pdir / f"{name}.int", (" ".join(str(phones[p]) for p in g) for g in groups))
    if csl:
        _write_lines(pdir / f"{name}.csl", [":".join(str(phones[p]) for g in groups for p in g)])


def _write_fst(fst: "kfst.StdVectorFst", path: Path) -> None:
    if not fst.write(str(path)):
        raise OSError(f"could not write {path}")


# ---------------------------------------------------------------------------
# LangDir
# ---------------------------------------------------------------------------


@dataclass
class LangDir:
    """A lang directory loaded back: symbol tables, phone sets, lexicon FSTs.

    Attributes:
        path: the directory.
        phones: ``phones.txt``.
        words: ``words.txt``.
        silence_phones: ids from ``phones/silence.int``.
        nonsilence_phones: ids from ``phones/nonsilence.int``.
        optional_silence: id of the optional silence phone.
        disambig_phones: ids of ``#0..#K`` (``phones/disambig.int``).
        context_indep: ids from ``phones/context_indep.int``.
        oov: the OOV word (``oov.txt``).
        position_dependent: whether phones carry word-position markers.
    """

    path: Path
    phones: SymbolTable
    words: SymbolTable
    silence_phones: list[int]
    nonsilence_phones: list[int]
    optional_silence: int
    disambig_phones: list[int]
    context_indep: list[int]
    oov: str
    position_dependent: bool

    @classmethod
    def load(cls, path: Pathlike, validate: bool = True, check_fsts: bool = False) -> "LangDir":
        """Load (and by default validate) a lang directory.

        Args:
            path: the lang directory.
            validate: run :meth:`validate` (tables, phone lists, topo, lexicons).
            check_fsts: also scan every arc of L/L_disambig/G (seconds for a
                100k-word lexicon, so off by default; ``asr-hf validate-lang`` does it).

        Raises:
            DataError: naming the file that is missing or inconsistent.
        """
        path = Path(path)
        if not path.is_dir():
            raise DataError(str(path), "lang directory does not exist")
        phones = SymbolTable.read(path / "phones.txt")
        words = SymbolTable.read(path / "words.txt")

        def phone_list(name: str, single: bool = False) -> list[int]:
            txt, ints = path / "phones" / f"{name}.txt", path / "phones" / f"{name}.int"
            names = _read_tokens(txt)
            ids = [int(t) for t in _read_tokens(ints, numeric=True)]
            unknown = [p for p in names if p not in phones]
            if unknown:
                raise DataError(str(txt), f"phone(s) {unknown[:5]} not in phones.txt")
            if [phones[p] for p in names] != ids:
                raise DataError(str(ints), f"does not match {txt.name} through phones.txt")
            if single and len(ids) != 1:
                raise DataError(str(txt), f"expected exactly one phone, got {len(ids)}")
            return ids

        oov_txt, oov_int = path / "oov.txt", path / "oov.int"
        oov_tokens = _read_tokens(oov_txt)
        if len(oov_tokens) != 1:
            raise DataError(str(oov_txt), "expected exactly one word")
        oov = oov_tokens[0]
        if oov not in words:
            raise DataError(str(oov_txt), f"OOV word {oov!r} is not in words.txt")
        if [int(t) for t in _read_tokens(oov_int, numeric=True)] != [words[oov]]:
            raise DataError(str(oov_int), f"does not match the id of {oov!r} in words.txt")

        lang = cls(
            path=path,
            phones=phones,
            words=words,
            silence_phones=phone_list("silence"),
            nonsilence_phones=phone_list("nonsilence"),
            optional_silence=phone_list("optional_silence", single=True)[0],
            disambig_phones=phone_list("disambig"),
            context_indep=phone_list("context_indep"),
            oov=oov,
            position_dependent=(path / "phones" / "word_boundary.txt").is_file(),
        )
        if validate:
            lang.validate(check_fsts=check_fsts)
        return lang

    # -- paths and ids ------------------------------------------------------

    @property
    def topo_path(self) -> Path:
        return self.path / "topo"

    @property
    def L_path(self) -> Path:
        return self.path / "L.fst"

    @property
    def L_disambig_path(self) -> Path:
        return self.path / "L_disambig.fst"

    @property
    def G_path(self) -> Path:
        return self.path / "G.fst"

    @property
    def oov_id(self) -> int:
        return self.words[self.oov]

    @property
    def word_disambig_phone(self) -> int:
        """Phone id of ``#0`` (input side of L_disambig's back-off self-loops)."""
        return self.phones[WORD_DISAMBIG]

    @property
    def word_disambig_word(self) -> int:
        """Word id of ``#0`` (G's back-off input label)."""
        return self.words[WORD_DISAMBIG]

    @property
    def hmm_phones(self) -> list[int]:
        """All real phones (silence + nonsilence), sorted: what the topology covers."""
        return sorted(self.silence_phones + self.nonsilence_phones)

    @property
    def vocabulary(self) -> list[str]:
        """The real words of ``words.txt`` (no ``<eps>``, ``#0``, ``<s>``, ``</s>``)."""
        return [w for w in self.words if w not in (EPS, WORD_DISAMBIG, BOS, EOS)]

    def word_ids(self, words: Union[str, Sequence[str]], map_oov: bool = True, where: str = "transcript") -> list[int]:
        """Word ids of a transcript; words not in ``words.txt`` become the OOV word.

        Args:
            words: a transcript string or a word sequence.
            map_oov: map unknown words to ``oov``; otherwise raise.
            where: utterance id / file:line for the error message.

        Raises:
            DataError: an unknown word with ``map_oov=False``, or a special symbol.
        """
        tokens = words.split() if isinstance(words, str) else list(words)
        out: list[int] = []
        for w in tokens:
            if w in (EPS, WORD_DISAMBIG, BOS, EOS):
                raise DataError(where, f"special symbol {w!r} in transcript")
            if w in self.words:
                out.append(self.words[w])
            elif map_oov:
                out.append(self.oov_id)
            else:
                raise DataError(where, f"word {w!r} is not in {self.path / 'words.txt'}")
        return out

    def phone_ids(self, phones: Union[str, Sequence[str]]) -> list[int]:
        """Ids of phone names (a string or a sequence)."""
        tokens = phones.split() if isinstance(phones, str) else list(phones)
        return [self.phones[p] for p in tokens]

    # -- loaders ------------------------------------------------------------

    def topo(self) -> "khg.HmmTopology":
        """The HMM topology (``khg.HmmTopology.read`` takes the text, not a path)."""
        topo = khg.HmmTopology()
        try:
            topo.read(self.topo_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(str(self.topo_path), "no such file") from None
        except Exception as exc:  # the binding raises RuntimeError with Kaldi's message
            raise DataError(str(self.topo_path), f"not a valid Kaldi topology: {exc}") from None
        return topo

    def L(self, disambig: bool = False) -> "kfst.StdVectorFst":
        """A fresh copy of ``L.fst`` (or ``L_disambig.fst``), olabel-sorted.

        ``khg.TrainingGraphCompiler`` keeps a pointer to (and sorts) the FST it
        is given: keep the returned object alive as long as the compiler.
        """
        return _read_fst(self.L_disambig_path if disambig else self.L_path)

    def G(self) -> "kfst.StdVectorFst":
        """``G.fst`` (written by :func:`asr_hf.lang.lm.make_G`)."""
        return _read_fst(self.G_path)

    def lexicon(self) -> Lexicon:
        """``lexicon.txt`` back as a :class:`Lexicon` of base (position-independent) phones."""
        prons: dict[str, list[Pronunciation]] = {}
        for word, pron in self._read_lexicon(self.path / "lexicon.txt"):
            base = tuple(strip_position_marker(p) for p in pron) if self.position_dependent else pron
            prons.setdefault(word, []).append(base)
        return Lexicon({w: tuple(p) for w, p in prons.items()}, oov=self.oov)

    def _read_lexicon(self, path: Path, allow_disambig: bool = False) -> list[tuple[str, Pronunciation]]:
        if not path.is_file():
            raise DataError(str(path), "no such file")
        disambig = {self.phones.symbol(i) for i in self.disambig_phones}
        real_phones = {self.phones.symbol(i) for i in self.hmm_phones}
        allowed = real_phones | disambig if allow_disambig else real_phones
        real_words = set(self.words.ids) - {EPS, WORD_DISAMBIG, BOS, EOS}
        out: list[tuple[str, Pronunciation]] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            word, pron = parts[0], tuple(parts[1:])
            if word not in real_words:
                raise DataError(f"{path}:{lineno}", f"word {word!r} is not a word of words.txt")
            if not pron:
                raise DataError(f"{path}:{lineno}", f"word {word!r} has no pronunciation")
            if not allowed.issuperset(pron):
                bad = [p for p in pron if p not in allowed]
                raise DataError(f"{path}:{lineno}", f"unknown phone(s) {bad} for word {word!r}")
            if allow_disambig and pron[-1] in disambig:
                if pron[0] in disambig or any(p in disambig for p in pron[:-1]):
                    raise DataError(f"{path}:{lineno}", "only one disambiguation symbol, at the end, is allowed")
            out.append((word, pron))
        if not out:
            raise DataError(str(path), "empty lexicon")
        return out

    # -- validation ---------------------------------------------------------

    def validate(self, check_fsts: bool = True) -> None:
        """The essential checks of Kaldi's ``utils/validate_lang.pl``.

        Raises:
            DataError: naming the offending file.
        """
        p = self.path
        for table, name in ((self.phones, "phones.txt"), (self.words, "words.txt")):
            if table.ids.get(EPS) != 0:
                raise DataError(str(p / name), "<eps> must have id 0")
        for sym in (WORD_DISAMBIG, BOS, EOS):
            if sym not in self.words:
                raise DataError(str(p / "words.txt"), f"missing {sym}")
        bad_words = [w for w in self.words if w.startswith("#") and w != WORD_DISAMBIG]
        if bad_words:
            raise DataError(str(p / "words.txt"), f"disambiguation-like words {bad_words[:5]}")

        sil, nonsil, dis = set(self.silence_phones), set(self.nonsilence_phones), set(self.disambig_phones)
        pdir = p / "phones"
        if sil & nonsil:
            raise DataError(str(pdir / "nonsilence.txt"), "shares phones with silence.txt")
        if (sil | nonsil) & dis:
            raise DataError(str(pdir / "disambig.txt"), "shares phones with silence/nonsilence")
        every = set(self.phones.symbols) - {0}
        if sil | nonsil | dis != every:
            missing = sorted(self.phones.symbol(i) for i in every - (sil | nonsil | dis))
            raise DataError(str(p / "phones.txt"), f"phones in no phone list: {missing[:5]}")
        names_dis = [self.phones.symbol(i) for i in self.disambig_phones]
        if any(not _DISAMBIG_RE.fullmatch(n) for n in names_dis):
            raise DataError(str(pdir / "disambig.txt"), "disambiguation symbols must look like #k")
        hash_phones = [n for n in self.phones if n.startswith("#")]
        if sorted(hash_phones) != sorted(names_dis) or WORD_DISAMBIG not in names_dis:
            raise DataError(str(pdir / "disambig.txt"), "must list every #k phone of phones.txt, #0 included")
        if self.optional_silence not in sil:
            raise DataError(str(pdir / "optional_silence.txt"), "optional silence is not a silence phone")
        if not set(self.context_indep) <= sil | nonsil:
            raise DataError(str(pdir / "context_indep.txt"), "lists phones that are not real phones")
        for name, expect in (
            ("wdisambig_phones.int", self.word_disambig_phone),
            ("wdisambig_words.int", self.word_disambig_word),
        ):
            f = pdir / name
            if f.is_file() and [int(t) for t in _read_tokens(f, numeric=True)] != [expect]:
                raise DataError(str(f), "does not match the id of #0")

        real = set(self.hmm_phones)
        for name in ("sets.int", "extra_questions.int", "roots.int"):
            f = pdir / name
            if f.is_file():
                keywords = ("shared", "not-shared", "split", "not-split")
                ids = [t for t in f.read_text(encoding="utf-8").split() if t not in keywords]
                if any(not t.isdigit() or int(t) not in real for t in ids):
                    raise DataError(str(f), "lists ids that are not silence/nonsilence phones")

        topo = self.topo()
        if sorted(topo.phones) != self.hmm_phones:
            raise DataError(str(self.topo_path), "must cover exactly the silence and nonsilence phones")

        lex = self._read_lexicon(p / "lexicon.txt")
        lex_d = self._read_lexicon(p / "lexicon_disambig.txt", allow_disambig=True)
        dis_names = set(names_dis)
        stripped = [(w, pron[:-1] if pron[-1] in dis_names else pron) for w, pron in lex_d]
        if stripped != lex:
            raise DataError(str(p / "lexicon_disambig.txt"), "does not match lexicon.txt once #k are removed")
        if self.oov not in {w for w, _ in lex}:
            raise DataError(str(p / "lexicon.txt"), f"the OOV word {self.oov!r} has no pronunciation")

        if check_fsts:
            self._check_lexicon_fst(self.L_path, disambig=False)
            self._check_lexicon_fst(self.L_disambig_path, disambig=True)
            if self.G_path.is_file():
                self._check_G()

    def _check_lexicon_fst(self, path: Path, disambig: bool) -> None:
        fst = _read_fst(path)
        if fst.start < 0:
            raise DataError(str(path), "empty FST (no start state)")
        if not fst.is_olabel_sorted:
            raise DataError(str(path), "not sorted on output labels")
        arcs = fst_arcs(fst)
        ilabel, olabel = arcs[:, 2], arcs[:, 3]
        bad = ~np.isin(ilabel, list(self.phones.symbols))
        if bad.any():
            raise DataError(str(path), f"input label {int(ilabel[bad][0])} is not in phones.txt")
        special = [self.words[BOS], self.words[EOS]] + ([] if disambig else [self.word_disambig_word])
        bad = ~np.isin(olabel, list(self.words.symbols)) | np.isin(olabel, special)
        if bad.any():
            raise DataError(str(path), f"output label {int(olabel[bad][0])} is not a word of words.txt")
        if not disambig:
            bad = np.isin(ilabel, self.disambig_phones)
            if bad.any():
                raise DataError(str(path), f"disambiguation symbol {self.phones.symbol(int(ilabel[bad][0]))} in L.fst")
        else:
            loop = arcs[:, 0] == arcs[:, 1]
            loop &= (ilabel == self.word_disambig_phone) & (olabel == self.word_disambig_word)
            if not loop.any():
                raise DataError(str(path), "lacks the #0:#0 self-loop for G's back-off arcs")

    def _check_G(self) -> None:
        fst = _read_fst(self.G_path)
        if fst.start < 0:
            raise DataError(str(self.G_path), "empty FST (no start state)")
        arcs = fst_arcs(fst)
        labels = arcs[:, 2:4].ravel()
        bad = ~np.isin(labels, list(self.words.symbols))
        if bad.any():
            raise DataError(str(self.G_path), f"label {int(labels[bad][0])} is not in words.txt")
        if np.isin(labels, [self.words[BOS], self.words[EOS]]).any():
            raise DataError(str(self.G_path), "contains <s> or </s> arcs")


def fst_arcs(fst: "kfst.StdVectorFst") -> np.ndarray:
    """All arcs of an FST as an int64 array of rows ``(src, dst, ilabel, olabel)``.

    Goes through the text form, which is much faster than Python arc iterators.
    """
    text = fst.to_str(show_weight_one=True)
    text = _FINAL_LINE_RE.sub("", text)  # final-weight lines: "state weight"
    if not text.strip():
        return np.zeros((0, 4), dtype=np.int64)
    values = np.fromstring(text, sep=" ")
    if values.size % 5:
        raise ValueError("unexpected FST text format")
    return values.reshape(-1, 5)[:, :4].astype(np.int64)


_FINAL_LINE_RE = re.compile(r"^\d+[ \t]+\S+[ \t]*(?:\n|$)", re.M)


def _read_tokens(path: Path, numeric: bool = False) -> list[str]:
    if not path.is_file():
        raise DataError(str(path), "no such file")
    tokens = path.read_text(encoding="utf-8").split()
    if numeric:
        bad = [t for t in tokens if not re.fullmatch(r"\d+", t)]
        if bad:
            raise DataError(str(path), f"non-integer entries {bad[:3]}")
    return tokens


def _read_fst(path: Path) -> "kfst.StdVectorFst":
    if not path.is_file():
        raise DataError(str(path), "no such file")
    try:
        fst = kfst.StdVectorFst.read(str(path))
    except Exception as exc:
        raise DataError(str(path), f"not a readable OpenFst file: {exc}") from None
    if fst is None:
        raise DataError(str(path), "not a readable OpenFst file")
    return fst
