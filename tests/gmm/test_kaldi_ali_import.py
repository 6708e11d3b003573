"""Importing Kaldi pdf alignments and features (ark/scp) into pdf_ali cuts."""

import gzip

import numpy as np
import pytest

from asr_hf.gmm.kaldi_import import import_kaldi_alignments, read_int_vectors
from asr_hf.gmm.targets import read_pdf_counts
from asr_hf.utils.errors import DataError
from asr_hf.utils.kio import kaldi_io


def _write_kaldi(tmp_path, lengths, num_pdfs=7, seed=0):
    rng = np.random.default_rng(seed)
    feats, alis = {}, {}
    with open(tmp_path / "feats.ark", "wb") as f:
        for i, n in enumerate(lengths):
            key = f"utt{i}"
            feats[key] = rng.normal(size=(n, 5)).astype(np.float32)
            kaldi_io.write_mat(f, feats[key], key=key)
    with open(tmp_path / "ali.ark", "wb") as f:
        for i, n in enumerate(lengths):
            key = f"utt{i}"
            alis[key] = rng.integers(0, num_pdfs, size=n).astype(np.int32)
            kaldi_io.write_vec_int(f, alis[key], key=key)
    (tmp_path / "ali.ark.gz").write_bytes(gzip.compress((tmp_path / "ali.ark").read_bytes()))
    data = tmp_path / "data"
    data.mkdir()
    (data / "text").write_text("".join(f"utt{i} hello world\n" for i in range(len(lengths))))
    (data / "utt2spk").write_text("".join(f"utt{i} spk{i % 2}\n" for i in range(len(lengths))))
    return feats, alis, data


def test_import_round_trip(tmp_path):
    feats, alis, data = _write_kaldi(tmp_path, [12, 30, 7])
    out = tmp_path / "ali"
    cuts = import_kaldi_alignments(tmp_path / "ali.ark.gz", tmp_path / "feats.ark", out, "train",
                                   data_dir=data, num_pdfs=7)  # fmt: skip
    assert len(cuts) == 3
    from lhotse import CutSet

    back = CutSet.from_file(out / "cuts_train.jsonl.gz")
    total = np.zeros(7)
    for cut in back:
        ali = cut.load_pdf_ali()
        np.testing.assert_array_equal(ali, alis[cut.id])
        assert ali.dtype == np.int32 and len(ali) == cut.num_frames == len(feats[cut.id])
        assert cut.supervisions[0].speaker in ("spk0", "spk1")
        total += np.bincount(ali, minlength=7)
    np.testing.assert_array_equal(read_pdf_counts(out / "pdf_counts_train.txt"), total)


def test_import_skips_mismatched_lengths(tmp_path):
    feats, alis, data = _write_kaldi(tmp_path, [10, 20])
    # rewrite the alignment of utt1 with a wrong length
    with open(tmp_path / "bad.ark", "wb") as f:
        kaldi_io.write_vec_int(f, alis["utt0"], key="utt0")
        kaldi_io.write_vec_int(f, alis["utt1"][:-3], key="utt1")
    cuts = import_kaldi_alignments(tmp_path / "bad.ark", tmp_path / "feats.ark", tmp_path / "out", "dev", num_pdfs=7)
    assert [c.id for c in cuts] == ["utt0"]
    assert "utt1" in (tmp_path / "out" / "failed_dev.txt").read_text()
    with pytest.raises(DataError):
        import_kaldi_alignments(tmp_path / "bad.ark", tmp_path / "feats.ark", tmp_path / "out2", "dev", num_pdfs=3)


def test_read_scp(tmp_path):
    _, alis, _ = _write_kaldi(tmp_path, [4, 5])
    with open(tmp_path / "a.ark", "wb") as f:
        offsets = {}
        for k, v in alis.items():
            f.write(f"{k} ".encode())
            offsets[k] = f.tell()
            kaldi_io.write_vec_int(f, v)
    (tmp_path / "a.scp").write_text("".join(f"{k} {tmp_path / 'a.ark'}:{o}\n" for k, o in offsets.items()))
    got = dict(read_int_vectors(tmp_path / "a.scp"))
    for k in alis:
        np.testing.assert_array_equal(got[k], alis[k])
