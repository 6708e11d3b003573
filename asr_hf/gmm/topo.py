"""HMM topologies and transition-model bookkeeping as numpy arrays.

Kaldi's standard topologies: speech phones are 3-state left-to-right HMMs
(each state loops on itself or moves on), silence phones 5-state HMMs whose
states 1-3 are fully connected (so silence can have a flexible duration
structure).  Every emitting state has its own pdf-class.

:class:`TransitionInfo` turns a ``khg.TransitionModel`` into lookup arrays
indexed by transition-id (phone, HMM state, pdf-class, pdf, self-loop, final),
which is what vectorised alignment processing needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from asr_hf.gmm.kaldi_format import transition_tuples
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output
from asr_hf.utils.kaldi import khg


def topology_text(nonsilence_phones: Sequence[int], silence_phones: Sequence[int]) -> str:
    """Kaldi ``topo`` text: 3-state left-to-right speech phones, 5-state silence.

    Same probabilities as Kaldi's ``utils/gen_topo.pl``.
    """
    lines = ["<Topology>"]
    if nonsilence_phones:
        lines += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, nonsilence_phones)), "</ForPhones>"]
        for s in range(3):
            lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
        lines += ["<State> 3 </State>", "</TopologyEntry>"]
    if silence_phones:
        lines += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, silence_phones)), "</ForPhones>"]
        lines.append(
            "<State> 0 <PdfClass> 0 <Transition> 0 0.25 <Transition> 1 0.25 "
            "<Transition> 2 0.25 <Transition> 3 0.25 </State>"
        )
        for s in (1, 2, 3):
            lines.append(
                f"<State> {s} <PdfClass> {s} <Transition> 1 0.25 <Transition> 2 0.25 "
                "<Transition> 3 0.25 <Transition> 4 0.25 </State>"
            )
        lines += ["<State> 4 <PdfClass> 4 <Transition> 4 0.75 <Transition> 5 0.25 </State>", "<State> 5 </State>"]
        lines.append("</TopologyEntry>")
    lines.append("</Topology>")
    return "\n".join(lines) + "\n"


def write_topology(path: Pathlike, nonsilence_phones: Sequence[int], silence_phones: Sequence[int]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(topology_text(nonsilence_phones, silence_phones))


def load_topology(path: Pathlike) -> "khg.HmmTopology":
    """Read a Kaldi text ``topo`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "topology file missing")
    topo = khg.HmmTopology()
    try:
        topo.read(path.read_text())
    except RuntimeError as exc:
        raise DataError(str(path), f"not a valid Kaldi topology: {exc}") from exc
    return topo


def num_pdf_classes(topo: "khg.HmmTopology") -> dict[int, int]:
    """phone -> number of pdf-classes."""
    table = topo.get_phone_to_num_pdf_classes()
    return {p: table[p] for p in topo.phones}


@dataclass
class TransitionInfo:
    """Per-transition-id lookup arrays of a transition model (index 0 unused).

    Attributes:
        phone / hmm_state / pdf_class / pdf: (num_tids + 1,) int32.
        trans_index: index of the transition among its HMM state's transitions.
        self_loop / final: (num_tids + 1,) bool; ``final`` marks transitions into
            the HMM's final (non-emitting) state, i.e. the last frame of a phone.
        tstate: transition state of each transition-id.
        tuples: (S, 4) [phone, hmm_state, forward_pdf, self_loop_pdf] per transition state.
        state2id: (S + 2,) first transition-id of each transition state.
    """

    phone: np.ndarray
    hmm_state: np.ndarray
    pdf_class: np.ndarray
    pdf: np.ndarray
    trans_index: np.ndarray
    self_loop: np.ndarray
    final: np.ndarray
    tstate: np.ndarray
    tuples: np.ndarray
    state2id: np.ndarray
    num_pdfs: int

    @property
    def num_tids(self) -> int:
        return len(self.pdf) - 1

    @classmethod
    def from_model(cls, tm: "khg.TransitionModel") -> "TransitionInfo":
        tuples = transition_tuples(tm)
        state2id = np.asarray(tm.state2id, dtype=np.int64)
        id2state = np.asarray(tm.id2state, dtype=np.int64)
        n = tm.num_transition_ids
        topo = tm.topo
        phones, phone2idx, entries = topo.__getstate__()
        phone = np.zeros(n + 1, np.int32)
        hmm_state = np.zeros(n + 1, np.int32)
        pdf_class = np.zeros(n + 1, np.int32)
        trans_index = np.zeros(n + 1, np.int32)
        self_loop = np.zeros(n + 1, bool)
        final = np.zeros(n + 1, bool)
        tids = np.arange(1, n + 1)
        ts = id2state[1 : n + 1]
        phone[1:] = tuples[ts - 1, 0]
        hmm_state[1:] = tuples[ts - 1, 1]
        trans_index[1:] = tids - state2id[ts]
        # Per (topology entry, state, transition index) destination table.
        for tid in range(1, n + 1):
            entry = entries[phone2idx[phone[tid]]]
            st = entry[hmm_state[tid]]
            dst = st.transitions[trans_index[tid]][0]
            self_loop[tid] = dst == hmm_state[tid]
            final[tid] = dst == len(entry) - 1
            pdf_class[tid] = st.self_loop_pdf_class if self_loop[tid] else st.forward_pdf_class
        pdf = np.asarray(tm.id2pdf_id, dtype=np.int32)
        return cls(
            phone=phone,
            hmm_state=hmm_state,
            pdf_class=pdf_class,
            pdf=pdf,
            trans_index=trans_index,
            self_loop=self_loop,
            final=final,
            tstate=id2state.astype(np.int32),
            tuples=tuples,
            state2id=state2id,
            num_pdfs=int(tm.num_pdfs),
        )

    def phone_segments(self, ali: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split a transition-id alignment into phones.

        Returns:
            phones (N,), start frames (N,), end frames (N,) (exclusive).
        Raises:
            ValueError: if the alignment does not end at a phone's final state.
        """
        ali = np.asarray(ali)
        if ali.size == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        # Kaldi's SplitToPhones for reordered graphs (the default): a phone
        # ends at its final transition plus any self-loops of the same
        # transition state that follow it.
        ts = self.tstate[ali]
        cont = np.zeros(ali.size, bool)
        cont[1:] = self.self_loop[ali[1:]] & (ts[1:] == ts[:-1])
        run_starts = np.flatnonzero(~cont)
        run_ends = np.concatenate([run_starts[1:], [ali.size]])
        ends = run_ends[self.final[ali[run_starts]]]
        if ends.size == 0 or ends[-1] != ali.size:
            raise ValueError("alignment does not end in a final transition")
        starts = np.concatenate([[0], ends[:-1]])
        return self.phone[ali[starts]], starts, ends

    def tid_lookup(self) -> "TidLookup":
        return TidLookup(self)


class TidLookup:
    """Map (phone, hmm_state, pdf, transition index) -> transition-id, vectorised.

    Used to convert alignments between models sharing a topology (Kaldi's
    ``convert-ali``) once the new pdfs are known.
    """

    def __init__(self, info: TransitionInfo) -> None:
        t = info.tuples.astype(np.int64)
        self.num_pdfs = max(info.num_pdfs, 1)
        self.max_state = int(t[:, 1].max()) + 1 if len(t) else 1
        keys = (t[:, 0] * self.max_state + t[:, 1]) * self.num_pdfs + t[:, 2]
        order = np.argsort(keys)
        self.keys = keys[order]
        self.tstates = (order + 1).astype(np.int64)
        self.state2id = info.state2id

    def __call__(self, phone: np.ndarray, hmm_state: np.ndarray, pdf: np.ndarray, trans_index: np.ndarray) -> np.ndarray:
        k = (phone.astype(np.int64) * self.max_state + hmm_state) * self.num_pdfs + pdf
        pos = np.searchsorted(self.keys, k)
        pos = np.minimum(pos, len(self.keys) - 1)
        if not np.all(self.keys[pos] == k):
            raise ValueError("no transition state for some (phone, hmm-state, pdf)")
        return (self.state2id[self.tstates[pos]] + trans_index).astype(np.int32)
