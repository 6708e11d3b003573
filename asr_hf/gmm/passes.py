"""Parallel passes over the training data (Kaldi's ``--nj`` jobs).

The data are split once into ``nj`` shards (``<exp>/split<nj>/cuts.<j>.jsonl.gz``);
every pass runs one task per shard in a process pool.  A task loads its
cuts' features, obtains an alignment (equal alignment, Viterbi realignment,
an existing archive, or an archive converted from another tree), and returns
summed statistics: per-Gaussian GMM statistics, transition-id counts, and
optionally decision-tree statistics, CMVN statistics, and the statistics of
feature transforms (LDA per pdf class, MLLT, per-speaker fMLLR; silence frames
weighted as ``weight-silence-post``).  Alignments are
written per shard (``ali.<j>.npz``) so the parent never holds them.

Failures are data, not exceptions: utterances that cannot be aligned (beam
exceeded twice, graph shorter than the utterance, missing alignment) come
back in ``failed`` with a reason and are skipped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from asr_hf.gmm.align import AliArchive, AlignOptions, GraphCompiler, equal_alignment, viterbi_align
from asr_hf.gmm.feats import FeaturePipeline, speaker_of
from asr_hf.gmm.fmllr import FmllrStats, accumulate_speakers
from asr_hf.gmm.gmm import GmmSet, GmmStats, accumulate, weighted_outer
from asr_hf.gmm.lda import LdaStats
from asr_hf.gmm.mllt import MlltStats, mllt_stats
from asr_hf.gmm.topo import TransitionInfo
from asr_hf.gmm.tree import TreeStats, frame_events
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output
from asr_hf.utils.procs import pool_kwargs

log = logging.getLogger(__name__)

# Frames gathered before one grouped statistics accumulation.
_BATCH_FRAMES = 50000


class AliSource:
    """Where a pass gets each utterance's transition-id alignment."""

    EQUAL = "equal"  # flat start: equal alignment of the training graph
    ALIGN = "align"  # Viterbi realignment with the current model
    READ = "read"  # the archive written by an earlier pass (same model tree)
    CONVERT = "convert"  # an archive from another model, mapped through the new tree


class TransformStats:
    """Which feature-transform statistics a pass accumulates along its alignments."""

    LDA = "lda"  # per-pdf class statistics of the pipeline's features (acc-lda)
    MLLT = "mllt"  # global MLLT statistics under the current model (gmm-acc-mllt)
    FMLLR = "fmllr"  # per-speaker fMLLR statistics under the current model (gmm-est-fmllr)


@dataclass
class ConvertSpec:
    """Alignment conversion between trees sharing a topology (Kaldi ``convert-ali``).

    ``pdf_table[centre, pdf_class, left, right]`` gives the new pdf; ``old_info``
    decodes the old transition-ids.
    """

    old_info: TransitionInfo
    pdf_table: np.ndarray


@dataclass
class PassSpec:
    """What a pass does (picklable; one copy per task).

    ``transform_stats`` (a :class:`TransformStats` value) adds feature-transform
    statistics; frames whose phone is in ``weight_phones`` count with
    ``silence_weight`` in them (Kaldi ``weight-silence-post``).  ``si_stats``:
    the GMM statistics are of the speaker-independent features (no speaker
    transforms) with posteriors from the adapted ones (``gmm-acc-stats-twofeats``).
    """

    source: str
    accumulate_gmm: bool = True
    tree_stats: bool = False
    cmvn_only: bool = False
    write_ali: bool = False
    align: AlignOptions = field(default_factory=AlignOptions)
    silence_phones: tuple[int, ...] = ()
    ci_phones: tuple[int, ...] = ()
    convert: Optional[ConvertSpec] = None
    seed: int = 0
    transform_stats: Optional[str] = None
    weight_phones: tuple[int, ...] = ()
    silence_weight: float = 0.0
    si_stats: bool = False


@dataclass
class SystemState:
    """The model a pass runs with (picklable: pybind objects pickle via their state)."""

    tm: object
    tree: object
    gmm: GmmSet
    pipeline: FeaturePipeline
    speaker_transforms: Optional[dict] = None  # speaker -> (D, D+1) fMLLR applied after the pipeline


@dataclass
class ShardTask:
    shard: int
    cuts_path: str
    lang_dir: str
    spec: PassSpec
    state: Optional[SystemState]
    cmvn: Optional[dict]
    ali_in: Optional[str]
    ali_out: Optional[str]


