"""Tied-state triphone training (Kaldi ``steps/train_deltas.sh``).

1. Tree statistics along the previous system's alignments (``acc-tree-stats``;
   silence phones are context independent).
2. Questions (``cluster-phones`` + extra questions), tree growing and leaf
   clustering (``build-tree``, :mod:`asr_hf.gmm.tree`); the tree is written in
   Kaldi's binary format and loaded into ``khg.ContextDependency``.
3. The triphone model: transition model from (tree, topology); one Gaussian
   per pdf from the pooled tree statistics of its leaves (``gmm-init-model``),
   pdfs without data copy the previous model's pdf of the same phone/state.
4. The previous alignments are converted to the new tree (``convert-ali``:
   same phones, HMM states and transitions, new pdfs from the context).
5. EM as in monophone training with realignment on ``realign_iters`` and
   mixing up to ``totgauss``; the final model realigns the training data.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from asr_hf.data.paths import system_ali_dir, tid_ali_path
from asr_hf.gmm.align import AliArchive, AlignOptions
from asr_hf.gmm.aligner import align_with_runner, compute_cmvn
from asr_hf.gmm.feats import FeaturePipeline
from asr_hf.gmm.gmm import GmmSet
from asr_hf.gmm.model import GmmSystem, save_cmvn_npz
from asr_hf.gmm.mono import _write_config, check_same_request, read_phone_sets
from asr_hf.gmm.passes import AliSource, ConvertSpec, PassRunner, PassSpec, default_jobs, log_failures, split_cuts
from asr_hf.gmm.topo import TransitionInfo
from asr_hf.gmm.trainer import EmSchedule, run_em
from asr_hf.gmm.tree import Root, TreeConfig, TreeStats, build_questions, build_tree, pdf_table, read_roots
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done
from asr_hf.utils.kaldi import khg

log = logging.getLogger(__name__)


@dataclass
class TriConfig:
    """Options of triphone training (defaults of Kaldi's ``train_deltas.sh``).

    Attributes:
        num_leaves: target tree leaves (the papers: ~2.2k BN-50, ~9.3k SWB-300).
        totgauss: final number of Gaussians.
        num_iters / max_iter_inc / realign_iters / power: the EM schedule.
        boost_silence / beam / retry_beam: alignment options.
        tree: tree building options (``num_leaves`` above overrides its own).
        jobs: parallel processes (default: all cores).
    """

    num_leaves: int = 2000
    totgauss: int = 10000
    num_iters: int = 35
    max_iter_inc: int = 25
    realign_iters: tuple[int, ...] = (10, 20, 30)
    power: float = 0.25
    boost_silence: float = 1.0
    beam: float = 10.0
    retry_beam: float = 40.0
    tree: TreeConfig = field(default_factory=TreeConfig)
    jobs: Optional[int] = None

    def schedule(self) -> EmSchedule:
        return EmSchedule(
            num_iters=self.num_iters, realign_iters=tuple(self.realign_iters), max_iter_inc=self.max_iter_inc,
            totgauss=self.totgauss, power=self.power,
            align=AlignOptions(beam=self.beam, retry_beam=self.retry_beam, boost_silence=self.boost_silence),
        )  # fmt: skip


def reshard_alignments(archive: Path, shards: Sequence[Path], out) -> None:
    """Split one alignment archive into per-shard archives following the shard manifests."""
    from lhotse import CutSet

    alis = AliArchive.read(archive)
    for j, shard in enumerate(shards):
        ids = [c.id for c in CutSet.from_file(shard)]
        AliArchive.write(out(j), {i: alis[i] for i in ids if i in alis})


def init_from_tree(
    tree, prev: Optional[GmmSystem], min_count: float = 10.0, min_variance: float = 1e-3,
    stats: Optional[TreeStats] = None,
) -> GmmSet:  # fmt: skip
    """One Gaussian per pdf from its pooled tree statistics (``gmm-init-model``).

    Pdfs with fewer than ``min_count`` frames take the previous model's GMM
    for the same (phone, pdf-class) with silent contexts; without a previous
    model in the same feature space (``prev`` None, e.g. LDA+MLLT on top of
    delta features) they take the pooled statistics of every event of that
    centre phone and pdf-class in ``stats``, else of all events.
    """
    n, x, x2 = tree.pdf_stats
    ws, ms, vs = [], [], []
    backed_off = 0

    def gaussian(cnt, sx, sx2) -> None:
        mean = sx / cnt
        ws.append(np.ones(1))
        ms.append(mean[None])
        vs.append(np.maximum(sx2 / cnt - mean**2, min_variance)[None])

    for p in range(tree.num_pdfs):
        if n[p] >= min_count:
            gaussian(n[p], x[p], x2[p])
        elif prev is None:
            if stats is None:
                raise ValueError("init_from_tree needs the tree statistics when there is no previous model")
            phone, k = tree.pdf_source[p]
            sel = (stats.events[:, 2] == phone) & (stats.events[:, 0] == k)
            if stats.count[sel].sum() < min_count:
                sel = np.ones(len(stats.count), bool)
            gaussian(stats.count[sel].sum(), stats.x[sel].sum(0), stats.x2[sel].sum(0))
            backed_off += 1
        else:
            phone, k = tree.pdf_source[p]
            n_ctx, centre = prev.tree.context_width, prev.tree.central_position
            ctx = [0] * n_ctx
            ctx[centre] = phone
            ok, old = prev.tree.compute(ctx, k)
            if not ok:
                raise DataError("tree", f"previous model has no pdf for phone {phone} class {k}")
            s = prev.gmm.pdf_slice(old)
            ws.append(prev.gmm.weights[s])
            ms.append(prev.gmm.means[s])
            vs.append(prev.gmm.vars[s])
            backed_off += 1
    if backed_off:
        log.info("%d pdfs without enough data %s", backed_off,
                 "copied from the previous model" if prev is not None else "initialised from pooled statistics")
    return GmmSet.from_pdfs(ws, ms, vs)


def phone_alignment_agreement(info_a: TransitionInfo, ali_a: dict, info_b: TransitionInfo, ali_b: dict, tolerance: int = 2) -> dict:
    """Agreement of two systems' alignments at the phone level.

    Returns the fraction of frames with the same phone, and the fraction of
    phone boundaries of ``a`` that ``b`` places within ``tolerance`` frames
    (utterances aligned by both with the same phone sequence only for the latter).
    """
    same = total = 0
    hit = nb = 0
    for utt, a in ali_a.items():
        b = ali_b.get(utt)
        if b is None or len(b) != len(a):
            continue
        same += int(np.count_nonzero(info_a.phone[a] == info_b.phone[b]))
        total += len(a)
        pa, sa, _ = info_a.phone_segments(a)
        pb, sb, _ = info_b.phone_segments(b)
        if len(pa) == len(pb) and np.array_equal(pa, pb):
            hit += int(np.count_nonzero(np.abs(sa[1:] - sb[1:]) <= tolerance))
            nb += len(sa) - 1
    return {
        "frame_phone_agreement": same / total if total else None,
        f"boundary_within_{tolerance}_frames": hit / nb if nb else None,
        "frames_compared": total,
    }


class FrontEnd:
    """The features a tied-triphone trainer uses, and how it re-estimates their transforms.

    The base class is ``train_deltas.sh``: the source system's features
    unchanged.  :mod:`asr_hf.gmm.lda_mllt` (LDA+MLLT) and :mod:`asr_hf.gmm.sat`
    (speaker-adaptive training) override the hooks.  :func:`train_tied` binds
    ``ctx`` (a :class:`TrainContext`) before calling them.
    """

    stage = "train_tri"
    #: EM iterations on which :meth:`update` re-estimates the transform.
    transform_iters: tuple[int, ...] = ()
    #: whether the new features live in the source model's space (pdf back-off to its GMMs).
    same_space = True
    ctx: "TrainContext"

    def prepare(self, prev: GmmSystem) -> tuple[FeaturePipeline, Optional[dict]]:
        """Before tree statistics: the new system's pipeline and speaker transforms."""
        return prev.pipeline, prev.speaker_transforms

    def update(self, it: int, system: GmmSystem) -> dict:
        """Re-estimate the transform on iteration ``it`` (see :func:`~asr_hf.gmm.trainer.run_em`)."""
        return {}

    def finish(self, system: GmmSystem) -> dict:
        """After EM, before the final alignment; returns summary fields."""
        return {}


@dataclass
class TrainContext:
    """What the :class:`FrontEnd` hooks may use."""

    exp_dir: Path
    lang: object
    runner: PassRunner
    cmvn: dict
    prev_ali: object  # shard -> the source system's alignment archive
    ali_path: object  # shard -> the current alignment archive
    summary: dict = field(default_factory=dict)


def train_tri(
    lang_dir: Pathlike,
    cuts_paths: Sequence[Pathlike] | Pathlike,
    src_dir: Pathlike,
    exp_dir: Pathlike,
    config: TriConfig = TriConfig(),
) -> GmmSystem:
    """Train a tied-triphone system from the system (and its ``ali/``) in ``src_dir``.

    Writes ``final.mdl``, ``tree``, ``tree_stats.npz``, ``questions.int``,
    ``train_log.jsonl``, ``config.json``, ``summary.json`` and ``ali/`` (train).
    """
    return train_tied(lang_dir, cuts_paths, src_dir, exp_dir, config, FrontEnd())


def train_tied(
    lang_dir: Pathlike,
    cuts_paths: Sequence[Pathlike] | Pathlike,
    src_dir: Pathlike,
    exp_dir: Pathlike,
    config: TriConfig,
    front_end: FrontEnd,
) -> GmmSystem:
    """The tied-triphone recipe shared by tri1 (deltas), tri2 (LDA+MLLT) and tri3 (SAT).

    Tree statistics along the source alignments on the front end's features, a
    new tree, one Gaussian per pdf, the source alignments converted to the new
    tree, EM with realignment, mixing up and the front end's transform updates,
    then the final alignment.  The directory is complete when ``.done`` exists
    (written last).
    """
    from asr_hf.lang.lang_dir import LangDir

    exp_dir, src_dir = Path(exp_dir), Path(src_dir)
    cuts_paths = [cuts_paths] if isinstance(cuts_paths, (str, Path)) else list(cuts_paths)
    if is_done(exp_dir):
        check_same_request(exp_dir, front_end.stage, lang_dir, cuts_paths, config)
        log.info("triphone system %s already complete", exp_dir)
        return GmmSystem.load(exp_dir)
    src_ali = tid_ali_path(system_ali_dir(src_dir), "train")
    if not src_ali.is_file():
        raise DataError(str(src_ali), "missing; train (or align) the source system first")
    t_start = time.time()
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "train_log.jsonl").unlink(missing_ok=True)
    _write_config(exp_dir, front_end.stage, lang_dir, cuts_paths, config)

    lang = LangDir.load(lang_dir)
    p2n = num_pdf_classes(lang)
    prev = GmmSystem.load(src_dir)
    jobs = config.jobs or default_jobs()
    shards = split_cuts(cuts_paths, exp_dir / f"split{jobs}", jobs)
    prev_ali = lambda j: exp_dir / f"prev_ali.{j}.npz"  # noqa: E731
    ali_path = lambda j: exp_dir / f"ali.{j}.npz"  # noqa: E731
    reshard_alignments(src_ali, shards, prev_ali)
    schedule = config.schedule()
    silence = [lang.optional_silence]
    tree_cfg = TreeConfig(**{**config.tree.__dict__, "num_leaves": config.num_leaves})

    with PassRunner(shards, lang_dir, jobs) as runner:
        cmvn = compute_cmvn(runner, cuts_paths)
        save_cmvn_npz(exp_dir / "cmvn_train.npz", cmvn)
        front_end.ctx = TrainContext(exp_dir, lang, runner, cmvn, prev_ali, ali_path)

        # 0. The front end (LDA, first fMLLR, ...).
        t0 = time.time()
        pipeline, spk_xforms = front_end.prepare(prev)
        t_front = time.time() - t0

        # 1. Tree statistics.
        t0 = time.time()
        spec = PassSpec(source=AliSource.READ, accumulate_gmm=False, tree_stats=True, ci_phones=tuple(lang.context_indep))
        state = replace(prev.state(), pipeline=pipeline, speaker_transforms=spk_xforms)
        res = runner.run(spec, state, cmvn, ali_in=prev_ali)
        log_failures(res, "tree statistics")
        if res.tree_stats is None:
            raise DataError(str(src_ali), "no usable alignments for tree statistics")
        stats: TreeStats = res.tree_stats
        stats.save(exp_dir / "tree_stats.npz")
        t_stats = time.time() - t0

        # 2. Questions and tree.
        t0 = time.time()
        tree, ctx, tm, questions = grow_tree(exp_dir, lang, stats, tree_cfg)
        t_tree = time.time() - t0

        # 3. Initial model, 4. converted alignments, 5. EM.
        gmm = init_from_tree(tree, prev if front_end.same_space else None, stats=stats)
        system = GmmSystem(tm, ctx, gmm, pipeline, spk_xforms)
        conv = ConvertSpec(old_info=prev.info, pdf_table=pdf_table(tree.event_map(), p2n))
        first = PassSpec(source=AliSource.CONVERT, convert=conv)
        run_em(system, runner, exp_dir, schedule, cmvn, start_iter=1, num_gauss=tree.num_pdfs,
               silence_phones=silence, ali_path=ali_path, first_spec=first, first_ali_in=prev_ali,
               transform_iters=front_end.transform_iters, update_transform=front_end.update)  # fmt: skip
        extra = front_end.finish(system)
        system.save(exp_dir)
        t_train = time.time() - t_start
        _, summary = align_with_runner(
            system, runner, cmvn, exp_dir, system_ali_dir(exp_dir), "train", cuts_paths, schedule.align,
            silence_phones=silence, model_path=exp_dir / "final.mdl",
        )  # fmt: skip
    for j in range(len(shards)):
        ali_path(j).unlink(missing_ok=True)
        prev_ali(j).unlink(missing_ok=True)
    agreement = phone_alignment_agreement(
        prev.info, AliArchive.read(src_ali), system.info, AliArchive.read(tid_ali_path(system_ali_dir(exp_dir), "train"))
    )
    summary.update(
        train_seconds=round(t_train, 3), total_seconds=round(time.time() - t_start, 3),
        front_end_seconds=round(t_front, 3), tree_stats_seconds=round(t_stats, 3), tree_build_seconds=round(t_tree, 3),
        tree=tree.report.__dict__, num_questions=len(questions), agreement_with_source=agreement,
        **front_end.ctx.summary, **extra, **system.summary(),
    )  # fmt: skip
    with atomic_output(exp_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    mark_done(exp_dir)
    log.info("%s done: %s", front_end.stage, json.dumps(summary))
    return system


def grow_tree(exp_dir: Path, lang, stats: TreeStats, tree_cfg: TreeConfig):
    """Questions, tree and transition model from tree statistics (``cluster-phones``,
    ``compile-questions``, ``build-tree``); writes ``questions.int``.

    Returns:
        (the :class:`~asr_hf.gmm.tree.DecisionTree`, its ``khg.ContextDependency``,
        the new ``khg.TransitionModel``, the questions).
    """
    topo = lang.topo()
    p2n = num_pdf_classes(lang)
    sets = read_phone_sets(lang)
    central = {p: p2n[p] // 2 for p in p2n}
    extra = _read_int_sets(Path(lang.path) / "phones" / "extra_questions.int")
    base_names = {name: i for name, i in lang.phones.ids.items()}
    questions = build_questions(
        stats, sets, central, extra_questions=extra, boundary_like=lang.optional_silence,
        kind=tree_cfg.questions, phone_table=base_names, var_floor=tree_cfg.var_floor,
    )  # fmt: skip
    with atomic_output(exp_dir / "questions.int") as tmp:
        tmp.write_text("".join(" ".join(map(str, q)) + "\n" for q in questions))
    roots_path = Path(lang.path) / "phones" / "roots.int"
    roots = read_roots(roots_path) if roots_path.is_file() else [Root((p,)) for p in sorted(p2n)]
    tree = build_tree(stats, roots, p2n, questions, tree_cfg)
    ctx = tree.to_kaldi()
    tm = khg.TransitionModel(ctx, topo)
    if tm.num_pdfs != tree.num_pdfs:
        raise DataError("tree", f"transition model has {tm.num_pdfs} pdfs, tree {tree.num_pdfs}")
    return tree, ctx, tm, questions


def num_pdf_classes(lang) -> dict[int, int]:
    """phone -> number of pdf-classes in the lang dir's topology."""
    topo = lang.topo()
    p2n_list = topo.get_phone_to_num_pdf_classes()
    return {p: p2n_list[p] for p in topo.phones}


def _read_int_sets(path: Path) -> list[list[int]]:
    if not path.is_file():
        return []
    return [[int(t) for t in line.split()] for line in path.read_text().splitlines() if line.strip()]
