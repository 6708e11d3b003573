"""Kaldi's binary object formats, written and read in Python.

kaldi-hmm-gmm 1.1.4 can write a :class:`ContextDependency` but cannot write a
:class:`TransitionModel` or :class:`AmDiagGmm`, and it cannot build a tree at
all.  This module speaks Kaldi's binary serialization directly so that

* a decision tree built in Python (:mod:`asr_hf.gmm.tree`) is serialized as a
  Kaldi ``tree`` file and loaded into ``khg.ContextDependency`` (through its
  pickle state, which is exactly the binary stream without the ``\\0B`` header);
* ``final.mdl`` (``TransitionModel`` followed by ``AmDiagGmm``, what Kaldi's
  ``gmm-est`` writes) is written and read in the same binary format, so models
  move between this toolkit and Kaldi.

Binary conventions (Kaldi ``io-funcs``): a file starts with ``\\0B``; a token is
its characters followed by one space; a basic type is one size byte
(``sizeof(T)``, negated for unsigned integers) followed by the little-endian
value; an integer vector is a size byte, an int32 count and the raw elements;
a float vector is the token ``FV``, an int32 (with size byte) and raw floats; a
matrix is ``FM``, rows, cols and the raw row-major floats.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output

BINARY_HEADER = b"\0B"

# Keys of Kaldi's event maps: -1 is the pdf-class, 0..N-1 the phone positions.
PDF_CLASS_KEY = -1


# --------------------------------------------------------------------------- #
# Primitive writers / readers
# --------------------------------------------------------------------------- #
class KaldiWriter:
    """Accumulates Kaldi binary data (without the ``\\0B`` header)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def token(self, tok: str) -> None:
        self.buf.write(tok.encode("ascii") + b" ")

    def int32(self, v: int) -> None:
        self.buf.write(b"\x04" + struct.pack("<i", int(v)))

    def uint32(self, v: int) -> None:
        self.buf.write(b"\xfc" + struct.pack("<I", int(v)))

    def float32(self, v: float) -> None:
        self.buf.write(b"\x04" + struct.pack("<f", float(v)))

    def int_vector(self, v: Sequence[int]) -> None:
        arr = np.asarray(v, dtype="<i4")
        self.buf.write(b"\x04" + struct.pack("<i", arr.size) + arr.tobytes())

    def float_vector(self, v: np.ndarray) -> None:
        arr = np.ascontiguousarray(v, dtype="<f4").reshape(-1)
        self.token("FV")
        self.int32(arr.size)
        self.buf.write(arr.tobytes())

    def float_matrix(self, m: np.ndarray) -> None:
        arr = np.ascontiguousarray(m, dtype="<f4")
        if arr.ndim != 2:
            raise ValueError("matrix must be 2-D")
        self.token("FM")
        self.int32(arr.shape[0])
        self.int32(arr.shape[1])
        self.buf.write(arr.tobytes())

    def getvalue(self) -> bytes:
        return self.buf.getvalue()


