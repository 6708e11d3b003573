"""Monophone GMM-HMM training from a flat start (Kaldi ``steps/train_mono.sh``).

1. Tree: one pdf per (phone set, pdf-class) (``phones/sets.int`` as Kaldi's
   ``--shared-phones``); transition model from the lang dir's topology.
2. Initialisation (``gmm-init-mono``): every pdf is one Gaussian with the
   global mean and variance of (a subset of) the training features.
3. Iteration 0: statistics along *equal alignments* of the training graphs
   (``align-equal-compiled``), re-estimation with a low occupancy threshold.
4. Iterations 1..num_iters-1: Viterbi realignment on ``realign_iters`` (first
   with a narrow beam, with optional silence boosting), accumulation, ML
   re-estimation, and mixing up by ``(totgauss - init) / max_iter_inc``
   Gaussians per iteration until ``max_iter_inc``.
5. The final model realigns the training data; the result lands in
   ``exp/mono/ali`` as DNN targets and as input to triphone training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from asr_hf.data.paths import system_ali_dir
from asr_hf.gmm.align import AlignOptions
from asr_hf.gmm.aligner import align_with_runner, compute_cmvn
from asr_hf.gmm.feats import FeaturePipeline
from asr_hf.gmm.gmm import GmmSet
from asr_hf.gmm.model import GmmSystem, append_log, save_cmvn_npz
from asr_hf.gmm.passes import AliSource, PassRunner, PassSpec, default_jobs, log_failures, split_cuts
from asr_hf.gmm.trainer import EmSchedule, estimate, pass_record, run_em
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done
from asr_hf.utils.kaldi import khg

log = logging.getLogger(__name__)

KALDI_MONO_REALIGN = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass
class MonoConfig:
    """Options of monophone training (defaults of Kaldi's ``train_mono.sh``).

    Attributes:
        num_iters / max_iter_inc / totgauss / realign_iters / power: the EM schedule.
        boost_silence: silence likelihood factor during alignment.
        beam / first_beam / retry_beam: Viterbi beams.
        init_utts: utterances whose features give the global mean/variance.
        jobs: parallel processes (default: all cores).
        pipeline: the feature front end.
    """

    num_iters: int = 40
    max_iter_inc: int = 30
    totgauss: int = 1000
    realign_iters: tuple[int, ...] = KALDI_MONO_REALIGN
    power: float = 0.25
    boost_silence: float = 1.0
    beam: float = 10.0
    first_beam: float = 6.0
    retry_beam: float = 40.0
    init_utts: int = 200
    jobs: Optional[int] = None
    pipeline: FeaturePipeline = field(default_factory=FeaturePipeline)

    def schedule(self) -> EmSchedule:
        return EmSchedule(
            num_iters=self.num_iters, realign_iters=tuple(self.realign_iters), max_iter_inc=self.max_iter_inc,
            totgauss=self.totgauss, power=self.power,
            align=AlignOptions(beam=self.beam, retry_beam=self.retry_beam, boost_silence=self.boost_silence),
            first_beam=self.first_beam,
        )  # fmt: skip


def read_phone_sets(lang) -> list[list[int]]:
    """``phones/sets.int`` of a lang dir (one set per phone if absent)."""
    path = Path(lang.path) / "phones" / "sets.int"
    if not path.is_file():
        return [[p] for p in lang.hmm_phones]
    return [[int(t) for t in line.split()] for line in path.read_text().splitlines() if line.strip()]


def global_stats(cuts_paths: Sequence[Pathlike], pipeline: FeaturePipeline, cmvn: dict, max_utts: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the first ``max_utts`` utterances' features (``gmm-init-mono``)."""
    from lhotse import CutSet

    n, s, s2 = 0, None, None
    used = 0
    for p in cuts_paths:
        for cut in CutSet.from_file(p):
            x = pipeline.for_cut(cut, cmvn).astype(np.float64)
            s = x.sum(0) if s is None else s + x.sum(0)
            s2 = (x * x).sum(0) if s2 is None else s2 + (x * x).sum(0)
            n += x.shape[0]
            used += 1
            if used >= max_utts:
                break
        if used >= max_utts:
            break
    if not n:
        raise DataError(str(cuts_paths[0]), "no frames to initialise the model")
    mean = s / n
    return mean, np.maximum(s2 / n - mean**2, 1e-3)


def train_mono(
    lang_dir: Pathlike, cuts_paths: Sequence[Pathlike] | Pathlike, exp_dir: Pathlike, config: MonoConfig = MonoConfig()
) -> GmmSystem:
    """Train a monophone system in ``exp_dir`` (skipped if already complete).

    Writes ``final.mdl``, ``tree``, ``feature_pipeline.json``,
    ``train_log.jsonl``, ``config.json``, ``cmvn_train.npz`` and the training
    alignments ``ali/`` (split ``train``).
    """
    from asr_hf.lang.lang_dir import LangDir

    exp_dir = Path(exp_dir)
    cuts_paths = [cuts_paths] if isinstance(cuts_paths, (str, Path)) else list(cuts_paths)
    if is_done(exp_dir):
        check_same_request(exp_dir, "train_mono", lang_dir, cuts_paths, config)
        log.info("monophone system %s already complete", exp_dir)
        return GmmSystem.load(exp_dir)
    t_start = time.time()
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "train_log.jsonl").unlink(missing_ok=True)
    _write_config(exp_dir, "train_mono", lang_dir, cuts_paths, config)

    lang = LangDir.load(lang_dir)
    topo = lang.topo()
    p2n = topo.get_phone_to_num_pdf_classes()
    tree = khg.monophone_context_dependency_shared(read_phone_sets(lang), p2n)
    tm = khg.TransitionModel(tree, topo)
    jobs = config.jobs or default_jobs()
    shards = split_cuts(cuts_paths, exp_dir / f"split{jobs}", jobs)
    schedule = config.schedule()
    silence = [lang.optional_silence]
    ali_path = lambda j: exp_dir / f"ali.{j}.npz"  # noqa: E731

    with PassRunner(shards, lang_dir, jobs) as runner:
        cmvn = compute_cmvn(runner, cuts_paths)
        save_cmvn_npz(exp_dir / "cmvn_train.npz", cmvn)
        mean, var = global_stats(shards, config.pipeline, cmvn, config.init_utts)
        gmm = GmmSet.single(mean, var, tm.num_pdfs)
        system = GmmSystem(tm, tree, gmm, config.pipeline)
        num_gauss = system.gmm.num_gauss
        log.info("mono: %d pdfs, %d transition-ids, feature dim %d", tm.num_pdfs, tm.num_transition_ids, len(mean))

        # Iteration 0: equal alignment.
        t0 = time.time()
        res = runner.run(PassSpec(source=AliSource.EQUAL), system.state(), cmvn, ali_out=ali_path)
        log_failures(res, "equal alignment")
        rec = pass_record(0, res, realigned=False)
        rec["equal_alignment"] = True
        first_mle = dataclasses.replace(schedule.mle, min_gaussian_occupancy=3.0)
        rec.update(estimate(system, res, num_gauss, schedule, mle=first_mle))
        rec["num_pdfs"] = system.num_pdfs
        rec["seconds"] = round(time.time() - t0, 3)
        append_log(exp_dir, rec)
        log.info("iter 0: avg loglike/frame %.4f over %d frames (equal alignment)", rec["avg_loglike"], rec["frames"])

        run_em(system, runner, exp_dir, schedule, cmvn, start_iter=1, num_gauss=num_gauss,
               silence_phones=silence, ali_path=ali_path)  # fmt: skip
        system.save(exp_dir)
        t_train = time.time() - t_start
        _, summary = align_with_runner(
            system, runner, cmvn, exp_dir, system_ali_dir(exp_dir), "train", cuts_paths, schedule.align,
            silence_phones=silence, model_path=exp_dir / "final.mdl",
        )  # fmt: skip
    for j in range(len(shards)):
        ali_path(j).unlink(missing_ok=True)
    summary.update(train_seconds=round(t_train, 3), total_seconds=round(time.time() - t_start, 3), **system.summary())
    with atomic_output(exp_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    mark_done(exp_dir)
    log.info("mono done: %s", json.dumps(summary))
    return system


#: config fields that change how a system is computed, not what it is
_RUN_ONLY = ("jobs",)


def _record(stage: str, lang_dir, cuts_paths, config) -> dict:
    """What ``config.json`` records of a training request (paths as strings)."""
    return {"stage": stage, "lang_dir": str(lang_dir), "cuts": [str(p) for p in cuts_paths],
            "config": dataclasses.asdict(config)}


def _request(stage: str, lang_dir, cuts_paths, config) -> dict:
    """The record as it reads back from JSON, without the run-only fields."""
    req = json.loads(json.dumps(_record(stage, lang_dir, cuts_paths, config), default=str))
    req["config"] = {k: v for k, v in req["config"].items() if k not in _RUN_ONLY}
    return req


def _same(a, b) -> bool:
    """Equal, or the same files named by other paths (a relative and an absolute one)."""
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return isinstance(a, str) and isinstance(b, str) and os.path.samefile(a, b)
    except OSError:
        return False


def check_same_request(exp_dir: Path, stage: str, lang_dir, cuts_paths, config) -> None:
    """A finished system (``.done``) is reused only for the request that made it: other
    options, data or stage raise a one-line :class:`DataError` (never a silent reuse)."""
    path = Path(exp_dir) / "config.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(str(path), f"finished system without a readable config.json ({type(exc).__name__}); "
                                   f"remove {exp_dir} to retrain") from None
    have = {k: record.get(k) for k in ("stage", "lang_dir", "cuts")}
    have["config"] = {k: v for k, v in (record.get("config") or {}).items() if k not in _RUN_ONLY}
    want = _request(stage, lang_dir, cuts_paths, config)
    diff = [f"{k}: {have['config'].get(k)!r} -> {v!r}" for k, v in want["config"].items() if have["config"].get(k) != v]
    diff += [f"{k}: {have[k]!r} -> {want[k]!r}" for k in ("stage", "lang_dir", "cuts") if not _same(have[k], want[k])]
    if diff:
        raise DataError(str(exp_dir), f"stale: a finished {have['stage']} system made with other options "
                                      f"({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}); remove {exp_dir} "
                                      "(or train into another directory) to retrain")


def _write_config(exp_dir: Path, stage: str, lang_dir, cuts_paths, config) -> None:
    record = {"command": " ".join(sys.argv), **_record(stage, lang_dir, cuts_paths, config)}
    with atomic_output(exp_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
