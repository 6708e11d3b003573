"""Speaker-adaptive training with fMLLR (Kaldi ``steps/train_sat.sh``): the tri3 system,
and the two-pass use of such a system (``align_fmllr.sh``, ``decode_fmllr.sh``).

Training, on top of the source system's features (LDA+MLLT, ``final.mat``):

1. Per training speaker an fMLLR transform ``W_s`` (:mod:`asr_hf.gmm.fmllr`) is
   estimated with the source model along its alignments (silence frames weighted
   ``silence_weight``, default 0).
2. Tree statistics on the adapted features ``W_s [x; 1]``, a new tree and one
   Gaussian per pdf (as :func:`~asr_hf.gmm.tri.train_tri`).
3. EM as ``train_deltas.sh``; on ``fmllr_iters`` (after any realignment) each
   speaker's transform is re-estimated with the current model on the current
   adapted features and composed onto the old one (``compose-transforms
   --b-is-affine``).
4. ``final.alimdl``: the final model re-estimated on the speaker-independent
   features with the posteriors of the adapted ones (``gmm-acc-stats-twofeats``),
   Gaussian for Gaussian; the training transforms go to ``trans_train.npz``.

Using a SAT system (:func:`estimate_with_runner`, used by
:func:`asr_hf.gmm.aligner.align`, and :mod:`asr_hf.decode.gmm_decode`): a first
pass with ``final.alimdl`` on speaker-independent features (Viterbi alignment to
the transcript, or decoding), fMLLR per speaker with ``final.mdl`` along that
first-pass path, then a second pass with ``final.mdl`` on the adapted features.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from asr_hf.gmm.feats import FeaturePipeline
from asr_hf.gmm.fmllr import estimate_speakers, save_transforms
from asr_hf.gmm.gmm import MleOptions, mle_update
from asr_hf.gmm.model import ALIGN_MODEL_FILE, GmmSystem, append_log
from asr_hf.gmm.passes import AliSource, PassRunner, PassSpec, TransformStats, log_failures
from asr_hf.gmm.tri import FrontEnd, TriConfig, train_tied
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output

log = logging.getLogger(__name__)

TRAIN_TRANSFORMS = "trans_train.npz"
#: one JSON line per fMLLR estimation in training, with each speaker's auxiliary-function trace
FMLLR_LOG = "fmllr_log.jsonl"
#: how a SAT system estimates test speakers' transforms (written by training, read by decoding)
FMLLR_SETTINGS = "fmllr.json"


@dataclass(frozen=True)
class FmllrSettings:
    """fMLLR estimation for a SAT system's second pass (Kaldi ``decode_fmllr.sh`` / ``align_fmllr.sh``).

    Attributes:
        silence_phones: phones whose frames are down-weighted.
        decode_silence_weight: their weight when the first pass is a decoding (Kaldi: 0.01).
        align_silence_weight: ... when it is an alignment to the transcript (Kaldi: 0.0).
        num_iters / min_count: :func:`~asr_hf.gmm.fmllr.estimate_fmllr` options.
    """

    silence_phones: tuple[int, ...]
    decode_silence_weight: float = 0.01
    align_silence_weight: float = 0.0
    num_iters: int = 40
    min_count: float = 50.0

    def save(self, exp_dir: Pathlike) -> None:
        with atomic_output(Path(exp_dir) / FMLLR_SETTINGS) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, exp_dir: Pathlike) -> "FmllrSettings":
        path = Path(exp_dir) / FMLLR_SETTINGS
        if not path.is_file():
            raise DataError(str(path), "missing: not a SAT system directory")
        d = json.loads(path.read_text())
        return cls(**{**d, "silence_phones": tuple(d["silence_phones"])})


@dataclass
class SatConfig(TriConfig):
    """Options of SAT training (defaults of Kaldi's ``train_sat.sh``).

    Attributes (besides :class:`~asr_hf.gmm.tri.TriConfig`'s):
        fmllr_iters: EM iterations that re-estimate the speakers' transforms.
        fmllr_row_iters: row-update sweeps per estimation (Kaldi: 40).
        fmllr_min_count: speakers with fewer (weighted) frames keep their transform.
        silence_weight: weight of silence frames in the fMLLR statistics.
    """

    fmllr_iters: tuple[int, ...] = (2, 4, 6, 12)
    fmllr_row_iters: int = 40
    fmllr_min_count: float = 50.0
    silence_weight: float = 0.0


def estimate_with_runner(
    runner: PassRunner,
    system: GmmSystem,
    cmvn: dict,
    ali_in,
    silence_phones: Sequence[int],
    silence_weight: float,
    num_iters: int = 40,
    min_count: float = 50.0,
) -> tuple[dict, dict]:
    """Per-speaker fMLLR along existing alignments, composed onto ``system.speaker_transforms``.

    One pass over the shards (statistics under ``system`` on its current, possibly
    adapted, features), then one estimation per speaker.

    Returns:
        (speaker -> (D, D+1) transform, summary of :func:`~asr_hf.gmm.fmllr.estimate_speakers`).
    """
    spec = PassSpec(source=AliSource.READ, accumulate_gmm=False, transform_stats=TransformStats.FMLLR,
                    weight_phones=tuple(silence_phones), silence_weight=silence_weight)  # fmt: skip
    res = runner.run(spec, system.state(), cmvn, ali_in=ali_in)
    log_failures(res, "fMLLR statistics")
    if not res.fmllr_stats:
        raise DataError("fMLLR statistics", "no usable alignments")
    return estimate_speakers(res.fmllr_stats, system.speaker_transforms, num_iters=num_iters, min_count=min_count)


class SatFrontEnd(FrontEnd):
    """fMLLR per training speaker before the tree and within EM; the SI alignment model at the end."""

    stage = "train_sat"
    same_space = False

    def __init__(self, config: SatConfig) -> None:
        self.config = config
        self.transform_iters = tuple(config.fmllr_iters)

    def _estimate(self, system: GmmSystem, ali_in) -> tuple[dict, dict]:
        cfg, ctx = self.config, self.ctx
        return estimate_with_runner(ctx.runner, system, ctx.cmvn, ali_in, ctx.lang.silence_phones, cfg.silence_weight,
                                    cfg.fmllr_row_iters, cfg.fmllr_min_count)  # fmt: skip

    def prepare(self, prev: GmmSystem) -> tuple[FeaturePipeline, Optional[dict]]:
        src = replace(prev, speaker_transforms=None)
        xforms, summary = self._estimate(src, self.ctx.prev_ali)
        (self.ctx.exp_dir / FMLLR_LOG).unlink(missing_ok=True)
        self.ctx.summary["fmllr"] = []
        self._record(0, summary)
        return replace(prev.pipeline, speaker_adaptive=True), xforms

    def _record(self, it: int, summary: dict) -> None:
        append_log(self.ctx.exp_dir, {"iter": it, **summary}, name=FMLLR_LOG)
        self.ctx.summary["fmllr"].append({"iter": it, **_brief(summary)})

    def update(self, it: int, system: GmmSystem) -> dict:
        xforms, summary = self._estimate(system, self.ctx.ali_path)
        system.speaker_transforms = xforms
        self._record(it, summary)
        return {"fmllr_improvement_per_frame": summary["improvement_per_frame"], "fmllr_speakers": summary["updated"]}

    def finish(self, system: GmmSystem) -> dict:
        ctx = self.ctx
        spec = PassSpec(source=AliSource.READ, si_stats=True)
        res = ctx.runner.run(spec, system.state(), ctx.cmvn, ali_in=ctx.ali_path)
        log_failures(res, "alignment-model statistics")
        alimdl, rep = mle_update(system.gmm, res.gmm_stats, MleOptions(remove_low_count_gaussians=False))
        GmmSystem(system.tm, system.tree, alimdl, system.pipeline).save_model(ctx.exp_dir / ALIGN_MODEL_FILE)
        save_transforms(ctx.exp_dir / TRAIN_TRANSFORMS, system.speaker_transforms or {})
        cfg = self.config
        FmllrSettings(tuple(ctx.lang.silence_phones), num_iters=cfg.fmllr_row_iters, min_count=cfg.fmllr_min_count,
                      align_silence_weight=cfg.silence_weight).save(ctx.exp_dir)  # fmt: skip
        return {"alimdl_objf_change_per_frame": rep.objf_change / max(rep.count, 1.0)}


def _brief(summary: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in summary.items() if k != "auxf_traces_per_frame"}


def train_sat(
    lang_dir: Pathlike,
    cuts_paths: Sequence[Pathlike] | Pathlike,
    src_dir: Pathlike,
    exp_dir: Pathlike,
    config: SatConfig = SatConfig(),
) -> GmmSystem:
    """Train a SAT system on the alignments in ``src_dir/ali`` (an LDA+MLLT system, e.g. ``exp/tri2``).

    Writes what :func:`~asr_hf.gmm.tri.train_tri` writes plus ``final.alimdl``,
    ``trans_train.npz``, ``fmllr.json`` (how test speakers are adapted) and
    ``fmllr_log.jsonl`` (the auxiliary-function traces of every estimation).
    """
    from asr_hf.gmm.feats import FeaturePipeline
    from asr_hf.gmm.model import PIPELINE_FILE

    if FeaturePipeline.load(Path(src_dir) / PIPELINE_FILE).speaker_adaptive:  # refused before anything is written
        raise DataError(str(src_dir), "SAT on top of a SAT system is not supported; use tri2 (LDA+MLLT)")
    return train_tied(lang_dir, cuts_paths, src_dir, exp_dir, config, SatFrontEnd(config))
