"""Aligning data with a trained system (Kaldi ``steps/align_si.sh``).

:func:`align` is the public entry point: it aligns one split's feature cuts
with the system in an experiment directory and writes the DNN targets (see
:mod:`asr_hf.gmm.targets`).  The trainers call :func:`align_with_runner` on
the shards they already have.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from asr_hf.data.paths import ali_cmvn_path, ali_transforms_path, cuts_file, system_ali_dir
from asr_hf.gmm.align import AliArchive, AlignOptions
from asr_hf.gmm.model import GmmSystem, save_cmvn_npz
from asr_hf.gmm.passes import AliSource, PassResult, PassRunner, PassSpec, default_jobs, log_failures, split_cuts
from asr_hf.gmm.targets import attach_pdf_alignments
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, is_done

log = logging.getLogger(__name__)


def compute_cmvn(runner: PassRunner, cuts_paths: Sequence[Pathlike]) -> dict[str, np.ndarray]:
    """Per-speaker CMVN statistics of ``cuts_paths``, the manifests the runner's shards
    were split from: the features stage's ``cmvn_<split>.ark`` where it wrote one
    (:func:`asr_hf.features.cmvn.stored_cmvn`), else one parallel pass over the shards."""
    from asr_hf.features.cmvn import stored_cmvn

    stored = stored_cmvn(cuts_paths)
    if stored is not None:
        log.info("CMVN statistics of %d speakers from the features stage", len(stored))
        return stored
    res = runner.run(PassSpec(source=AliSource.READ, cmvn_only=True), None)
    log_failures(res, "CMVN statistics")
    if not res.cmvn:
        raise DataError("cuts", "no features for CMVN statistics")
    return res.cmvn


def align_with_runner(
    system: GmmSystem,
    runner: PassRunner,
    cmvn: dict,
    work_dir: Path,
    out_dir: Path,
    split: str,
    cuts_paths: Sequence[Pathlike],
    opts: AlignOptions,
    silence_phones: Sequence[int] = (),
    model_path: Optional[Pathlike] = None,
) -> tuple[PassResult, dict]:
    """Realign every shard with ``system`` and write ``out_dir``'s targets for ``split``.

    Returns:
        the pass result and a summary dict (timings, failures, frames).
    """
    from lhotse import CutSet

    t0 = time.time()
    shard_ali = lambda j: work_dir / f"ali_{split}.{j}.npz"  # noqa: E731
    spec = PassSpec(source=AliSource.ALIGN, accumulate_gmm=False, align=opts, silence_phones=tuple(silence_phones))
    res = runner.run(spec, system.state(), cmvn, ali_out=shard_ali)
    log_failures(res, f"aligning {split}")
    align_seconds = time.time() - t0
    tid = AliArchive.read_many([shard_ali(j) for j in range(len(runner.shards))])
    pdf_of = system.info.pdf
    pdf = {k: pdf_of[v] for k, v in tid.items()}
    cuts = [c for p in cuts_paths for c in CutSet.from_file(p)]
    attach_pdf_alignments(
        cuts, pdf, out_dir, split, system.num_pdfs, tid_alis=tid, failed=res.failed,
        extra_info={"model": str(model_path)} if model_path else None,
    )  # fmt: skip
    for j in range(len(runner.shards)):
        shard_ali(j).unlink(missing_ok=True)
    summary = {
        "split": split,
        "utterances": res.num_done,
        "failed": len(res.failed),
        "retried": res.retried,
        "frames": res.num_frames,
        "audio_hours": res.num_frames * 0.01 / 3600,
        "align_seconds": round(align_seconds, 3),
        "align_cpu_seconds": round(res.cpu_seconds, 3),
        "cpu_seconds_per_audio_hour": round(res.cpu_seconds / max(res.num_frames * 0.01 / 3600, 1e-9), 2),
        "wall_seconds_per_audio_hour": round(align_seconds / max(res.num_frames * 0.01 / 3600, 1e-9), 2),
        "total_seconds": round(time.time() - t0, 3),
        "align_loglike_per_frame": res.align_loglike / res.align_frames if res.align_frames else None,
    }
    return res, summary


def align(
    exp_dir: Pathlike,
    lang_dir: Pathlike,
    cuts_path: Pathlike,
    split: str,
    out_dir: Optional[Pathlike] = None,
    jobs: Optional[int] = None,
    opts: AlignOptions = AlignOptions(),
    boost_silence: Optional[float] = None,
    force: bool = False,
) -> dict:
    """Align one split with the system in ``exp_dir`` (default output ``exp_dir/ali``).

    CMVN statistics are the split's own per-speaker stats (Kaldi's ``cmvn.scp`` of
    the data dir): the features stage's ``cmvn_<split>.ark``, or computed.  Returns a summary with timings.
    """
    from asr_hf.lang.lang_dir import LangDir

    exp_dir = Path(exp_dir)
    out_dir = Path(out_dir) if out_dir is not None else system_ali_dir(exp_dir)
    if not force and is_done(out_dir, split) and cuts_file(out_dir, split).is_file():
        log.info("alignments %s/%s already complete", out_dir, split)
        return {"split": split, "skipped": True}
    system = GmmSystem.load(exp_dir)
    lang = LangDir.load(lang_dir)
    if boost_silence is not None:
        opts = replace(opts, boost_silence=boost_silence)
    jobs = jobs or default_jobs()
    work = out_dir / f".work_{split}"
    shards = split_cuts([cuts_path], work / f"split{jobs}", jobs)
    with PassRunner(shards, lang_dir, jobs) as runner:
        cmvn = compute_cmvn(runner, [cuts_path])
        save_cmvn_npz(ali_cmvn_path(out_dir, split), cmvn)
        fmllr_summary = None
        if system.pipeline.speaker_adaptive:
            fmllr_summary = _speaker_transforms(system, exp_dir, runner, cmvn, work, out_dir, split, opts, lang)
        _, summary = align_with_runner(
            system, runner, cmvn, work, out_dir, split, [cuts_path], opts,
            silence_phones=[lang.optional_silence], model_path=exp_dir / "final.mdl",
        )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    if fmllr_summary is not None:
        summary["fmllr"] = fmllr_summary
    return summary


def _speaker_transforms(system: GmmSystem, exp_dir: Path, runner: PassRunner, cmvn: dict, work: Path, out_dir: Path,
                        split: str, opts: AlignOptions, lang) -> dict:  # fmt: skip
    """SAT systems (Kaldi ``align_fmllr.sh``): align with ``final.alimdl`` on speaker-independent
    features, estimate each speaker's fMLLR with ``final.mdl`` along it; sets ``system.speaker_transforms``
    and writes ``out_dir/trans_<split>.npz``."""
    from asr_hf.gmm.fmllr import save_transforms
    from asr_hf.gmm.model import ALIGN_MODEL_FILE
    from asr_hf.gmm.sat import FmllrSettings, estimate_with_runner

    settings = FmllrSettings.load(exp_dir)
    si = GmmSystem.load(exp_dir, model=ALIGN_MODEL_FILE)
    si_ali = lambda j: work / f"si_ali.{j}.npz"  # noqa: E731
    spec = PassSpec(source=AliSource.ALIGN, accumulate_gmm=False, align=opts, silence_phones=(lang.optional_silence,))
    res = runner.run(spec, si.state(), cmvn, ali_out=si_ali)
    log_failures(res, f"first-pass (speaker-independent) alignment of {split}")
    system.speaker_transforms = None
    xforms, summary = estimate_with_runner(runner, system, cmvn, si_ali, settings.silence_phones,
                                           settings.align_silence_weight, settings.num_iters, settings.min_count)  # fmt: skip
    system.speaker_transforms = xforms
    save_transforms(ali_transforms_path(out_dir, split), xforms)
    return {k: v for k, v in summary.items() if k != "auxf_traces_per_frame"}