class KaldiReader:
    """Reads Kaldi binary data from a byte string (header already stripped)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def _fail(self, what: str) -> DataError:
        return DataError(self.name, f"bad Kaldi binary data at byte {self.pos}: {what}")

    def peek(self) -> str:
        if self.pos >= len(self.data):
            raise self._fail("unexpected end of data")
        return chr(self.data[self.pos])

    def eof(self) -> bool:
        return self.pos >= len(self.data)

    def token(self) -> str:
        end = self.data.find(b" ", self.pos)
        if end < 0:
            raise self._fail("unterminated token")
        tok = self.data[self.pos : end].decode("ascii", errors="replace")
        self.pos = end + 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.token()
        if got != tok:
            raise self._fail(f"expected token {tok!r}, got {got!r}")

    def _basic(self, size_byte: int, fmt: str) -> Union[int, float]:
        if self.pos + 5 > len(self.data):
            raise self._fail("unexpected end of data")
        sz = struct.unpack("<b", self.data[self.pos : self.pos + 1])[0]
        if sz != size_byte:
            raise self._fail(f"size byte {sz}, expected {size_byte}")
        (v,) = struct.unpack(fmt, self.data[self.pos + 1 : self.pos + 5])
        self.pos += 5
        return v

    def int32(self) -> int:
        return int(self._basic(4, "<i"))

    def uint32(self) -> int:
        return int(self._basic(-4, "<I"))

    def float32(self) -> float:
        return float(self._basic(4, "<f"))

    def int_vector(self) -> np.ndarray:
        sz = struct.unpack("<b", self.data[self.pos : self.pos + 1])[0]
        if sz != 4:
            raise self._fail(f"integer vector element size {sz}")
        (n,) = struct.unpack("<i", self.data[self.pos + 1 : self.pos + 5])
        self.pos += 5
        out = np.frombuffer(self.data, dtype="<i4", count=n, offset=self.pos).astype(np.int32)
        self.pos += 4 * n
        return out

    def float_vector(self) -> np.ndarray:
        tok = self.token()
        if tok not in ("FV", "DV"):
            raise self._fail(f"expected FV/DV, got {tok!r}")
        n = self.int32()
        dt = "<f4" if tok == "FV" else "<f8"
        out = np.frombuffer(self.data, dtype=dt, count=n, offset=self.pos).astype(np.float32)
        self.pos += np.dtype(dt).itemsize * n
        return out

    def float_matrix(self) -> np.ndarray:
        tok = self.token()
        if tok not in ("FM", "DM"):
            raise self._fail(f"expected FM/DM, got {tok!r}")
        rows, cols = self.int32(), self.int32()
        dt = "<f4" if tok == "FM" else "<f8"
        n = rows * cols
        out = np.frombuffer(self.data, dtype=dt, count=n, offset=self.pos).astype(np.float32)
        self.pos += np.dtype(dt).itemsize * n
        return out.reshape(rows, cols)


def read_binary_file(path: Pathlike) -> KaldiReader:
    """Open a Kaldi binary file (must start with ``\\0B``)."""
    data = Path(path).read_bytes()
    if not data.startswith(BINARY_HEADER):
        raise DataError(str(path), "not a Kaldi binary file (no \\0B header); text-mode files are not supported")
    r = KaldiReader(data, name=str(path))
    r.pos = 2
    return r


def write_binary_file(path: Pathlike, payload: bytes) -> None:
    """Atomically write ``\\0B`` + payload."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(BINARY_HEADER + payload)


# --------------------------------------------------------------------------- #
# Event maps (decision trees)
# --------------------------------------------------------------------------- #
@dataclass
class ConstantNode:
    """Kaldi ``ConstantEventMap``: a leaf answering ``pdf``."""

    pdf: int


@dataclass
class SplitNode:
    """Kaldi ``SplitEventMap``: ``yes`` if the value of ``key`` is in ``yes_set``."""

    key: int
    yes_set: tuple[int, ...]
    yes: "EventNode"
    no: "EventNode"


@dataclass
class TableNode:
    """Kaldi ``TableEventMap``: child ``table[value of key]`` (``None`` = no answer)."""

    key: int
    table: list[Optional["EventNode"]] = field(default_factory=list)


EventNode = Union[ConstantNode, SplitNode, TableNode]


def write_event_map(w: KaldiWriter, node: Optional[EventNode]) -> None:
    """Serialize an event map exactly as Kaldi's ``EventMap::Write`` (binary)."""
    # Iterative to survive deep trees.
    stack: list[object] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            w.buf.write(item)
        elif item is None:
            w.token("NULL")
        elif isinstance(item, ConstantNode):
            w.token("CE")
            w.int32(item.pdf)
        elif isinstance(item, TableNode):
            w.token("TE")
            w.int32(item.key)
            w.uint32(len(item.table))
            w.token("(")
            stack.append(b") ")
            stack.extend(reversed(item.table))
        elif isinstance(item, SplitNode):
            w.token("SE")
            w.int32(item.key)
            w.int_vector(sorted(set(item.yes_set)))
            w.token("{")
            stack.append(b"} ")
            stack.append(item.no)
            stack.append(item.yes)
        else:  # pragma: no cover - programming error
            raise TypeError(f"not an event map node: {item!r}")


