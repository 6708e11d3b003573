"""GMM-HMM bootstrap: topologies, monophone and tied-triphone training (deltas,
LDA+MLLT, SAT with fMLLR), decision trees, forced alignment and DNN targets, on top
of kaldi-hmm-gmm.

Main entry points::

    from asr_hf.gmm import train_mono, train_tri, align, GmmSystem
    train_mono("data/lang", "data/mfcc/cuts_train.jsonl.gz", "exp/mono")
    train_tri("data/lang", "data/mfcc/cuts_train.jsonl.gz", "exp/mono", "exp/tri1")
    train_lda_mllt("data/lang", "data/mfcc/cuts_train.jsonl.gz", "exp/tri1", "exp/tri2")
    train_sat("data/lang", "data/mfcc/cuts_train.jsonl.gz", "exp/tri2", "exp/tri3")
    align("exp/tri1", "data/lang", "data/mfcc/cuts_dev.jsonl.gz", "dev")
    system = GmmSystem.load("exp/tri1")            # tm, tree, GMMs, front end
    loglikes = system.pdf_loglikes(system.features(cut, cmvn))   # (T, num_pdfs)
"""

from asr_hf.gmm.aligner import align
from asr_hf.gmm.align import AlignOptions
from asr_hf.gmm.feats import FeaturePipeline, add_deltas, compute_cmvn_stats
from asr_hf.gmm.kaldi_import import import_kaldi_alignments
from asr_hf.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt
from asr_hf.gmm.model import GmmSystem
from asr_hf.gmm.mono import MonoConfig, train_mono
from asr_hf.gmm.sat import SatConfig, train_sat
from asr_hf.gmm.targets import read_pdf_counts
from asr_hf.gmm.tree import TreeConfig, build_tree
from asr_hf.gmm.tri import TriConfig, train_tri

__all__ = [
    "AlignOptions",
    "FeaturePipeline",
    "GmmSystem",
    "LdaMlltConfig",
    "MonoConfig",
    "SatConfig",
    "TreeConfig",
    "TriConfig",
    "add_deltas",
    "align",
    "build_tree",
    "compute_cmvn_stats",
    "import_kaldi_alignments",
    "read_pdf_counts",
    "train_lda_mllt",
    "train_mono",
    "train_sat",
    "train_tri",
]
