"""asr_hf: hybrid DNN-HMM speech recognition trained with Hessian-free optimizers.

Import order matters for the Kaldi bindings: ``kaldi_hmm_gmm`` must be imported
before ``kaldifst`` (importing them the other way round can deadlock).  Modules
that need either should import :mod:`asr_hf.utils.kaldi` which does it right.
"""

__version__ = "0.1.0"
