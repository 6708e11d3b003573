"""Decoding GMM-HMM systems (``exp/mono``, ``exp/tri1``, ``exp/tri2``, ``exp/tri3``) through the matrix decoder.

Features go through the system's own front end (per-speaker CMVN of the decoded
set, read from the features stage's ``cmvn_<set>.ark`` as Kaldi's ``decode.sh``
reads the set's ``cmvn.scp``, then deltas, or splicing and ``final.mat``) in the parent process; the GMM
log-likelihoods, ``(T, num_pdfs)``, are computed inside the decoding workers by
:class:`GmmScorer`, so they run in parallel with the search.

Speaker-adaptive (SAT) systems decode in two passes (Kaldi ``decode_fmllr.sh``):
``final.alimdl`` on speaker-independent features (``decode_<set>.si``), one
fMLLR transform per test speaker estimated with ``final.mdl`` along the
first-pass best paths (silence weight 0.01), then ``final.mdl`` on the adapted
features (``decode_<set>``).  Kaldi estimates from lattice posteriors and adds
a second fMLLR pass; the bindings give the best path only, so one estimation
from the best path is done here.
"""

from __future__ import annotations

import logging
from dataclasses import replace
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

    def __init__(self, exp_dir: Pathlike, model: str = "final.mdl") -> None:
        self.exp_dir = str(exp_dir)
        self.model = model
        self._system = None

    @property
    def system(self):
        if self._system is None:
            from asr_hf.gmm.model import GmmSystem

            self._system = GmmSystem.load(self.exp_dir, model=self.model)
        return self._system

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return self.system.pdf_loglikes(feats)

    def __getstate__(self) -> dict:
        return {"exp_dir": self.exp_dir, "model": self.model, "_system": None}


def gmm_eval_set(
    scorer: GmmScorer, cuts_path: Pathlike, name: str, speaker_transforms: Optional[dict] = None
) -> EvalSet:
    """An :class:`EvalSet` whose items are the system's input features of every cut
    (adapted by ``speaker_transforms``, speaker -> fMLLR matrix, where given)."""
    from lhotse import CutSet

    from asr_hf.features.cmvn import cmvn_for_cuts, speaker_of

    cuts = CutSet.from_file(cuts_path)
    if len(cuts) == 0:
        raise DataError(str(cuts_path), "no cuts")
    pipeline = scorer.system.pipeline
    cmvn = cmvn_for_cuts(cuts_path, cuts) if pipeline.cmvn else {}
    refs: dict[str, list[str]] = {}
    speakers: dict[str, str] = {}
    for cut in cuts:
        if not cut.supervisions:
            raise DataError(cut.id, "cut has no supervision (no reference text)")
        refs[cut.id] = cut.supervisions[0].text.split()
        speakers[cut.id] = speaker_of(cut)

    def items() -> Iterator[tuple[str, np.ndarray]]:
        for cut in cuts:
            yield cut.id, pipeline.for_cut(cut, cmvn, speaker_transforms)

    return EvalSet(name=name, items=items(), refs=refs, speakers=speakers)


