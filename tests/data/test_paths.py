"""The data-path contract: names the stages agree on, and split names read back."""

from pathlib import Path

import pytest

from asr_hf.data import paths


def test_layout_names():
    assert paths.corpus_cuts_file("c", "train") == Path("c/manifests/cuts_train.jsonl.gz")
    assert paths.recordings_path("m", "dev") == Path("m/recordings_dev.jsonl.gz")
    assert paths.supervisions_path("m", "dev") == Path("m/supervisions_dev.jsonl.gz")
    assert paths.cuts_file("data/mfcc", "test") == Path("data/mfcc/cuts_test.jsonl.gz")
    assert paths.feature_storage_dir("f", "dev") == Path("f/feats_dev")
    assert paths.feature_config_path("f", "dev") == Path("f/feature_config_dev.json")
    assert paths.cmvn_ark_path("f", "dev") == Path("f/cmvn_dev.ark")
    assert paths.cmvn_scp_path("f", "dev") == Path("f/cmvn_dev.scp")
    ali = paths.system_ali_dir("exp/tri1")
    assert ali == Path("exp/tri1/ali")
    assert paths.tid_ali_path(ali, "train") == ali / "ali_train.npz"
    assert paths.pdf_counts_path(ali, "train") == ali / "pdf_counts_train.txt"
    assert paths.ali_info_path(ali) == ali / "info.json"


def test_recording_splits(tmp_path):
    for split in ("train", "dev"):
        paths.recordings_path(tmp_path, split).touch()
    (tmp_path / "recordings_x.txt").touch()
    assert paths.recording_splits(tmp_path) == ["dev", "train"]


@pytest.mark.parametrize("split", ["train", "dev", "sp0.9", "train_sp"])
def test_split_of_inverts_cuts_file(split):
    assert paths.split_of(paths.cuts_file("/data/mfcc", split)) == split
    assert paths.split_of(paths.corpus_cuts_file("corpus", split)) == split


def test_split_of_other_names():
    assert paths.split_of("dev.jsonl") == "dev"
    assert paths.split_of("x/cuts_dev") == "dev"
