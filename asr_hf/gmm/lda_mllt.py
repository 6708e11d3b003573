"""LDA+MLLT tied-triphone training (Kaldi ``steps/train_lda_mllt.sh``): the tri2 system.

1. Features: per-speaker CMVN'd MFCCs spliced +-``splice`` frames (13 x 7 = 91
   dimensions); LDA statistics per pdf of the source system's alignments
   (silence frames weighted ``silence_weight``, default 0) and an LDA to ``dim``
   dimensions (:mod:`asr_hf.gmm.lda`; ``0.mat``, ``full.mat``).
2. Tree statistics on the LDA features, a new tree and one Gaussian per pdf
   (as :func:`~asr_hf.gmm.tri.train_tri`; pdfs without data back off to pooled
   statistics, since the source model lives in another feature space).
3. EM as ``train_deltas.sh``; on ``mllt_iters`` (after any realignment) MLLT
   statistics are accumulated along the alignments with the current model, an
   MLLT matrix ``M`` is estimated from the unit matrix (:mod:`asr_hf.gmm.mllt`),
   composed into the transform (``final.mat <- M final.mat``) and applied to the
   model means (``gmm-transform-means``); that iteration's statistics are then
   accumulated on the new features.

The experiment directory carries ``final.mat`` and ``feature_pipeline.json``
(splice 3, no deltas), so alignment, graph building and decoding work on it
unchanged.  ``mllt_log.jsonl`` records each MLLT estimation's objective trace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from asr_hf.gmm.feats import FeaturePipeline, write_matrix
from asr_hf.gmm.lda import estimate_lda
from asr_hf.gmm.mllt import estimate_mllt
from asr_hf.gmm.model import GmmSystem, append_log
from asr_hf.gmm.passes import AliSource, PassSpec, TransformStats, log_failures
from asr_hf.gmm.tri import FrontEnd, TriConfig, train_tied
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike

log = logging.getLogger(__name__)


@dataclass
class LdaMlltConfig(TriConfig):
    """Options of LDA+MLLT training (defaults of Kaldi's ``train_lda_mllt.sh``).

    Attributes (besides :class:`~asr_hf.gmm.tri.TriConfig`'s):
        splice: +-context frames spliced before the LDA.
        dim: LDA output dimension.
        mllt_iters: EM iterations that re-estimate MLLT.
        mllt_row_iters: row-update sweeps per MLLT estimation (Kaldi: 200).
        silence_weight: weight of silence frames in the LDA and MLLT statistics.
    """

    splice: int = 3
    dim: int = 40
    mllt_iters: tuple[int, ...] = (2, 4, 6, 12)
    mllt_row_iters: int = 200
    silence_weight: float = 0.0


class LdaMlltFrontEnd(FrontEnd):
    """LDA before the tree, MLLT within EM."""

    stage = "train_lda_mllt"
    same_space = False

    def __init__(self, config: LdaMlltConfig) -> None:
        self.config = config
        self.transform_iters = tuple(config.mllt_iters)

    def _silence(self) -> tuple[int, ...]:
        return tuple(self.ctx.lang.silence_phones)

    def prepare(self, prev: GmmSystem) -> tuple[FeaturePipeline, Optional[dict]]:
        cfg, ctx = self.config, self.ctx
        base = FeaturePipeline(cmvn=prev.pipeline.cmvn, norm_vars=prev.pipeline.norm_vars, delta_order=0,
                               splice=cfg.splice)  # fmt: skip
        spec = PassSpec(source=AliSource.READ, accumulate_gmm=False, transform_stats=TransformStats.LDA,
                        weight_phones=self._silence(), silence_weight=cfg.silence_weight)  # fmt: skip
        res = ctx.runner.run(spec, replace(prev.state(), pipeline=base, speaker_transforms=None), ctx.cmvn,
                             ali_in=ctx.prev_ali)  # fmt: skip
        log_failures(res, "LDA statistics")
        if res.lda_stats is None:
            raise DataError("LDA statistics", "no usable alignments")
        lda = estimate_lda(res.lda_stats, cfg.dim)
        write_matrix(ctx.exp_dir / "0.mat", lda.matrix)
        write_matrix(ctx.exp_dir / "full.mat", lda.full)
        ctx.summary.update(lda.summary())
        ctx.summary["mllt"] = []
        (ctx.exp_dir / "mllt_log.jsonl").unlink(missing_ok=True)
        return base.with_transform(lda.matrix), None

    def update(self, it: int, system: GmmSystem) -> dict:
        cfg, ctx = self.config, self.ctx
        spec = PassSpec(source=AliSource.READ, accumulate_gmm=False, transform_stats=TransformStats.MLLT,
                        weight_phones=self._silence(), silence_weight=cfg.silence_weight)  # fmt: skip
        res = ctx.runner.run(spec, system.state(), ctx.cmvn, ali_in=ctx.ali_path)
        log_failures(res, f"MLLT statistics (iteration {it})")
        if res.mllt_stats is None:
            raise DataError("MLLT statistics", "no usable alignments")
        est = estimate_mllt(res.mllt_stats, num_iters=cfg.mllt_row_iters)
        M = est.matrix
        system.pipeline = system.pipeline.with_transform(M @ system.pipeline.transform)  # compose-transforms
        system.gmm.means = system.gmm.means @ M.T  # gmm-transform-means
        write_matrix(ctx.exp_dir / f"{it}.mat", system.pipeline.transform)
        sweeps = est.trace
        rec = {
            "iter": it,
            "count": est.count,
            "objf_per_frame": [round((v - sweeps[0]) / est.count, 6) for v in sweeps],  # after each row sweep
            "improvement_per_frame": est.improvement_per_frame,
            "sweeps": len(sweeps) - 1,
            "logdet": float(np.linalg.slogdet(M)[1]),
        }
        append_log(ctx.exp_dir, rec, name="mllt_log.jsonl")
        ctx.summary["mllt"].append({"iter": it, "improvement_per_frame": round(est.improvement_per_frame, 5)})
        log.info("iter %d: MLLT objective improvement %.4f per frame", it, est.improvement_per_frame)
        return {"mllt_improvement_per_frame": est.improvement_per_frame}


def train_lda_mllt(
    lang_dir: Pathlike,
    cuts_paths: Sequence[Pathlike] | Pathlike,
    src_dir: Pathlike,
    exp_dir: Pathlike,
    config: LdaMlltConfig = LdaMlltConfig(),
) -> GmmSystem:
    """Train an LDA+MLLT system on the alignments in ``src_dir/ali`` (e.g. ``exp/tri1``).

    Writes what :func:`~asr_hf.gmm.tri.train_tri` writes plus ``final.mat`` (the
    composed LDA+MLLT transform), ``0.mat`` / ``full.mat`` (the LDA) and
    ``mllt_log.jsonl``.
    """
    return train_tied(lang_dir, cuts_paths, src_dir, exp_dir, config, LdaMlltFrontEnd(config))


def read_mllt_log(exp_dir: Pathlike) -> list[dict]:
    """The records ``mllt_log.jsonl`` holds (one per MLLT estimation)."""
    path = Path(exp_dir) / "mllt_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
