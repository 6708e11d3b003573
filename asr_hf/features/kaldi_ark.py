"""Kaldi ark/scp export and import of features (kaldi-io).

Export lets Kaldi tools read asr_hf features; import brings features computed
by Kaldi (e.g. fMLLR or pitch-appended) into lhotse cuts with lilcom storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from lhotse import CutSet, LilcomChunkyWriter, MonoCut, SupervisionSegment
from lhotse.features import Features

from asr_hf.data.paths import cuts_file, feature_archive_path
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output


def export_features_ark(cuts: CutSet, ark: Pathlike, scp: Pathlike) -> int:
    """Write every cut's features as a float32 matrix keyed by cut id; returns count."""
    from asr_hf.utils.kio import kaldi_io

    ark = Path(ark)
    n = 0
    with atomic_output(ark) as tmp_ark, atomic_output(scp) as tmp_scp:
        with open(tmp_ark, "wb") as f, open(tmp_scp, "w") as s:
            for cut in sorted(cuts, key=lambda c: c.id):
                key = cut.id
                if not key or " " in key:
                    raise DataError(repr(key), "cut id is not a valid Kaldi key")
                f.write(f"{key} ".encode())
                off = f.tell()
                kaldi_io.write_mat(f, np.asarray(cut.load_features(), dtype=np.float32))
                s.write(f"{key} {ark}:{off}\n")
                n += 1
    return n


def _read_kv(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            k, _, v = line.strip().partition(" ")
            if k:
                out[k] = v.strip()
    return out


def import_features_ark(
    feats: Pathlike,
    out_dir: Pathlike,
    name: str,
    data_dir: Optional[Pathlike] = None,
    frame_shift: float = 0.01,
    sampling_rate: int = 16000,
) -> CutSet:
    """Read Kaldi features (``feats.scp`` or ``.ark``) into feature-only cuts.

    Args:
        feats: Kaldi feature scp or ark.
        out_dir: where ``feats_<name>.lca`` and ``cuts_<name>.jsonl.gz`` go.
        name: split name.
        data_dir: optional Kaldi data dir whose ``text``/``utt2spk`` become supervisions.
        frame_shift: seconds per frame.
        sampling_rate: of the audio the features came from (metadata only).
    """
    from asr_hf.utils.kio import kaldi_io

    out_dir = Path(out_dir).resolve()  # manifests store absolute feature paths
    out_dir.mkdir(parents=True, exist_ok=True)
    text = _read_kv(Path(data_dir) / "text") if data_dir else {}
    spk = _read_kv(Path(data_dir) / "utt2spk") if data_dir else {}
    path = str(feats)
    reader = kaldi_io.read_mat_scp if path.endswith(".scp") else kaldi_io.read_mat_ark
    cuts = []
    storage = feature_archive_path(out_dir, name)
    with atomic_output(storage) as tmp_storage:
        with LilcomChunkyWriter(tmp_storage) as writer:
            for key, mat in reader(path):
                mat = np.array(mat, dtype=np.float32)  # a writeable copy (lilcom needs one)
                if mat.ndim != 2 or mat.shape[0] == 0:
                    raise DataError(key, f"feature matrix has shape {mat.shape} in {feats}")
                if data_dir is not None and key not in text:
                    raise DataError(key, f"no transcript in {Path(data_dir) / 'text'}")
                dur = round(mat.shape[0] * frame_shift, 6)
                storage_key = writer.write(key, mat)
                f = Features(
                    type="kaldi-import", num_frames=mat.shape[0], num_features=mat.shape[1],
                    frame_shift=frame_shift, sampling_rate=sampling_rate, start=0.0, duration=dur,
                    storage_type=writer.name, storage_path=str(storage), storage_key=storage_key,
                )  # fmt: skip
                sups = []
                if key in text:
                    sups = [SupervisionSegment(id=key, recording_id=key, start=0.0, duration=dur,
                                               text=text[key], speaker=spk.get(key))]
                cuts.append(MonoCut(id=key, start=0.0, duration=dur, channel=0, features=f, supervisions=sups))
    if not cuts:
        raise DataError(str(feats), "no feature matrices found")
    cs = CutSet.from_cuts(cuts)
    with atomic_output(cuts_file(out_dir, name)) as tmp:
        cs.to_file(tmp)
    return cs