@dataclass
class PassResult:
    """Summed outputs of all shards."""

    gmm_stats: Optional[GmmStats] = None
    trans_counts: Optional[np.ndarray] = None
    tree_stats: Optional[TreeStats] = None
    cmvn: Optional[dict] = None
    lda_stats: Optional[LdaStats] = None
    mllt_stats: Optional[MlltStats] = None
    fmllr_stats: Optional[dict] = None  # speaker -> FmllrStats
    num_done: int = 0
    num_frames: int = 0
    retried: int = 0
    align_loglike: float = 0.0
    align_frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def add(self, other: "PassResult") -> None:
        if other.gmm_stats is not None:
            if self.gmm_stats is None:
                self.gmm_stats = other.gmm_stats
            else:
                self.gmm_stats.add(other.gmm_stats)
        if other.trans_counts is not None:
            self.trans_counts = other.trans_counts if self.trans_counts is None else self.trans_counts + other.trans_counts
        if other.tree_stats is not None:
            self.tree_stats = (
                other.tree_stats if self.tree_stats is None else TreeStats.merge([self.tree_stats, other.tree_stats])
            )
        if other.cmvn is not None:
            self.cmvn = self.cmvn or {}
            for spk, s in other.cmvn.items():
                self.cmvn[spk] = self.cmvn[spk] + s if spk in self.cmvn else s
        for name in ("lda_stats", "mllt_stats"):
            theirs = getattr(other, name)
            if theirs is not None:
                if getattr(self, name) is None:
                    setattr(self, name, theirs)
                else:
                    getattr(self, name).add(theirs)
        if other.fmllr_stats is not None:
            self.fmllr_stats = self.fmllr_stats or {}
            for spk, st in other.fmllr_stats.items():
                if spk in self.fmllr_stats:
                    self.fmllr_stats[spk].add(st)
                else:
                    self.fmllr_stats[spk] = st
        self.num_done += other.num_done
        self.num_frames += other.num_frames
        self.retried += other.retried
        self.align_loglike += other.align_loglike
        self.align_frames += other.align_frames
        self.failed += other.failed
        self.cpu_seconds += other.cpu_seconds


