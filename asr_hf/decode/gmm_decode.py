"""Decoding GMM-HMM systems (``exp/mono``, ``exp/tri1``) through the matrix decoder.

Features go through the system's own front end (per-speaker CMVN computed on
the decoded set, as Kaldi's ``decode.sh`` uses the set's ``cmvn.scp``, then
deltas) in the parent process; the GMM log-likelihoods, ``(T, num_pdfs)``, are
computed inside the decoding workers by :class:`GmmScorer`, so they run in
parallel with the search.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from asr_hf.decode.decoder import DecodeConfig
from asr_hf.decode.pipeline import EvalSet, decode_and_score
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike

log = logging.getLogger(__name__)


class GmmScorer:
    """Picklable ``features -> (T, num_pdfs)`` GMM log-likelihoods; loads the system once per process."""

    def __init__(self, exp_dir: Pathlike) -> None:
        self.exp_dir = str(exp_dir)
        self._system = None

    @property
    def system(self):
        if self._system is None:
            from asr_hf.gmm.model import GmmSystem

            self._system = GmmSystem.load(self.exp_dir)
        return self._system

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return self.system.pdf_loglikes(feats)

    def __getstate__(self) -> dict:
        return {"exp_dir": self.exp_dir, "_system": None}


def gmm_eval_set(scorer: GmmScorer, cuts_path: Pathlike, name: str) -> EvalSet:
    """An :class:`EvalSet` whose items are the system's input features of every cut."""
    from lhotse import CutSet

    from asr_hf.gmm.feats import compute_cmvn_stats, speaker_of

    cuts = CutSet.from_file(cuts_path)
    if len(cuts) == 0:
        raise DataError(str(cuts_path), "no cuts")
    pipeline = scorer.system.pipeline
    cmvn = compute_cmvn_stats(cuts) if pipeline.cmvn else {}
    refs: dict[str, list[str]] = {}
    speakers: dict[str, str] = {}
    for cut in cuts:
        if not cut.supervisions:
            raise DataError(cut.id, "cut has no supervision (no reference text)")
        refs[cut.id] = cut.supervisions[0].text.split()
        speakers[cut.id] = speaker_of(cut)

    def items() -> Iterator[tuple[str, np.ndarray]]:
        for cut in cuts:
            yield cut.id, pipeline.for_cut(cut, cmvn)

    return EvalSet(name=name, items=items(), refs=refs, speakers=speakers)


def decode_gmm(
    exp_dir: Pathlike,
    cuts_path: Pathlike,
    set_name: str,
    graph_dir: Optional[Pathlike] = None,
    decode_dir: Optional[Pathlike] = None,
    config: Optional[DecodeConfig] = None,
    acwts: Optional[Sequence[float]] = None,
    acwt_source: str = "fixed",
    ignore_words: Sequence[str] = (),
) -> dict[str, Any]:
    """Decode and score one set with a GMM system: ``exp_dir/decode_<set_name>``.

    Args:
        exp_dir: the system (``final.mdl``, ``tree``, ``feature_pipeline.json``).
        cuts_path: feature cuts of the set (MFCC, as the system was trained on).
        set_name: ``dev``, ``test``...
        graph_dir: default ``exp_dir/graph``.
        decode_dir: default ``exp_dir/decode_<set_name>``.
        config: decoder settings.
        acwts: several values: sweep the acoustic weight on this set.
        acwt_source: provenance of ``config.acwt`` for ``wer.json``.
        ignore_words: words not scored.

    Returns:
        The ``wer.json`` record.
    """
    exp = Path(exp_dir)
    scorer = GmmScorer(exp)
    eval_set = gmm_eval_set(scorer, cuts_path, set_name)
    meta = {"model": str(exp / "final.mdl"), "cuts": str(cuts_path), "acoustic_model": "gmm"}
    return decode_and_score(
        graph_dir if graph_dir is not None else exp / "graph",
        decode_dir if decode_dir is not None else exp / f"decode_{set_name}",
        eval_set, config, matrix_fn=scorer, acwts=acwts, acwt_source=acwt_source, meta=meta,
        ignore_words=ignore_words,
    )  # fmt: skip


def export_gmm_loglikes(exp_dir: Pathlike, cuts_path: Pathlike, ark: Pathlike, scp: Optional[Pathlike] = None) -> int:
    """Write a GMM system's ``(T, num_pdfs)`` log-likelihoods of a set to a Kaldi ark (+ scp)."""
    from asr_hf.decode.interop import write_matrices

    scorer = GmmScorer(exp_dir)
    eval_set = gmm_eval_set(scorer, cuts_path, "export")
    return write_matrices(((u, scorer(f)) for u, f in eval_set.items), ark, scp)