def read_event_map(r: KaldiReader) -> Optional[EventNode]:
    """Parse one event map (inverse of :func:`write_event_map`)."""
    c = r.peek()
    if c == "N":
        r.expect("NULL")
        return None
    if c == "C":
        r.expect("CE")
        return ConstantNode(r.int32())
    if c == "T":
        r.expect("TE")
        key = r.int32()
        size = r.uint32()
        r.expect("(")
        table = [read_event_map(r) for _ in range(size)]
        r.expect(")")
        return TableNode(key, table)
    if c == "S":
        r.expect("SE")
        key = r.int32()
        yes_set = tuple(int(v) for v in r.int_vector())
        r.expect("{")
        yes = read_event_map(r)
        no = read_event_map(r)
        r.expect("}")
        if yes is None or no is None:
            raise r._fail("SplitEventMap with NULL child")
        return SplitNode(key, yes_set, yes, no)
    raise r._fail(f"unexpected character {c!r} in event map")


def context_dependency_bytes(root: EventNode, context_width: int = 3, central_position: int = 1) -> bytes:
    """Binary ``ContextDependency`` (no header): ``N``, ``P`` and the ``ToPdf`` map."""
    w = KaldiWriter()
    w.token("ContextDependency")
    w.int32(context_width)
    w.int32(central_position)
    w.token("ToPdf")
    write_event_map(w, root)
    w.token("EndContextDependency")
    return w.getvalue()


def parse_context_dependency(r: KaldiReader) -> tuple[int, int, EventNode]:
    """Read a binary ``ContextDependency``: returns (N, P, root event map)."""
    r.expect("ContextDependency")
    n, p = r.int32(), r.int32()
    r.expect("ToPdf")
    root = read_event_map(r)
    r.expect("EndContextDependency")
    if root is None:
        raise r._fail("empty tree")
    return n, p, root


def context_dependency_from_bytes(payload: bytes):
    """A ``khg.ContextDependency`` from binary data without the ``\\0B`` header."""
    from asr_hf.utils.kaldi import khg

    cd = khg.ContextDependency.__new__(khg.ContextDependency)
    cd.__setstate__((list(np.frombuffer(payload, dtype=np.int8).tolist()),))
    return cd


def context_dependency_to_bytes(cd) -> bytes:
    """The binary payload (no header) of a ``khg.ContextDependency``."""
    (data,) = cd.__getstate__()
    return np.asarray(data, dtype=np.int64).astype(np.int8).tobytes()


def write_tree(path: Pathlike, root: EventNode, context_width: int = 3, central_position: int = 1) -> None:
    """Write a Kaldi binary ``tree`` file."""
    write_binary_file(path, context_dependency_bytes(root, context_width, central_position))


def read_tree(path: Pathlike):
    """Load a Kaldi binary ``tree`` file as ``khg.ContextDependency``."""
    r = read_binary_file(path)
    return context_dependency_from_bytes(r.data[2:])


def read_tree_nodes(path: Pathlike) -> tuple[int, int, EventNode]:
    """Parse a Kaldi binary ``tree`` file into Python nodes: (N, P, root)."""
    return parse_context_dependency(read_binary_file(path))


# --------------------------------------------------------------------------- #
# HmmTopology / TransitionModel / AmDiagGmm
# --------------------------------------------------------------------------- #
def write_topology(w: KaldiWriter, topo) -> None:
    """Binary ``HmmTopology::Write`` of a ``khg.HmmTopology``."""
    phones, phone2idx, entries = topo.__getstate__()
    is_hmm = all(s.forward_pdf_class == s.self_loop_pdf_class for e in entries for s in e)
    w.token("<Topology>")
    w.int_vector(phones)
    w.int_vector(phone2idx)
    if not is_hmm:
        w.int32(-1)
    w.int32(len(entries))
    for entry in entries:
        w.int32(len(entry))
        for st in entry:
            w.int32(st.forward_pdf_class)
            if not is_hmm:
                w.int32(st.self_loop_pdf_class)
            w.int32(len(st.transitions))
            for dst, prob in st.transitions:
                w.int32(dst)
                w.float32(prob)
    w.token("</Topology>")


def topology_to_text(r: KaldiReader) -> str:
    """Read a binary ``HmmTopology`` and return it in Kaldi's text format."""
    r.expect("<Topology>")
    phones = r.int_vector()
    phone2idx = r.int_vector()
    n = r.int32()
    is_hmm = True
    if n == -1:
        is_hmm = False
        n = r.int32()
    lines = ["<Topology>"]
    for i in range(n):
        lines.append("<TopologyEntry>")
        lines.append("<ForPhones>")
        lines.append(" ".join(str(p) for p in phones if phone2idx[p] == i))
        lines.append("</ForPhones>")
        for j in range(r.int32()):
            fwd = r.int32()
            slp = fwd if is_hmm else r.int32()
            parts = [f"<State> {j}"]
            if fwd != -1:
                parts.append(
                    f"<PdfClass> {fwd}" if is_hmm else f"<ForwardPdfClass> {fwd} <SelfLoopPdfClass> {slp}"
                )
            for _ in range(r.int32()):
                dst = r.int32()
                prob = r.float32()
                parts.append(f"<Transition> {dst} {prob!r}")
            parts.append("</State>")
            lines.append(" ".join(parts))
        lines.append("</TopologyEntry>")
    r.expect("</Topology>")
    lines.append("</Topology>")
    return "\n".join(lines) + "\n"