def first_pass_transforms(
    exp_dir: Pathlike, cuts_path: Pathlike, hyps: dict, batch_utts: int = 50
) -> tuple[dict, dict]:
    """Per-speaker fMLLR of a SAT system along first-pass best paths (``decode_fmllr.sh``).

    Statistics under ``final.mdl`` on speaker-independent features, frames of
    silence phones weighted ``decode_silence_weight``; utterances without a
    first-pass path are skipped.

    Returns:
        (speaker -> (D, D+1) transform, summary incl. the auxiliary-function traces).
    """
    from asr_hf.gmm.fmllr import accumulate_speakers, estimate_speakers
    from asr_hf.gmm.sat import FmllrSettings

    scorer = GmmScorer(exp_dir)
    system = scorer.system
    settings = FmllrSettings.load(exp_dir)
    info = system.info
    sil = np.asarray(settings.silence_phones, dtype=np.int64)
    si = gmm_eval_set(scorer, cuts_path, "fmllr")
    acc: dict = {}
    batch: tuple[list, list, list, list] = ([], [], [], [])
    for utt, feats in si.items:
        h = hyps.get(utt)
        if h is None or not h.ok or len(h.alignment) != feats.shape[0]:
            continue
        tids = np.asarray(h.alignment, dtype=np.int64)
        batch[0].append(feats)
        batch[1].append(info.pdf[tids])
        batch[2].append(np.where(np.isin(info.phone[tids], sil), settings.decode_silence_weight, 1.0))
        batch[3].append(si.speakers[utt])
        if len(batch[0]) >= batch_utts:
            accumulate_speakers(system.gmm, acc, *batch)
            batch = ([], [], [], [])
    accumulate_speakers(system.gmm, acc, *batch)
    return estimate_speakers(acc, None, num_iters=settings.num_iters, min_count=settings.min_count)


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
    graph = graph_dir if graph_dir is not None else exp / "graph"
    out = Path(decode_dir) if decode_dir is not None else exp / f"decode_{set_name}"
    meta: dict[str, Any] = {"model": str(exp / "final.mdl"), "cuts": str(cuts_path), "acoustic_model": "gmm"}
    xforms = None
    if scorer.system.pipeline.speaker_adaptive:
        from asr_hf.decode.decoder import DecodeConfig as _Cfg
        from asr_hf.gmm.fmllr import save_transforms
        from asr_hf.gmm.model import ALIGN_MODEL_FILE

        cfg = config or _Cfg()
        first_acwt = sorted(acwts)[len(acwts) // 2] if acwts and len(acwts) > 1 else (acwts[0] if acwts else cfg.acwt)
        si_scorer = GmmScorer(exp, model=ALIGN_MODEL_FILE)
        hyps: dict = {}
        si_rec = decode_and_score(
            graph, out.parent / f"{out.name}.si", gmm_eval_set(si_scorer, cuts_path, f"{set_name}.si"),
            replace(cfg, acwt=first_acwt), matrix_fn=si_scorer, acwt_source="first pass (speaker-independent)",
            meta={**meta, "model": str(exp / ALIGN_MODEL_FILE), "pass": "speaker-independent"},
            ignore_words=ignore_words, hyps_out=hyps,
        )  # fmt: skip
        xforms, summary = first_pass_transforms(exp, cuts_path, hyps)
        save_transforms(out.parent / f"{out.name}.trans.npz", xforms)
        meta["fmllr"] = {"first_pass_wer_percent": si_rec["wer_percent"], "first_pass_acwt": first_acwt,
                         **{k: v for k, v in summary.items() if k != "auxf_traces_per_frame"}}  # fmt: skip
        log.info("SAT first pass %s: %.2f%% WER; fMLLR for %d speakers", set_name, si_rec["wer_percent"], summary["updated"])
    eval_set = gmm_eval_set(scorer, cuts_path, set_name, xforms)
    return decode_and_score(
        graph, out, eval_set, config, matrix_fn=scorer, acwts=acwts, acwt_source=acwt_source, meta=meta,
        ignore_words=ignore_words,
    )  # fmt: skip


def export_gmm_loglikes(
    exp_dir: Pathlike, cuts_path: Pathlike, ark: Pathlike, scp: Optional[Pathlike] = None,
    speaker_transforms: Optional[dict] = None,
) -> int:  # fmt: skip
    """Write a GMM system's ``(T, num_pdfs)`` log-likelihoods of a set to a Kaldi ark (+ scp).

    SAT systems need the test speakers' transforms (``decode_<set>.trans.npz`` of a decode).
    """
    from asr_hf.decode.interop import write_matrices

    scorer = GmmScorer(exp_dir)
    if scorer.system.pipeline.speaker_adaptive and speaker_transforms is None:
        raise DataError(str(exp_dir), "a SAT system's log-likelihoods need the speakers' fMLLR transforms (decode first)")
    eval_set = gmm_eval_set(scorer, cuts_path, "export", speaker_transforms)
    return write_matrices(((u, scorer(f)) for u, f in eval_set.items), ark, scp)
