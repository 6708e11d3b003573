"""A trained GMM-HMM system on disk and in memory.

An experiment directory (``exp/mono``, ``exp/tri1``) holds, in Kaldi formats:

* ``final.mdl``  transition model + ``AmDiagGmm`` (binary, as ``gmm-est`` writes);
* ``tree``       the ``ContextDependency`` (binary);
* ``feature_pipeline.json``  the front end (CMVN / delta / splice settings) the model expects;
* ``final.mat``  the global feature transform of LDA+MLLT systems (Kaldi matrix);
* ``final.alimdl``  SAT systems: the speaker-independent model for the first pass;
* ``train_log.jsonl``  one JSON line per training iteration.

:class:`GmmSystem` loads these and exposes what decoding needs: the
transition model and tree for graph building, and :meth:`GmmSystem.pdf_loglikes`,
the (T, num_pdfs) log-likelihood matrix of an utterance, so GMM systems are
decoded through the same per-utterance-matrix decoder as the DNN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from asr_hf.gmm import kaldi_format as kf
from asr_hf.gmm.feats import FeaturePipeline
from asr_hf.gmm.gmm import GmmSet
from asr_hf.gmm.passes import SystemState
from asr_hf.gmm.topo import TransitionInfo
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output
from asr_hf.utils.kaldi import khg

MODEL_FILE = "final.mdl"
#: the speaker-independent alignment model of a SAT system (first decoding/alignment pass)
ALIGN_MODEL_FILE = "final.alimdl"
TREE_FILE = "tree"
PIPELINE_FILE = "feature_pipeline.json"


@dataclass
class GmmSystem:
    """Transition model, tree, GMMs and front end of one system.

    Attributes:
        tm: ``khg.TransitionModel``.
        tree: ``khg.ContextDependency``.
        gmm: the acoustic model as :class:`~asr_hf.gmm.gmm.GmmSet`.
        pipeline: the feature transform (MFCC -> CMVN -> deltas or splice -> final.mat).
        speaker_transforms: per-speaker fMLLR matrices applied after the pipeline
            (SAT training, speaker-adapted decoding); not part of the saved model.
    """

    tm: "khg.TransitionModel"
    tree: "khg.ContextDependency"
    gmm: GmmSet
    pipeline: FeaturePipeline
    speaker_transforms: Optional[dict] = None

    # ------------------------------------------------------------------ properties
    @property
    def num_pdfs(self) -> int:
        return int(self.tm.num_pdfs)

    @cached_property
    def info(self) -> TransitionInfo:
        return TransitionInfo.from_model(self.tm)

    def am(self) -> "khg.AmDiagGmm":
        """The acoustic model as a ``khg.AmDiagGmm`` (e.g. for ``DecodableAmDiagGmmScaled``)."""
        return self.gmm.to_am()

    def state(self) -> SystemState:
        return SystemState(self.tm, self.tree, self.gmm, self.pipeline, self.speaker_transforms)

    # ------------------------------------------------------------------ scoring
    def pdf_loglikes(self, feats: np.ndarray) -> np.ndarray:
        """Acoustic log-likelihoods of pipeline features: (T, num_pdfs) float32."""
        if feats.ndim != 2 or feats.shape[1] != self.gmm.dim:
            raise ValueError(f"expected (T, {self.gmm.dim}) features, got {feats.shape}")
        return self.gmm.pdf_loglikes(feats)

    def features(self, cut, cmvn: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's input features of one cut (see :class:`FeaturePipeline`)."""
        return self.pipeline.for_cut(cut, cmvn, self.speaker_transforms)

    def cut_loglikes(self, cut, cmvn: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`pdf_loglikes` of one cut's features."""
        return self.pdf_loglikes(self.features(cut, cmvn))

    # ------------------------------------------------------------------ I/O
    def save(self, exp_dir: Pathlike, name: str = "final") -> None:
        """Write ``<name>.mdl`` (and the tree and pipeline) into ``exp_dir``."""
        exp_dir = Path(exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        self.save_model(exp_dir / f"{name}.mdl")
        tree_path = exp_dir / TREE_FILE
        with atomic_output(tree_path) as tmp:
            tmp.write_bytes(kf.BINARY_HEADER + kf.context_dependency_to_bytes(self.tree))
        self.pipeline.save(exp_dir / PIPELINE_FILE)

    def save_model(self, path: Pathlike) -> None:
        """Write only the transition model + GMMs (Kaldi binary), e.g. ``final.alimdl``."""
        kf.write_model(path, self.tm, self.gmm.dim, self.gmm.to_kaldi_params())

    @classmethod
    def load(cls, exp_dir: Pathlike, model: str = MODEL_FILE) -> "GmmSystem":
        """Load a system from an experiment directory (ours or Kaldi's, binary files)."""
        exp_dir = Path(exp_dir)
        for f in (model, TREE_FILE):
            if not (exp_dir / f).is_file():
                raise DataError(str(exp_dir / f), "missing; train the system first")
        tree = kf.read_tree(exp_dir / TREE_FILE)
        tm, dim, pdfs = kf.read_model(exp_dir / model, tree)
        gmm = GmmSet.from_kaldi_params(pdfs)
        return cls(tm, tree, gmm, FeaturePipeline.load(exp_dir / PIPELINE_FILE))

    def summary(self) -> dict:
        return {
            "num_pdfs": self.num_pdfs,
            "num_gauss": self.gmm.num_gauss,
            "num_transition_ids": int(self.tm.num_transition_ids),
            "feature_dim": self.gmm.dim,
        }


def append_log(exp_dir: Pathlike, record: dict, name: str = "train_log.jsonl") -> None:
    """Append one JSON line to the experiment's training log."""
    path = Path(exp_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_log(exp_dir: Pathlike, name: str = "train_log.jsonl") -> list[dict]:
    path = Path(exp_dir) / name
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_cmvn_npz(path: Pathlike) -> dict[str, np.ndarray]:
    """Per-speaker CMVN stats saved by :func:`save_cmvn_npz`."""
    with np.load(path) as z:
        return {str(k): s for k, s in zip(z["speakers"], z["stats"])}


def save_cmvn_npz(path: Pathlike, cmvn: Mapping[str, np.ndarray]) -> None:
    speakers = sorted(cmvn)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, speakers=np.array(speakers, dtype=str), stats=np.stack([cmvn[s] for s in speakers]))


def optional_cmvn(path: Optional[Pathlike]) -> Optional[dict[str, np.ndarray]]:
    if path is None or not Path(path).is_file():
        return None
    return load_cmvn_npz(path)