# ----------------------------------------------------------------------------- shards
def split_cuts(cuts_paths: Sequence[Pathlike], split_dir: Pathlike, nj: int) -> list[Path]:
    """Split cut manifests into ``nj`` shards, speakers kept together (Kaldi ``split_data.sh``).

    Returns the shard paths; existing complete splits are reused.
    """
    from lhotse import CutSet

    split_dir = Path(split_dir)
    marker = split_dir / ".done"
    sources = json.dumps(
        [[str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in cuts_paths if Path(p).is_file()]
    )
    if marker.is_file() and marker.read_text() == sources:
        paths = sorted(split_dir.glob("cuts.*.jsonl.gz"), key=lambda p: int(p.name.split(".")[1]))
        if paths:
            return paths
    cuts = []
    for p in cuts_paths:
        if not Path(p).is_file():
            raise DataError(str(p), "cut manifest missing")
        cuts.extend(CutSet.from_file(p))
    if not cuts:
        raise DataError(", ".join(map(str, cuts_paths)), "no cuts")
    for c in cuts:
        if c.features is None:
            raise DataError(c.id, "cut has no features")
        if not c.supervisions or not c.supervisions[0].text:
            raise DataError(c.id, "cut has no transcript")
    nj = max(1, min(nj, len(cuts)))
    paths = [split_dir / f"cuts.{j}.jsonl.gz" for j in range(nj)]
    by_spk: dict[str, list] = {}
    for c in cuts:
        by_spk.setdefault(speaker_of(c), []).append(c)
    # Greedy balance on frames, biggest speakers first.
    loads = [0] * nj
    shards: list[list] = [[] for _ in range(nj)]
    for spk in sorted(by_spk, key=lambda s: -sum(c.num_frames for c in by_spk[s])):
        j = int(np.argmin(loads))
        shards[j].extend(by_spk[spk])
        loads[j] += sum(c.num_frames for c in by_spk[spk])
    if any(not s for s in shards):
        # fewer speakers than jobs: deal utterances round-robin instead
        shards = [cuts[j::nj] for j in range(nj)]
    split_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in split_dir.glob("cuts.*.jsonl.gz"):
        stale.unlink()
    for p, shard in zip(paths, shards):
        with atomic_output(p) as tmp:
            CutSet.from_cuts(shard).to_file(tmp)
    marker.write_text(sources)
    return paths


# ----------------------------------------------------------------------------- worker
def _process_shard(task: ShardTask) -> PassResult:
    from lhotse import CutSet

    from asr_hf.features import cmvn as cmvn_mod
    from asr_hf.lang.lang_dir import LangDir

    t0 = time.time()
    c0 = time.process_time()
    spec = task.spec
    cuts = list(CutSet.from_file(task.cuts_path))
    res = PassResult()
    if spec.cmvn_only:
        stats: dict[str, np.ndarray] = {}
        for c in cuts:
            spk = speaker_of(c)
            try:
                feats = c.load_features()
            except Exception as exc:  # reported by every later pass too; never fatal here
                res.failed.append((c.id, f"cannot load features: {exc}"))
                continue
            stats[spk] = cmvn_mod.accumulate(stats.get(spk), feats)
            res.num_frames += c.num_frames
        res.cmvn = stats
        res.seconds = time.time() - t0
        res.cpu_seconds = time.process_time() - c0
        return res

    st = task.state
    assert st is not None
    info = TransitionInfo.from_model(st.tm)
    lang = LangDir.load(task.lang_dir, validate=False)
    compiler = GraphCompiler(st.tm, st.tree, lang) if spec.source in (AliSource.EQUAL, AliSource.ALIGN) else None
    am = None
    if spec.source == AliSource.ALIGN:
        scale = None
        if spec.align.boost_silence != 1.0 and spec.silence_phones:
            sil_pdfs = np.unique(info.pdf[1:][np.isin(info.phone[1:], spec.silence_phones)])
            scale = st.gmm.boosted_weights(sil_pdfs, spec.align.boost_silence)
        am = st.gmm.to_am(scale)
    ali_in = AliArchive.read(task.ali_in) if spec.source in (AliSource.READ, AliSource.CONVERT) else None
    lookup = info.tid_lookup() if spec.source == AliSource.CONVERT else None

    gstats = GmmStats.zeros(st.gmm) if spec.accumulate_gmm else None
    xstats = spec.transform_stats
    wstats = GmmStats.zeros(st.gmm) if xstats == TransformStats.MLLT else None
    lda = LdaStats.zeros(info.num_pdfs, st.pipeline.output_dim(cuts[0].num_features)) if xstats == TransformStats.LDA and cuts else None
    second: Optional[np.ndarray] = None  # MLLT: sum_t b_t x_t x_t^T
    fmllr: dict[str, FmllrStats] = {}
    weight_phones = np.asarray(spec.weight_phones, dtype=np.int64)
    tcounts = np.zeros(info.num_tids + 1)
    tree_parts: list[TreeStats] = []
    out_ali: dict[str, np.ndarray] = {}
    batch_f: list[np.ndarray] = []
    batch_si: list[np.ndarray] = []
    batch_p: list[np.ndarray] = []
    batch_w: list[np.ndarray] = []
    batch_s: list[str] = []
    batch_n = 0

    def flush() -> None:
        nonlocal batch_f, batch_si, batch_p, batch_w, batch_s, batch_n, second
        if batch_f and gstats is not None:
            si = np.concatenate(batch_si) if spec.si_stats else None
            accumulate(st.gmm, gstats, np.concatenate(batch_f), np.concatenate(batch_p), stats_feats=si)
        if batch_f and xstats == TransformStats.MLLT:
            x = np.concatenate(batch_f).astype(np.float64)
            _, fb = accumulate(st.gmm, wstats, x, np.concatenate(batch_p), weights=np.concatenate(batch_w), frame_moments=True)
            s2 = weighted_outer(fb, x)
            second = s2 if second is None else second + s2
        if batch_f and xstats == TransformStats.FMLLR:
            accumulate_speakers(st.gmm, fmllr, batch_f, batch_p, batch_w, batch_s)
        batch_f, batch_si, batch_p, batch_w, batch_s, batch_n = [], [], [], [], [], 0

    for c in cuts:
        try:
            feats = st.pipeline.for_cut(c, task.cmvn or {}, st.speaker_transforms)
        except DataError as exc:
            res.failed.append((c.id, exc.problem))
            continue
        n = feats.shape[0]
        ali: Optional[np.ndarray] = None
        reason = ""
        try:
            if spec.source == AliSource.EQUAL:
                # seeded by the cut, not its place in a shard: the same whatever --nj
                ali = equal_alignment(compiler.compile(c.supervisions[0].text, c.id), n,
                                      seed=(spec.seed + zlib.crc32(c.id.encode())) % 2**31)
                reason = "transcript needs more frames than the utterance has"
            elif spec.source == AliSource.ALIGN:
                r = viterbi_align(compiler.compile(c.supervisions[0].text, c.id), am, st.tm, feats, spec.align, c.id)
                ali = r.ali
                res.retried += int(r.retried)
                if ali is not None:
                    res.align_loglike += r.loglike
                    res.align_frames += n
                reason = f"no alignment within retry beam {spec.align.retry_beam}"
            else:
                ali = ali_in.get(c.id)
                reason = "no alignment in the input archive"
                if ali is not None and len(ali) != n:
                    reason = f"alignment has {len(ali)} frames, features {n}"
                    ali = None
                if ali is not None and spec.source == AliSource.CONVERT:
                    ali = _convert(ali, spec.convert, lookup)
            if ali is not None and spec.tree_stats:
                phones, starts, ends = info.phone_segments(ali)
                ev = frame_events(phones, starts, ends, info.pdf_class[ali], spec.ci_phones)
                tree_parts.append(TreeStats.from_frames(feats, ev))
                if len(tree_parts) >= 64:
                    tree_parts = [TreeStats.merge(tree_parts)]
        except DataError as exc:
            ali, reason = None, exc.problem
        except ValueError as exc:  # an alignment that does not split into phones
            ali, reason = None, f"invalid alignment: {exc}"
        if ali is None:
            res.failed.append((c.id, reason))
            continue
        out_ali[c.id] = ali
        res.num_done += 1
        res.num_frames += n
        tcounts += np.bincount(ali, minlength=info.num_tids + 1)
        if xstats is not None:
            w = np.where(np.isin(info.phone[ali], weight_phones), spec.silence_weight, 1.0)
        if lda is not None:
            lda.accumulate(feats, info.pdf[ali], w)
        scored = xstats in (TransformStats.MLLT, TransformStats.FMLLR)
        if gstats is not None or scored:
            batch_f.append(feats)
            if spec.si_stats:
                batch_si.append(st.pipeline.for_cut(c, task.cmvn or {}))
            batch_p.append(info.pdf[ali])
            if scored:
                batch_w.append(w)
                batch_s.append(speaker_of(c))
            batch_n += n
            if batch_n >= _BATCH_FRAMES:
                flush()
    flush()
    res.lda_stats = lda
    if xstats == TransformStats.MLLT and second is not None:
        res.mllt_stats = mllt_stats(st.gmm, wstats, second)
    if xstats == TransformStats.FMLLR:
        res.fmllr_stats = fmllr
    if task.ali_out:
        AliArchive.write(task.ali_out, out_ali)
    res.gmm_stats = gstats
    res.trans_counts = tcounts
    if tree_parts:
        res.tree_stats = TreeStats.merge(tree_parts)
    res.seconds = time.time() - t0
    res.cpu_seconds = time.process_time() - c0
    return res


def _convert(ali: np.ndarray, conv: ConvertSpec, lookup) -> np.ndarray:
    """Map an old-model alignment onto the new tree: same phones, HMM states and transitions."""
    old = conv.old_info
    phones, starts, ends = old.phone_segments(ali)
    left = np.concatenate([[0], phones[:-1]])
    right = np.concatenate([phones[1:], [0]])
    lengths = ends - starts
    c = np.repeat(phones, lengths)
    pdf = conv.pdf_table[c, old.pdf_class[ali], np.repeat(left, lengths), np.repeat(right, lengths)]
    if np.any(pdf < 0):
        raise DataError("convert-ali", "the new tree has no pdf for some context")
    return lookup(c, old.hmm_state[ali], pdf, old.trans_index[ali])


# ----------------------------------------------------------------------------- runner
class PassRunner:
    """Runs passes over fixed shards with a persistent process pool."""

    def __init__(self, shard_paths: Sequence[Path], lang_dir: Pathlike, jobs: int) -> None:
        self.shards = [str(p) for p in shard_paths]
        self.lang_dir = str(lang_dir)
        self.jobs = max(1, min(jobs, len(self.shards)))
        self._pool: Optional[ProcessPoolExecutor] = None

    def __enter__(self) -> "PassRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # fork: workers start instantly and scripts need no __main__ guard;
            # they only run numpy and kaldi-hmm-gmm code (no OpenMP/torch ops).
            ctx = mp.get_context("fork")
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, **pool_kwargs())
        return self._pool

    def run(
        self,
        spec: PassSpec,
        state: Optional[SystemState],
        cmvn: Optional[dict] = None,
        ali_in: Optional[Callable[[int], Path]] = None,
        ali_out: Optional[Callable[[int], Path]] = None,
    ) -> PassResult:
        tasks = [
            ShardTask(
                shard=j, cuts_path=p, lang_dir=self.lang_dir, spec=spec, state=state, cmvn=cmvn,
                ali_in=str(ali_in(j)) if ali_in else None, ali_out=str(ali_out(j)) if ali_out else None,
            )  # fmt: skip
            for j, p in enumerate(self.shards)
        ]
        t0 = time.time()
        total = PassResult()
        if self.jobs == 1:
            results = [_process_shard(t) for t in tasks]
        else:
            results = list(self._executor().map(_process_shard, tasks))
        for r in results:
            total.add(r)
        total.seconds = time.time() - t0
        return total


def default_jobs() -> int:
    return os.cpu_count() or 1


def log_failures(result: PassResult, what: str, max_show: int = 5) -> None:
    if result.failed:
        # first line of each reason only (lhotse appends a long "[extra info]" repr)
        show = "; ".join(f"{u}: {str(r).splitlines()[0] if str(r) else r}" for u, r in result.failed[:max_show])
        log.warning("%s: %d utterances skipped (%s%s)", what, len(result.failed), show,
                    "; ..." if len(result.failed) > max_show else "")
