"""Import alignments and features from an existing Kaldi system.

Users with a trained Kaldi GMM system skip the GMM stages: their
``ali-to-pdf`` output (or raw transition-id alignments plus the Kaldi
``final.mdl``/``tree``) and their features (``feats.scp``/``.ark``) become
feature cuts carrying ``pdf_ali`` in the same layout :mod:`asr_hf.gmm.targets`
writes, so the DNN stages cannot tell the difference.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from asr_hf.gmm.targets import attach_pdf_alignments
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike

log = logging.getLogger(__name__)


def read_int_vectors(spec: Pathlike) -> Iterator[tuple[str, np.ndarray]]:
    """(key, int vector) from a Kaldi ark (``.ark``, ``.ark.gz``/``.gz``) or scp file."""
    from asr_hf.utils.kio import kaldi_io

    path = Path(spec)
    if not path.is_file():
        raise DataError(str(path), "no such alignment file")
    name = path.name
    if name.endswith(".scp"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split(None, 1)
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{path}:{lineno}", "expected 'key rxfilename'")
            yield parts[0], np.asarray(kaldi_io.read_vec_int(parts[1].strip()), dtype=np.int64)
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for key, vec in kaldi_io.read_vec_int_ark(f):
            yield key, np.asarray(vec, dtype=np.int64)


def import_kaldi_alignments(
    ali: Pathlike | list[Pathlike],
    feats: Pathlike,
    out_dir: Pathlike,
    split: str,
    data_dir: Optional[Pathlike] = None,
    num_pdfs: Optional[int] = None,
    kaldi_exp: Optional[Pathlike] = None,
    feats_dir: Optional[Pathlike] = None,
    frame_shift: float = 0.01,
):
    """Kaldi alignments + features -> ``out_dir/cuts_<split>.jsonl.gz`` with ``pdf_ali``.

    Args:
        ali: ark/scp file(s) of pdf ids (``ali-to-pdf`` output); with
            ``kaldi_exp`` they are transition-id alignments (``ali.*.gz``).
        feats: Kaldi ``feats.scp`` or ``.ark`` (imported with lilcom storage).
        out_dir: alignment directory to write (e.g. ``exp/kaldi_tri3/ali``).
        split: split name.
        data_dir: Kaldi data dir (``text``, ``utt2spk``) for supervisions.
        num_pdfs: number of pdfs; read from ``kaldi_exp`` or taken as max id + 1.
        kaldi_exp: Kaldi experiment dir with binary ``final.mdl`` and ``tree``.
        feats_dir: where imported features go (default ``out_dir/feats``).

    Utterances whose alignment is missing or has a different length than the
    features are skipped and listed in ``failed_<split>.txt``.
    """
    from asr_hf.features.kaldi_ark import import_features_ark

    out_dir = Path(out_dir)
    paths = ali if isinstance(ali, list) else [ali]
    tid2pdf = None
    if kaldi_exp is not None:
        from asr_hf.gmm.model import GmmSystem

        system = GmmSystem.load(kaldi_exp)
        tid2pdf = system.info.pdf
        if num_pdfs is not None and num_pdfs != system.num_pdfs:
            raise DataError(str(kaldi_exp), f"model has {system.num_pdfs} pdfs, num_pdfs={num_pdfs}")
        num_pdfs = system.num_pdfs
    alis: dict[str, np.ndarray] = {}
    for p in paths:
        for key, vec in read_int_vectors(p):
            if tid2pdf is not None:
                if vec.size and (vec.min() < 1 or vec.max() >= len(tid2pdf)):
                    raise DataError(key, f"transition-ids outside the model's range in {p}")
                vec = tid2pdf[vec]
            alis[key] = vec.astype(np.int32)
    if not alis:
        raise DataError(", ".join(map(str, paths)), "no alignments found")
    top = max(int(v.max()) for v in alis.values() if v.size)
    if num_pdfs is None:
        num_pdfs = top + 1
        log.warning("num_pdfs not given: using max pdf id + 1 = %d", num_pdfs)
    elif top >= num_pdfs:
        raise DataError(str(paths[0]), f"pdf id {top} >= num_pdfs {num_pdfs}")
    cuts = import_features_ark(feats, feats_dir or out_dir / "feats", split, data_dir=data_dir, frame_shift=frame_shift)
    failed: list[tuple[str, str]] = []
    good: dict[str, np.ndarray] = {}
    for cut in cuts:
        a = alis.get(cut.id)
        if a is None:
            failed.append((cut.id, "no alignment"))
        elif len(a) != cut.num_frames:
            failed.append((cut.id, f"alignment has {len(a)} frames, features {cut.num_frames}"))
        else:
            good[cut.id] = a
    if not good:
        raise DataError(str(feats), "no utterance has both features and a matching alignment")
    return attach_pdf_alignments(
        list(cuts), good, out_dir, split, num_pdfs, failed=failed,
        extra_info={"imported_from": [str(p) for p in paths], "kaldi_exp": str(kaldi_exp) if kaldi_exp else None},
    )  # fmt: skip
