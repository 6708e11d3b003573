"""Kaldi-compatible features (fbank, MFCC), CMVN and ark/scp interop."""

from asr_hf.features.cmvn import apply_cmvn, compute_cmvn_stats, read_cmvn, write_cmvn
from asr_hf.features.extract import compute_features, kaldi_num_frames, make_extractor

__all__ = [
    "apply_cmvn", "compute_cmvn_stats", "compute_features", "kaldi_num_frames", "make_extractor",
    "read_cmvn", "write_cmvn",
]  # fmt: skip
