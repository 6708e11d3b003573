"""Prepared (LDC-style) manifests -> per-utterance cuts -> features, end to end on a fixture."""

import numpy as np
from fixtures_ldc import SWBD_EXPECTED, make_eval2000, make_swbd

from asr_hf.data.cuts import cuts_from_manifests
from asr_hf.data.ldc import prepare_swbd
from asr_hf.data.cuts import load_cuts
from asr_hf.features.extract import compute_features


def test_swbd_manifests_to_feature_cuts(tmp_path):
    audio, trans, _ = make_swbd(tmp_path)
    e_audio, e_trans = make_eval2000(tmp_path)
    prepare_swbd(audio, trans, tmp_path / "manifests", eval2000_audio_dir=e_audio,
                 eval2000_transcripts_dir=e_trans, dev_utterances=1)
    corpus = cuts_from_manifests(tmp_path / "manifests", tmp_path / "corpus")
    train = load_cuts(corpus, "train")
    expected = {k: v for k, v in SWBD_EXPECTED.items() if not k.startswith("sw02001")}
    assert {c.id: c.supervisions[0].text for c in train} == expected
    for c in train:
        assert len(c.supervisions) == 1 and c.supervisions[0].start == 0
    lm_text = (corpus / "lm_text.txt").read_text().splitlines()
    assert sorted(lm_text) == sorted(expected.values())
    # each side of a stereo conversation is its own mono channel; features extract at 8 kHz
    feats = compute_features(train, "mfcc", tmp_path / "mfcc", "train", jobs=1, sampling_rate=8000, progress=False)
    for c in feats:
        f = c.load_features()
        assert f.shape[1] == 13 and np.isfinite(f).all()
        assert abs(f.shape[0] - round(c.supervisions[0].duration * 100)) <= 2
