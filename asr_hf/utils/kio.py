"""``kaldi_io`` without its import-time banner.

kaldi-io prints a warning when ``KALDI_ROOT`` does not name an existing
directory (it only uses it to find Kaldi binaries for piped rspecifiers).
Import it as ``from asr_hf.utils.kio import kaldi_io``.
"""

import os

if not os.path.isdir(os.environ.get("KALDI_ROOT", "")):
    os.environ["KALDI_ROOT"] = os.path.dirname(os.__file__)

import kaldi_io  # noqa: E402

__all__ = ["kaldi_io"]