def transition_tuples(tm) -> np.ndarray:
    """The transition-state tuples of a ``khg.TransitionModel``, shape (S, 4).

    Columns: phone, HMM state, forward pdf, self-loop pdf; row ``s`` is
    transition state ``s + 1``.  (The bindings do not expose the tuple fields,
    so they are parsed from the model's text form.)
    """
    text = str(tm)
    start = text.find("<Triples>")
    is_hmm = start >= 0
    if not is_hmm:
        start = text.find("<Tuples>")
    if start < 0:
        raise ValueError("transition model text has no <Triples>/<Tuples>")
    end = text.find("</Triples>" if is_hmm else "</Tuples>", start)
    fields = text[start:end].split()
    n = int(fields[1])
    ncol = 3 if is_hmm else 4
    arr = np.array(fields[2 : 2 + n * ncol], dtype=np.int64).reshape(n, ncol)
    if is_hmm:
        arr = np.concatenate([arr, arr[:, 2:3]], axis=1)
    return arr.astype(np.int32)


def write_transition_model(w: KaldiWriter, tm) -> None:
    """Binary ``TransitionModel::Write``."""
    topo = tm.topo
    tuples = transition_tuples(tm)
    is_hmm = bool(np.all(tuples[:, 2] == tuples[:, 3]))
    w.token("<TransitionModel>")
    write_topology(w, topo)
    w.token("<Triples>" if is_hmm else "<Tuples>")
    w.int32(len(tuples))
    for row in tuples:
        w.int32(row[0])
        w.int32(row[1])
        w.int32(row[2])
        if not is_hmm:
            w.int32(row[3])
    w.token("</Triples>" if is_hmm else "</Tuples>")
    w.token("<LogProbs>")
    w.float_vector(np.asarray(tm.log_probs, dtype=np.float32))
    w.token("</LogProbs>")
    w.token("</TransitionModel>")


def read_transition_model(r: KaldiReader, tree) -> object:
    """Read a binary ``TransitionModel`` given its tree (``khg.ContextDependency``).

    The bindings cannot construct a transition model from raw tuples, so the
    model is rebuilt from (tree, topology) — which yields the same tuples
    Kaldi made — after checking that the stored tuples agree; then the stored
    transition log-probabilities are installed through the pickle state.
    """
    from asr_hf.utils.kaldi import khg

    r.expect("<TransitionModel>")
    topo = khg.HmmTopology()
    topo.read(topology_to_text(r))
    tok = r.token()
    if tok not in ("<Triples>", "<Tuples>"):
        raise r._fail(f"expected <Triples>/<Tuples>, got {tok!r}")
    ncol = 3 if tok == "<Triples>" else 4
    n = r.int32()
    rows = np.array([[r.int32() for _ in range(ncol)] for _ in range(n)], dtype=np.int32).reshape(n, ncol)
    if ncol == 3:
        rows = np.concatenate([rows, rows[:, 2:3]], axis=1)
    r.expect("</Triples>" if ncol == 3 else "</Tuples>")
    r.expect("<LogProbs>")
    log_probs = r.float_vector()
    r.expect("</LogProbs>")
    r.expect("</TransitionModel>")

    tm = khg.TransitionModel(tree, topo)
    if not np.array_equal(transition_tuples(tm), rows):
        raise r._fail("transition model tuples do not match the tree and topology")
    return with_log_probs(tm, log_probs)


