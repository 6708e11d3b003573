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

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

from asr_hf.data.paths import system_files
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done

log = logging.getLogger(__name__)



def _sources(exp_dir: Path, xforms_path: Optional[Path]) -> dict[str, str]:
    """``{path: sha256}`` of the files the features are made from (those present)."""
    files = system_files(exp_dir)  # besides the cuts and transforms
    if xforms_path is not None:
        files.append(xforms_path)
    return {str(p.resolve()): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _check_not_stale(target: Path, record: Path, sources: dict[str, str], out_dir: Path) -> None:
    """Refuse features made by another run of the system (another model or transforms than
    the ones recorded) or older than one of its files (retrained / re-decoded since)."""
    fix = f"remove {out_dir} (or dump into another --out) to recompute"
    made = json.loads(record.read_text())["sources"] if record.is_file() else None
    if made is None:
        raise DataError(str(target), f"stale: no record of the system files it was made from ({record.name}); {fix}")
    for path, digest in sources.items():
        if path not in made:
            raise DataError(str(target), f"stale: not made from {path}; {fix}")
        if made[path] != digest:
            raise DataError(str(target), f"stale: made from another {Path(path).name} (a different run); {fix}")
    for path in made:
        if path not in sources:
            raise DataError(str(target), f"stale: made from {path}, which this system no longer uses; {fix}")
    t_made = target.stat().st_mtime_ns
    for path in sources:
        if Path(path).stat().st_mtime_ns > t_made:
            raise DataError(str(target), f"stale: {path} is newer than these features; {fix}")


def _check_coverage(cuts, xforms: dict, path: Path, cuts_path: Pathlike) -> None:
    """Every speaker of ``cuts`` has a transform, else one line naming the first missing one."""
    from asr_hf.gmm.feats import speaker_of

    missing: dict[str, str] = {}
    for cut in cuts:
        spk = speaker_of(cut)
        if spk not in xforms and spk not in missing:
            missing[spk] = cut.id
    if missing:
        spk = sorted(missing)[0]
        raise DataError(
            str(path),
            f"no fMLLR transform for speaker {spk} (cut {missing[spk]}; {len(missing)} of "
            f"{len(missing) + len({speaker_of(c) for c in cuts} - set(missing))} speakers of {cuts_path} missing); "
            "these transforms are from another set or run: re-run decode-gmm on these cuts",
        )


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
        The written cuts manifest.  Nothing is left behind on error.  Existing features are
        reused only if ``gmm_source_<split>.json`` records the same system files (sha256 of
        ``final.mdl``, ``final.mat``, ``feature_pipeline.json`` and the transforms) and none
        is newer than them; otherwise a one-line :class:`DataError`.  Every speaker of the
        cuts must have a transform.
    """
    from lhotse import CutSet
    from lhotse.features import Features
    from lhotse.features.io import LilcomChunkyWriter
    from lhotse.utils import fastcopy

    from asr_hf.data.paths import cuts_file, feature_storage_dir
    from asr_hf.features.cmvn import cmvn_for_cuts
    from asr_hf.gmm.fmllr import load_transforms
    from asr_hf.gmm.model import GmmSystem

    exp_dir = Path(exp_dir)
    out_dir = Path(out_dir).resolve()
    target = cuts_file(out_dir, split)
    record = out_dir / f"gmm_source_{split}.json"
    system = GmmSystem.load(exp_dir)
    pipeline = system.pipeline
    path: Optional[Path] = None
    if pipeline.speaker_adaptive:
        path = Path(transforms) if transforms is not None else default_transforms(exp_dir, split)
        if not path.is_file():
            raise DataError(str(path), "missing: a SAT system's features need the speakers' fMLLR transforms "
                                       "(train: train-sat writes them; dev/test: decode-gmm first)")  # fmt: skip
    sources = _sources(exp_dir, path)
    if is_done(out_dir, split) and target.is_file():
        _check_not_stale(target, record, sources, out_dir)
        log.info("GMM features %s already complete", target)
        return target
    cuts = CutSet.from_file(cuts_path)
    if len(cuts) == 0:
        raise DataError(str(cuts_path), "no cuts")
    xforms = None
    if path is not None:
        xforms = load_transforms(path)
        _check_coverage(cuts, xforms, path, cuts_path)
    cmvn = cmvn_for_cuts(cuts_path, cuts) if pipeline.cmvn else {}
    out = []
    feats_dir = feature_storage_dir(out_dir, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(feats_dir, is_dir=True) as tmp_dir:
        with LilcomChunkyWriter(str(tmp_dir / "part0000")) as writer:
            for cut in cuts:
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
    with atomic_output(record) as tmp:
        tmp.write_text(json.dumps({"exp_dir": str(exp_dir.resolve()), "sources": sources}, indent=1) + "\n")
    with atomic_output(target) as tmp:
        CutSet.from_cuts(out).to_file(tmp)
    mark_done(out_dir, split)
    log.info("GMM features of %s (%s): %d cuts, dim %d -> %s", exp_dir, split, len(out), out[0].num_features, target)
    return target
