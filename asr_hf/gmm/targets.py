"""Frame-level training targets for the DNN: pdf alignments on lhotse cuts.

Layout of an alignment directory (``exp/<sys>/ali``)::

    cuts_<split>.jsonl.gz     feature cuts with the custom field ``pdf_ali``
                              (TemporalArray of int32 pdf ids, one per frame)
    pdf_ali_<split>/          the arrays (lhotse ``NumpyFilesWriter``: lossless)
    ali_<split>.npz           transition-id alignments (see ``AliArchive``)
    pdf_counts_<split>.txt    frames per pdf, Kaldi vector text ``[ c0 c1 ... ]``
                              (the DNN's priors come from the training split's)
    failed_<split>.txt        utterances that could not be aligned, with reasons
    info.json                 num_pdfs, model and per-split summaries
    .<split>.done             completion markers

Load back with ``cut.load_pdf_ali()``; :func:`read_pdf_counts` reads the counts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from asr_hf.data.paths import ali_info_path, cuts_file, failed_path, pdf_ali_dir, pdf_counts_path, tid_ali_path
from asr_hf.gmm.align import AliArchive
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, mark_done

log = logging.getLogger(__name__)


def write_pdf_counts(path: Pathlike, counts: np.ndarray) -> None:
    """Kaldi vector text (as ``analyze-counts`` writes): ``[ c0 c1 ... ]``."""
    with atomic_output(path) as tmp:
        tmp.write_text("[ " + " ".join(str(int(c)) for c in counts) + " ]\n")


def read_pdf_counts(path: Pathlike) -> np.ndarray:
    """Counts written by :func:`write_pdf_counts` (or Kaldi's ``analyze-counts``)."""
    text = Path(path).read_text().replace("[", " ").replace("]", " ")
    return np.array([float(t) for t in text.split()], dtype=np.float64)


def attach_pdf_alignments(
    cuts: Sequence,
    pdf_alis: Mapping[str, np.ndarray],
    out_dir: Pathlike,
    split: str,
    num_pdfs: int,
    tid_alis: Optional[Mapping[str, np.ndarray]] = None,
    failed: Sequence[tuple[str, str]] = (),
    extra_info: Optional[dict] = None,
):
    """Write ``out_dir/cuts_<split>.jsonl.gz`` with ``pdf_ali`` on every aligned cut.

    Args:
        cuts: feature cuts in the order to keep.
        pdf_alis: cut id -> (T,) pdf ids; must match each cut's number of frames.
        out_dir: the alignment directory.
        split: split name used in file names.
        num_pdfs: number of pdfs (length of the counts vector).
        tid_alis: optional transition-id alignments to store alongside.
        failed: (cut id, reason) of cuts that could not be aligned.
        extra_info: merged into ``info.json``.

    Returns:
        the CutSet written.
    """
    from lhotse import CutSet
    from lhotse.array import Array, TemporalArray
    from lhotse.features.io import NumpyFilesWriter

    out_dir = Path(out_dir).resolve()  # manifests store absolute array paths
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(num_pdfs, dtype=np.int64)
    kept = []
    failed = list(failed)
    storage = pdf_ali_dir(out_dir, split)
    with atomic_output(storage, is_dir=True) as tmp_dir:
        writer = NumpyFilesWriter(str(tmp_dir))
        for cut in cuts:
            ali = pdf_alis.get(cut.id)
            if ali is None:
                if not any(c == cut.id for c, _ in failed):
                    failed.append((cut.id, "no alignment"))
                continue
            ali = np.asarray(ali, dtype=np.int32)
            if len(ali) != cut.num_frames:
                raise DataError(cut.id, f"alignment has {len(ali)} frames, features {cut.num_frames}")
            if ali.size and (ali.min() < 0 or ali.max() >= num_pdfs):
                raise DataError(cut.id, f"pdf ids outside [0, {num_pdfs})")
            arr = writer.store_array(cut.id, ali, frame_shift=cut.frame_shift, temporal_dim=0)
            cut = cut.with_custom("pdf_ali", arr) if hasattr(cut, "with_custom") else _set_custom(cut, arr)
            counts += np.bincount(ali, minlength=num_pdfs)
            kept.append(cut)
        # Point the arrays at the final directory name.  The array starts where the cut
        # starts in its recording: lhotse slices a temporal array at (cut.start - array.start),
        # so a segment of a long recording (LDC corpora) must not be stored as starting at 0.
        fixed = []
        for cut in kept:
            a = cut.custom["pdf_ali"]
            arr = TemporalArray(
                array=Array(storage_type=a.array.storage_type, storage_path=str(storage),
                            storage_key=a.array.storage_key, shape=a.array.shape),
                temporal_dim=a.temporal_dim, frame_shift=a.frame_shift, start=cut.start,
            )  # fmt: skip
            cut.custom["pdf_ali"] = arr
            fixed.append(cut)
    if not fixed:
        raise DataError(split, "no utterance could be aligned")
    cs = CutSet.from_cuts(fixed)
    with atomic_output(cuts_file(out_dir, split)) as tmp:
        cs.to_file(tmp)
    if tid_alis is not None:
        AliArchive.write(tid_ali_path(out_dir, split), {c.id: tid_alis[c.id] for c in fixed})
    write_pdf_counts(pdf_counts_path(out_dir, split), counts)
    with atomic_output(failed_path(out_dir, split)) as tmp:
        tmp.write_text("".join(f"{c}\t{r}\n" for c, r in failed))
    info_path = ali_info_path(out_dir)
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["num_pdfs"] = int(num_pdfs)
    info.setdefault("splits", {})[split] = {
        "utterances": len(fixed),
        "failed": len(failed),
        "frames": int(counts.sum()),
        "pdfs_seen": int(np.count_nonzero(counts)),
    }
    if extra_info:
        info.update(extra_info)
    with atomic_output(info_path) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
    mark_done(out_dir, split)
    if failed:
        log.warning("%s: %d utterances not aligned (see %s)", split, len(failed), failed_path(out_dir, split))
    log.info("%s: wrote %d aligned cuts, %d frames, %d/%d pdfs seen", split, len(fixed), int(counts.sum()),
             int(np.count_nonzero(counts)), num_pdfs)
    return cs


def _set_custom(cut, arr):
    if cut.custom is None:
        cut.custom = {}
    cut.custom["pdf_ali"] = arr
    return cut
