"""Import the Kaldi bindings in the only safe order.

``kaldi_hmm_gmm`` 1.1.4 is built against kaldifst 1.7.x and importing
``kaldifst`` first can deadlock, so always ``from asr_hf.utils.kaldi import khg, kfst``.
"""

import kaldi_hmm_gmm as khg  # noqa: I001  (must come first)
import kaldifst as kfst

__all__ = ["khg", "kfst"]
