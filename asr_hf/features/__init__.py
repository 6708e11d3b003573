"""Kaldi-compatible features (fbank, MFCC), CMVN and ark/scp interop.

Names are imported lazily so that ``asr-hf`` starts without loading torch.
"""

import importlib

_EXPORTS = {
    "apply_cmvn": "asr_hf.features.cmvn",
    "compute_cmvn_stats": "asr_hf.features.cmvn",
    "read_cmvn": "asr_hf.features.cmvn",
    "speaker_of": "asr_hf.features.cmvn",
    "write_cmvn": "asr_hf.features.cmvn",
    "compute_features": "asr_hf.features.extract",
    "kaldi_num_frames": "asr_hf.features.extract",
    "make_extractor": "asr_hf.features.extract",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'asr_hf.features' has no attribute {name!r}")
