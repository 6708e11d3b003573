"""A GMM system's input features as DNN features (Kaldi's ``steps/nnet/make_fmllr_feats.sh``).

Kaldi's nnet1 hybrid recipes train the DNN on the best GMM's speaker-adapted
features: CMVN -> splice -> LDA+MLLT (``final.mat``) -> per-speaker fMLLR.
:func:`dump_gmm_features` writes exactly the features a system's
:class:`~asr_hf.gmm.feats.FeaturePipeline` computes for every cut as lhotse
feature cuts (``out_dir/cuts_<split>.jsonl.gz`` + lilcom archives), so the DNN
trainer, ``nnet-forward`` and decoding read them like fbank.  Training speakers
use the system's own transforms (``trans_train.npz``); dev/test speakers use the
transforms a first-pass decode estimated (``decode_<set>.trans.npz``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done

log = logging.getLogger(__name__)


def default_transforms(exp_dir: Pathlike, split: str) -> Path:
    """Where a SAT system keeps the speakers' transforms of ``split``."""
    exp_dir = Path(exp_dir)
    return exp_dir / "trans_train.npz" if split == "train" else exp_dir / f"decode_{split}.trans.npz"


def dump_gmm_features(
    exp_dir: Pathlike, cuts_path: Pathlike, out_dir: Pathlike, split: str, transforms: Optional[Pathlike] = None
) -> Path:
    """Write the GMM system's input features of every cut in ``cuts_path``.

    Args:
        exp_dir: GMM system (``final.mdl``, ``feature_pipeline.json``, ``final.mat``).
        cuts_path: MFCC feature cuts the system was trained / decodes on.
        out_dir: output feature dir; ``cuts_<split>.jsonl.gz`` and ``feats_<split>/``.
        split: split name used in file names.
        transforms: per-speaker fMLLR transforms (``.npz``); default
            :func:`default_transforms`. Required for SAT systems, ignored otherwise.

    Returns:
        The written cuts manifest.  Nothing is left behind on error.
    """
    from lhotse import CutSet
    from lhotse.features import Features
    from lhotse.features.io import LilcomChunkyWriter
    from lhotse.utils import fastcopy

    from asr_hf.data.paths import cuts_file, feature_storage_dir
    from asr_hf.gmm.feats import compute_cmvn_stats, speaker_of
    from asr_hf.gmm.fmllr import load_transforms
    from asr_hf.gmm.model import GmmSystem

    out_dir = Path(out_dir).resolve()
    target = cuts_file(out_dir, split)
    if is_done(out_dir, split) and target.is_file():
        log.info("GMM features %s already complete", target)
        return target
    system = GmmSystem.load(exp_dir)
    pipeline = system.pipeline
    xforms = None
    if pipeline.speaker_adaptive:
        path = Path(transforms) if transforms is not None else default_transforms(exp_dir, split)
        if not path.is_file():
            raise DataError(str(path), "missing: a SAT system's features need the speakers' fMLLR transforms "
                                       "(train: train-sat writes them; dev/test: decode-gmm first)")  # fmt: skip
        xforms = load_transforms(path)
    cuts = CutSet.from_file(cuts_path)
    if len(cuts) == 0:
        raise DataError(str(cuts_path), "no cuts")
    cmvn = compute_cmvn_stats(cuts) if pipeline.cmvn else {}
    out = []
    feats_dir = feature_storage_dir(out_dir, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(feats_dir, is_dir=True) as tmp_dir:
        with LilcomChunkyWriter(str(tmp_dir / "part0000")) as writer:
            for cut in cuts:
                if xforms is not None and speaker_of(cut) not in xforms:
                    raise DataError(cut.id, f"no fMLLR transform for speaker {speaker_of(cut)} in {path}")
                feats = pipeline.for_cut(cut, cmvn, xforms)
                key = writer.write(cut.id, feats)
                src = cut.features
                manifest = Features(
                    type=f"gmm:{Path(exp_dir).name}", num_frames=int(feats.shape[0]), num_features=int(feats.shape[1]),
                    frame_shift=src.frame_shift, sampling_rate=src.sampling_rate, start=src.start,
                    duration=src.duration, storage_type=writer.name, storage_path=str(feats_dir / Path(writer.storage_path).name),
                    storage_key=key, channels=0,
                )  # fmt: skip
                out.append(fastcopy(cut, features=manifest))
    with atomic_output(target) as tmp:
        CutSet.from_cuts(out).to_file(tmp)
    mark_done(out_dir, split)
    log.info("GMM features of %s (%s): %d cuts, dim %d -> %s", exp_dir, split, len(out), out[0].num_features, target)
    return target