def with_log_probs(tm, log_probs: np.ndarray):
    """A copy of ``tm`` with new transition log-probabilities (index 0 unused).

    Also recomputes the derived non-self-loop log-probabilities the way Kaldi's
    ``ComputeDerivedOfProbs`` does: ``log(1 - p_self_loop)`` per transition state.
    """
    from asr_hf.utils.kaldi import khg

    state = list(tm.__getstate__())
    # state: tuples, topo, state2id, id2state, id2pdf_id, num_pdfs, log_probs, non_self_loop_log_probs
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.shape[0] != len(state[6]):
        raise ValueError(f"{log_probs.shape[0]} log-probs for a model with {len(state[6])}")
    info = _self_loop_tids(tm)
    nsl = [0.0] * len(state[7])
    for s, tid in enumerate(info, start=1):
        if tid > 0:
            p_other = 1.0 - float(np.exp(log_probs[tid]))
            nsl[s] = float(np.log(max(p_other, 1e-10)))
    state[6] = [float(x) for x in log_probs]
    state[7] = nsl
    out = khg.TransitionModel.__new__(khg.TransitionModel)
    out.__setstate__(tuple(state))
    return out


def _self_loop_tids(tm) -> list[int]:
    """For each transition state (1-based order), its self-loop transition-id or 0."""
    out = []
    for s in range(1, tm.num_transition_states + 1):
        first, last = tm.state2id[s], tm.state2id[s + 1]
        sl = 0
        for tid in range(first, last):
            if tm.is_self_loop(tid):
                sl = tid
                break
        out.append(sl)
    return out


@dataclass
class DiagGmmParams:
    """One pdf's diagonal GMM in Kaldi's stored (natural-exponential) form."""

    gconsts: np.ndarray  # (K,)
    weights: np.ndarray  # (K,)
    means_invvars: np.ndarray  # (K, D)
    inv_vars: np.ndarray  # (K, D)


def write_am_diag_gmm(w: KaldiWriter, dim: int, pdfs: Sequence[DiagGmmParams]) -> None:
    """Binary ``AmDiagGmm::Write``."""
    w.token("<DIMENSION>")
    w.int32(dim)
    w.token("<NUMPDFS>")
    w.int32(len(pdfs))
    for p in pdfs:
        w.token("<DiagGMM>")
        w.token("<GCONSTS>")
        w.float_vector(p.gconsts)
        w.token("<WEIGHTS>")
        w.float_vector(p.weights)
        w.token("<MEANS_INVVARS>")
        w.float_matrix(p.means_invvars)
        w.token("<INV_VARS>")
        w.float_matrix(p.inv_vars)
        w.token("</DiagGMM>")


def read_am_diag_gmm(r: KaldiReader) -> tuple[int, list[DiagGmmParams]]:
    """Binary ``AmDiagGmm::Read``: (dim, per-pdf parameters)."""
    r.expect("<DIMENSION>")
    dim = r.int32()
    r.expect("<NUMPDFS>")
    n = r.int32()
    pdfs = []
    for _ in range(n):
        r.expect("<DiagGMM>")
        tok = r.token()
        gconsts = None
        if tok == "<GCONSTS>":
            gconsts = r.float_vector()
            tok = r.token()
        if tok != "<WEIGHTS>":
            raise r._fail(f"expected <WEIGHTS>, got {tok!r}")
        weights = r.float_vector()
        r.expect("<MEANS_INVVARS>")
        mi = r.float_matrix()
        r.expect("<INV_VARS>")
        iv = r.float_matrix()
        r.expect("</DiagGMM>")
        if gconsts is None:
            gconsts = np.zeros_like(weights)
        pdfs.append(DiagGmmParams(gconsts, weights, mi, iv))
    return dim, pdfs


def write_model(path: Pathlike, tm, dim: int, pdfs: Sequence[DiagGmmParams]) -> None:
    """Write ``final.mdl`` as Kaldi's ``gmm-est`` does (binary)."""
    w = KaldiWriter()
    write_transition_model(w, tm)
    write_am_diag_gmm(w, dim, pdfs)
    write_binary_file(path, w.getvalue())


def read_model(path: Pathlike, tree) -> tuple[object, int, list[DiagGmmParams]]:
    """Read a binary Kaldi GMM model: (``khg.TransitionModel``, dim, pdf parameters)."""
    r = read_binary_file(path)
    tm = read_transition_model(r, tree)
    dim, pdfs = read_am_diag_gmm(r)
    if len(pdfs) != tm.num_pdfs:
        raise DataError(str(path), f"{len(pdfs)} GMMs for {tm.num_pdfs} pdfs")
    return tm, dim, pdfs
