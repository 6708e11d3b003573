"""Training graphs and forced alignment (Kaldi ``compile-train-graphs``,
``align-equal-compiled``, ``gmm-align-compiled``), plus alignment archives.

An utterance's training graph is ``H o C o L o transcript`` built by
kaldi-hmm-gmm's ``TrainingGraphCompiler``; Viterbi alignment runs Kaldi's
``AlignUtteranceWrapper`` (first with ``beam``, then once more with
``retry_beam``) on a ``DecodableAmDiagGmmScaled``.  An utterance that fails
even with the retry beam is reported and skipped, never fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output
from asr_hf.utils.kaldi import kfst, khg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignOptions:
    """Kaldi ``gmm-align-compiled`` options (``scale_opts`` of the GMM scripts).

    Attributes:
        beam / retry_beam: Viterbi beams; a failure at ``beam`` is retried at ``retry_beam``.
        acoustic_scale / transition_scale / self_loop_scale: graph and acoustic weights.
        boost_silence: factor on silence-pdf likelihoods during alignment
            (``gmm-boost-silence``); 1 = off.
        careful: Kaldi's ``--careful`` (check that the final state is reached).
    """

    beam: float = 10.0
    retry_beam: float = 40.0
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    boost_silence: float = 1.0
    careful: bool = False


class GraphCompiler:
    """Per-utterance training graphs for one (tree, transition model, lang dir).

    Keeps the lexicon FST and the Kaldi objects alive as long as the compiler
    (kaldi-hmm-gmm holds references to them).
    """

    def __init__(self, tm, tree, lang) -> None:
        self.tm = tm
        self.tree = tree
        self.lang = lang
        self.lex = lang.L(disambig=False)
        kfst.arcsort(self.lex, sort_type="olabel")
        self.disambig = list(lang.disambig_phones)
        # As compile-train-graphs: no transition probabilities in the graph; they
        # change every iteration and are added at alignment time.
        opts = khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0)
        self.compiler = khg.TrainingGraphCompiler(self.tm, self.tree, self.lex, self.disambig, opts)

    def compile(self, text: str, utt_id: str) -> "kfst.StdVectorFst":
        words = self.lang.word_ids(text, map_oov=True, where=utt_id)
        if not words:
            raise DataError(utt_id, "empty transcript")
        return self.compiler.compile_graph_from_text(words)


def equal_alignment(graph: "kfst.StdVectorFst", num_frames: int, seed: int = 0) -> Optional[np.ndarray]:
    """A random path of ``num_frames`` transition-ids with evenly spread self-loops.

    Kaldi's ``align-equal-compiled``: None if the graph has no path that long.
    """
    ok, path = kfst.equal_align(graph, num_frames, seed, 10)
    if not ok:
        return None
    ok, isyms, _, _ = kfst.get_linear_symbol_sequence(path)
    if not ok:
        return None
    ali = np.asarray([i for i in isyms if i != 0], dtype=np.int32)
    return ali if ali.size == num_frames else None


@dataclass
class AlignResult:
    ali: Optional[np.ndarray]  # None on failure
    loglike: float  # total Viterbi score (acoustic, unscaled) of the path
    retried: bool


def viterbi_align(
    graph: "kfst.StdVectorFst",
    am: "khg.AmDiagGmm",
    tm: "khg.TransitionModel",
    feats: np.ndarray,
    opts: AlignOptions,
    utt_id: str = "",
) -> AlignResult:
    """Forced alignment of one utterance (``gmm-align-compiled``).

    ``graph`` is modified (transition probabilities are added).
    """
    khg.add_transition_probs(
        trans_model=tm, disambig_syms=[], transition_scale=opts.transition_scale,
        self_loop_scale=opts.self_loop_scale, fst=graph,
    )  # fmt: skip
    decodable = khg.DecodableAmDiagGmmScaled(am, tm, np.ascontiguousarray(feats, dtype=np.float32), opts.acoustic_scale)
    cfg = khg.AlignConfig(beam=opts.beam, retry_beam=opts.retry_beam, careful=opts.careful)
    num_done, num_err, num_retried, tot_like, frames, ali, _ = khg.align_utterance_wrapper(
        cfg, utt_id, opts.acoustic_scale, graph, decodable, 0, 0, 0, 0.0, 0
    )
    if num_done == 0 or len(ali) != feats.shape[0]:
        return AlignResult(None, 0.0, bool(num_retried))
    return AlignResult(np.asarray(ali, dtype=np.int32), float(tot_like), bool(num_retried))


# ----------------------------------------------------------------------------- archives
class AliArchive:
    """Integer alignments keyed by utterance, stored as one ``.npz``.

    The file holds ``ids`` (N,), ``lengths`` (N,) and the concatenated ``data``.
    """

    @staticmethod
    def write(path: Pathlike, alis: Mapping[str, np.ndarray]) -> None:
        ids = list(alis)
        lengths = np.array([len(alis[k]) for k in ids], dtype=np.int64)
        data = np.concatenate([np.asarray(alis[k], dtype=np.int32) for k in ids]) if ids else np.zeros(0, np.int32)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, ids=np.array(ids, dtype=str), lengths=lengths, data=data)

    @staticmethod
    def read(path: Pathlike) -> dict[str, np.ndarray]:
        if not Path(path).is_file():
            raise DataError(str(path), "alignment archive missing")
        with np.load(path) as z:
            ids, lengths, data = z["ids"], z["lengths"], z["data"]
        ends = np.cumsum(lengths)
        return {str(k): data[e - n : e] for k, n, e in zip(ids, lengths, ends)}

    @staticmethod
    def read_many(paths: Sequence[Pathlike]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for p in paths:
            out.update(AliArchive.read(p))
        return out


def iter_ali_files(ali_dir: Pathlike, prefix: str = "ali") -> Iterator[Path]:
    yield from sorted(Path(ali_dir).glob(f"{prefix}.*.npz"))
