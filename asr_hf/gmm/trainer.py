"""The EM loop shared by monophone and triphone training (Kaldi ``gmm-est`` schedule).

One iteration: (optionally) realign the data with the current model, then
accumulate Gaussian and transition statistics along the alignment with the
current model, re-estimate (ML update, then mix up towards the iteration's
Gaussian budget), and append a JSON line to ``train_log.jsonl``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from asr_hf.gmm.align import AlignOptions
from asr_hf.gmm.gmm import MleOptions, mle_update, split_by_count
from asr_hf.gmm.model import GmmSystem, append_log
from asr_hf.gmm.passes import AliSource, PassResult, PassRunner, PassSpec, log_failures
from asr_hf.utils.errors import DataError
from asr_hf.utils.kaldi import khg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmSchedule:
    """Iteration schedule (the options of Kaldi's ``train_mono.sh``/``train_deltas.sh``).

    Attributes:
        num_iters: number of re-estimations (iterations 0 or 1 .. num_iters-1 run here).
        realign_iters: iterations that start with a Viterbi realignment.
        max_iter_inc: last iteration that increases the Gaussian budget.
        totgauss: final number of Gaussians.
        power: Gaussians per pdf ~ occupancy**power when mixing up.
        perturb_factor / min_count: mixing-up options (``gmm-est``).
        mle: ML update options.
        align: alignment options (``beam`` of the first realignment may differ).
        first_beam: beam of the first realignment (Kaldi mono: 6).
        transition_floor / transition_mincount: ``MleTransitionUpdateConfig``.
    """

    num_iters: int
    realign_iters: tuple[int, ...]
    max_iter_inc: int
    totgauss: int
    power: float = 0.25
    perturb_factor: float = 0.01
    min_count: float = 20.0
    mle: MleOptions = MleOptions()
    align: AlignOptions = AlignOptions()
    first_beam: Optional[float] = None
    transition_floor: float = 0.01
    transition_mincount: float = 5.0


def estimate(
    system: GmmSystem, result: PassResult, target_gauss: int, schedule: EmSchedule, mle: Optional[MleOptions] = None
) -> dict:
    """ML re-estimation of GMMs and transitions, then mixing up (``gmm-est --mix-up``)."""
    if result.gmm_stats is None or result.gmm_stats.frames == 0:
        raise DataError("training data", "no frames were aligned; cannot re-estimate")
    stats = result.gmm_stats
    pdf_occs = stats.pdf_occs(system.gmm)
    new_gmm, rep = mle_update(system.gmm, stats, mle or schedule.mle)
    if target_gauss > new_gmm.num_gauss:
        new_gmm = split_by_count(new_gmm, pdf_occs, target_gauss, schedule.perturb_factor, schedule.power, schedule.min_count)
    system.gmm = new_gmm
    cfg = khg.MleTransitionUpdateConfig(floor=schedule.transition_floor, mincount=schedule.transition_mincount)
    t_impr, t_count = system.tm.mle_update(np.asarray(result.trans_counts, dtype=np.float64), cfg)
    return {
        "gmm_objf_change_per_frame": rep.objf_change / max(rep.count, 1.0),
        "transition_objf_change_per_frame": float(t_impr) / max(float(t_count), 1.0),
        "removed_gaussians": rep.removed_gaussians,
        "floored_gaussians": rep.floored_gaussians,
        "num_gauss": new_gmm.num_gauss,
    }


def pass_record(it: int, result: PassResult, realigned: bool) -> dict:
    stats = result.gmm_stats
    rec = {
        "iter": it,
        "avg_loglike": (stats.loglike / stats.frames) if stats is not None and stats.frames else None,
        "frames": result.num_frames,
        "utterances": result.num_done,
        "failed": len(result.failed),
        "realigned": realigned,
        "pass_seconds": round(result.seconds, 3),
        "pass_cpu_seconds": round(result.cpu_seconds, 3),
    }
    if realigned:
        rec["retried"] = result.retried
        rec["align_loglike_per_frame"] = result.align_loglike / result.align_frames if result.align_frames else None
    return rec


def run_em(
    system: GmmSystem,
    runner: PassRunner,
    exp_dir: Path,
    schedule: EmSchedule,
    cmvn: dict,
    start_iter: int,
    num_gauss: int,
    silence_phones: Sequence[int],
    ali_path,
    first_spec: Optional[PassSpec] = None,
    first_ali_in=None,
    transform_iters: Sequence[int] = (),
    update_transform: Optional[Callable[[int, GmmSystem], dict]] = None,
) -> GmmSystem:
    """Iterations ``start_iter .. num_iters-1`` of EM with realignment and mixing up.

    Args:
        ali_path: shard index -> alignment archive path (read and rewritten here).
        first_spec: how the first iteration gets its alignment when it is not a
            realignment iteration (e.g. converted from another tree, reading
            ``first_ali_in``); by default the archives at ``ali_path`` are read.
        first_ali_in: shard index -> archive read by ``first_spec``.
        transform_iters / update_transform: on these iterations, after the
            (re)alignment and before accumulation, ``update_transform(it, system)``
            re-estimates a feature transform along the alignments at ``ali_path``
            and updates ``system`` in place (MLLT: ``final.mat`` and the means;
            SAT: the speaker transforms); the statistics are then accumulated on
            the new features (Kaldi ``train_lda_mllt.sh`` / ``train_sat.sh``).
            It returns fields for the iteration's log record.
    """
    inc = max(0, (schedule.totgauss - num_gauss) // max(schedule.max_iter_inc, 1))
    first_realign = True
    for it in range(start_iter, schedule.num_iters):
        t0 = time.time()
        realign = it in schedule.realign_iters
        xform = update_transform is not None and it in transform_iters
        align_opts = schedule.align
        if realign and first_realign and schedule.first_beam is not None:
            align_opts = replace(align_opts, beam=schedule.first_beam)
        ali_result: Optional[PassResult] = None
        if realign:
            first_realign = False
            spec = PassSpec(source=AliSource.ALIGN, align=align_opts, silence_phones=tuple(silence_phones),
                            accumulate_gmm=not xform)  # fmt: skip
            result = runner.run(spec, system.state(), cmvn, ali_out=ali_path)
        elif it == start_iter and first_spec is not None:
            spec = replace(first_spec, accumulate_gmm=first_spec.accumulate_gmm and not xform)
            result = runner.run(spec, system.state(), cmvn, ali_in=first_ali_in, ali_out=ali_path)
        elif not xform:
            result = runner.run(PassSpec(source=AliSource.READ), system.state(), cmvn, ali_in=ali_path)
        else:
            result = None
        xrec: dict = {}
        if xform:
            if result is not None:
                log_failures(result, f"iteration {it} alignment")
                ali_result = result
            xrec = update_transform(it, system)
            result = runner.run(PassSpec(source=AliSource.READ), system.state(), cmvn, ali_in=ali_path)
        log_failures(result, f"iteration {it}")
        rec = pass_record(it, result, realign)
        if ali_result is not None and realign:
            rec["retried"] = ali_result.retried
            rec["align_loglike_per_frame"] = (
                ali_result.align_loglike / ali_result.align_frames if ali_result.align_frames else None
            )
        rec.update(xrec)
        rec.update(estimate(system, result, num_gauss, schedule))
        rec["num_pdfs"] = system.num_pdfs
        rec["seconds"] = round(time.time() - t0, 3)
        append_log(exp_dir, rec)
        log.info(
            "iter %d: avg loglike/frame %.4f over %d frames%s%s, %d Gaussians (%.1fs)",
            it, rec["avg_loglike"], rec["frames"], " (realigned)" if realign else "",
            " (transform re-estimated)" if xform else "", rec["num_gauss"], rec["seconds"],
        )  # fmt: skip
        if it <= schedule.max_iter_inc:
            num_gauss += inc
    return system
